/** Read views for the admin API and metrics. */
import { priorityOf, type JobSpec } from "../../shared/manifest/job-spec.js";
import { specEquals } from "../../shared/manifest/index.js";
import { nextFireAfter } from "../../shared/schedule.js";
import type { ExecutionRecord, JobRecord } from "./store-port.js";
import { whyNoAgentCanRun } from "./waiting-reasons.js";
import type { AgentView, AssignmentView, JobView, UnassignedShardView } from "./model.js";
import { CoreState, notFound } from "./core-state.js";
import * as Waiting from "./waiting.js";

export function listAgents(core: CoreState): AgentView[] {
  return [...core.agents.values()]
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((agent) => ({
      id: agent.id,
      labels: { ...agent.labels },
      capacity: agent.capacity,
      handlers: [...agent.handlers].sort(),
      version: agent.version,
      state: agent.lost ? "lost" : agent.leaving || agent.cordoned ? "draining" : "ready",
      cordoned: agent.cordoned,
      shards: [...agent.shards]
        .map((s) => ({ job: s.job, shard: s.shard }))
        .sort((a, b) => (a.job < b.job ? -1 : a.job > b.job ? 1 : a.shard - b.shard)),
      leaseExpiresAt: agent.leaseExpiry,
      connectedAt: agent.connectedAt,
      maxConcurrent: agent.maxConcurrent,
      running: agent.executions.size,
      instanceId: agent.instance,
      refusedHellos: agent.refusedHellos,
      ...(agent.lastRefusal === undefined ? {} : { lastRefusal: agent.lastRefusal }),
    }));
}

/**
 * Each agent the core knows (a lost one until its lease expires) with whether it has a stream
 * and how many shards it owns: for metrics, without listAgents' copies and sorting.
 */
export function agentLoads(core: CoreState): { id: string; connected: boolean; shards: number }[] {
  const loads: { id: string; connected: boolean; shards: number }[] = [];
  for (const agent of core.agents.values()) loads.push({ id: agent.id, connected: agent.connected, shards: agent.shards.size });
  return loads;
}

export function listAssignments(core: CoreState, job?: string): AssignmentView[] {
  const out: AssignmentView[] = [];
  const names = [...core.jobs.keys()].sort();
  for (const name of names) {
    if (job !== undefined && job !== "" && name !== job) continue;
    for (const shard of core.jobs.get(name)!.shards) {
      if (shard.owner === undefined) continue;
      out.push({
        job: name,
        shard: shard.shard,
        agent: shard.owner,
        term: shard.term,
        generation: shard.generation,
        revoking: shard.revoking,
      });
    }
  }
  return out;
}

/** How many jobs there are, and whether one is named `name`: cheap, unlike listJobs. */
export function jobCount(core: CoreState, name?: string): { total: number; exists: boolean } {
  return { total: core.jobs.size, exists: name !== undefined && core.jobs.has(name) };
}

export function getJob(core: CoreState, name: string): JobView {
  const job = core.jobs.get(name);
  if (job === undefined) throw notFound("job", name);
  const upcoming: number[] = [];
  const spec = job.record.spec;
  for (let next = job.nextFire; next !== undefined && upcoming.length < 5; next = nextFireAfter(spec.schedule!, spec.timeZone, next)) {
    upcoming.push(next);
  }
  const waitingReason = Waiting.jobWaitingReason(core, job);
  return { record: job.record, nextFire: job.nextFire, lastFire: job.cursor, upcoming, ...(waitingReason === undefined ? {} : { waitingReason }) };
}

/** The enabled shards of `job` (every job when absent or "") that no agent owns, each with why. */
export function listUnassigned(core: CoreState, job?: string): UnassignedShardView[] {
  const out: UnassignedShardView[] = [];
  for (const name of [...core.jobs.keys()].sort()) {
    if (job !== undefined && job !== "" && name !== job) continue;
    const entry = core.jobs.get(name)!;
    const unowned = Waiting.unownedShards(core, entry);
    if (unowned.length === 0) continue;
    const reason = Waiting.whyUnowned(core, entry);
    for (const shard of unowned) out.push({ job: name, shard: shard.shard, reason });
  }
  return out;
}

/**
 * What an apply should warn of: the job was stored, but no connected agent can run it now, and
 * which requirement none meets. Empty when some agent can.
 */
export function applyWarnings(core: CoreState, name: string): string[] {
  const job = core.requireJob(name);
  const reason = whyNoAgentCanRun(job.record.spec, core.agents.values());
  return reason === undefined ? [] : [`no connected agent can run it now: ${reason}; its fires wait (spec.misfire: ${job.record.spec.misfire})`];
}

/**
 * What applying `spec` would do, changing nothing (`apply --dry-run=server`): whether it changes
 * the job, the job as it would be (its spec, manifest and revision; its fire times as they are
 * now, since a changed schedule is read only when applied), and the warnings the apply would give.
 */
export function previewApply(core: CoreState, name: string, spec: JobSpec, manifest: string): { view: JobView; changed: boolean; warnings: string[] } {
  const existing = core.jobs.get(name);
  const reason = whyNoAgentCanRun(spec, core.agents.values());
  const warnings = reason === undefined ? [] : [`no connected agent can run it now: ${reason}; its fires wait (spec.misfire: ${spec.misfire})`];
  if (existing !== undefined && specEquals(existing.record.spec, spec)) return { view: getJob(core, name), changed: false, warnings };
  const record: JobRecord = {
    name,
    manifest,
    spec,
    paused: existing?.record.paused ?? false,
    revision: (existing?.record.revision ?? 0) + 1,
    disabledShards: (existing?.record.disabledShards ?? []).filter((s) => s < spec.shards),
  };
  const view = existing === undefined ? { record, upcoming: [] } : { ...getJob(core, name), record };
  return { view, changed: true, warnings };
}

export function listJobs(core: CoreState): JobView[] {
  return [...core.jobs.keys()].sort().map((name) => getJob(core, name));
}

/**
 * The place in line of every waiting execution (1 is next): highest job priority first, then
 * first in, first out.
 */
export function queuePositions(core: CoreState): Map<string, number> {
  const waiting: { id: string; priority: number; seq: number }[] = [];
  for (const [id, seq] of core.queuedAt) {
    const execution = core.open.get(id);
    const spec = execution === undefined ? undefined : core.jobs.get(execution.job)?.record.spec;
    const priority = spec === undefined ? 0 : priorityOf(spec);
    waiting.push({ id, priority, seq });
  }
  waiting.sort((a, b) => b.priority - a.priority || a.seq - b.seq);
  return new Map(waiting.map((w, i) => [w.id, i + 1]));
}

/** The agent a stream speaks for, once the core accepted its Hello; undefined otherwise. */
export function agentOfSession(core: CoreState, session: string): string | undefined {
  return core.sessions.get(session);
}

/** An execution not yet finished, if the core holds it. */
export function openExecution(core: CoreState, id: string): ExecutionRecord | undefined {
  const execution = core.open.get(id);
  return execution === undefined ? undefined : { ...execution };
}
