/**
 * Placement: which agent owns which shard, computed from the live agents and the jobs (level-
 * based), and the difference sent as assignments and revokes.
 */
import { type ExecutorSpec, type JobSpec, priorityOf, type StrategyName, unknownExecutor } from "../../shared/manifest/job-spec.js";
import type { AssignmentRef } from "./messages.js";
import { spreadSticky, strategyFor } from "./sharding/index.js";
import type { ShardingInput } from "./sharding/strategy.js";
import type { AgentEntry, ShardEntry, JobEntry } from "./model.js";
import { CoreState, push } from "./core-state.js";
import * as Executions from "./executions.js";
import * as FireComplete from "./fire-complete.js";
import * as DaemonRuns from "./daemon-runs.js";
import * as Rollouts from "./rollouts.js";

/**
 * Level-based: computes the desired owner of every shard from the live agents and the jobs,
 * and acts on the difference. A shard whose owner is alive is revoked and moves once released;
 * one whose owner is lost stays fenced until that owner's lease expires.
 */
export function reconcileSoon(core: CoreState): void {
  core.reconcilePending = true;
}

/** Which agents may hold what changed (one joined, left, was lost, drained...): every job is placed again. */
export function agentsChanged(core: CoreState): void {
  core.agentsEpoch++;
  reconcileSoon(core);
}

/**
 * True when placing the job again could change nothing: it was placed for the same agents and
 * the same spec, and every shard has an owner (a shard released, lost or added has none).
 */
export function placementCurrent(core: CoreState, job: JobEntry): boolean {
  if (job.placedFor?.agentsEpoch !== core.agentsEpoch || job.placedFor.spec !== job.record.spec || job.placedFor.runs !== runsKey(job)) return false;
  for (const shard of job.shards) if (shard.owner === undefined) return false;
  return true;
}

export function reconcileAll(core: CoreState): void {
  if (core.now < core.startupGraceUntil) return;
  const adds = new Map<string, AssignmentRef[]>();
  const revokes = new Map<string, AssignmentRef[]>();
  const assigned: ShardEntry[] = [];
  const load = new Map<string, number>();
  for (const agent of core.agents.values()) load.set(agent.id, agent.shards.size);
  // Higher-priority jobs are placed first, so they get the least loaded agents.
  const order = [...core.jobs.values()].sort(
    (a, b) => priorityOf(b.record.spec) - priorityOf(a.record.spec) || (a.record.name < b.record.name ? -1 : 1),
  );
  // Jobs that run the same way with the same selector share one list of eligible agents.
  const eligibleBy = new Map<string, AgentEntry[]>();
  for (const job of order) {
    if (placementCurrent(core, job)) continue;
    const name = job.record.name;
    const spec = job.record.spec;
    const runs = runsKey(job);
    job.placedFor = { agentsEpoch: core.agentsEpoch, spec, runs };
    const key = `${runs} ${JSON.stringify(spec.placement)}`;
    let candidates = eligibleBy.get(key);
    if (candidates === undefined) {
      const kinds = Rollouts.runsOf(job);
      candidates = [...core.agents.values()].filter((a) => placeable(core, a, spec) && kinds.some((kind) => runsIt(a, kind)));
      eligibleBy.set(key, candidates);
    }
    const mine = new Map<string, number>();
    const previous = new Map<number, string>();
    for (const shard of job.shards) {
      if (shard.owner === undefined) continue;
      previous.set(shard.shard, shard.owner);
      mine.set(shard.owner, (mine.get(shard.owner) ?? 0) + 1);
    }
    const desired = placeShards(core, spec, {
      job: name,
      shardCount: spec.shards,
      agents: candidates.map((a) => ({ id: a.id, capacity: a.capacity, load: (load.get(a.id) ?? 0) - (mine.get(a.id) ?? 0) })),
      previous,
    });
    for (const shard of job.shards) {
      const want = desired.get(shard.shard);
      if (shard.owner === want) continue;
      if (shard.owner === undefined) {
        const agent = core.agents.get(want!)!;
        assign(core, shard, agent);
        push(adds, agent.id, core.refOf(shard));
        load.set(agent.id, (load.get(agent.id) ?? 0) + 1);
        assigned.push(shard);
        continue;
      }
      const owner = core.agents.get(shard.owner);
      // A lost owner's shards, and a replaced process's, are fenced: they move once its lease ends.
      if (owner === undefined || owner.lost || shard.revoking || owner.inherited?.shards.has(shard) === true) continue;
      shard.revoking = true;
      push(revokes, owner.id, core.refOf(shard));
      DaemonRuns.stopDaemonRun(core, job, shard, "the shard is moving to another agent");
      core.emit("shard.revoking", `${name}/${shard.shard} is moving away from ${owner.id}`, {
        job: name,
        shard: shard.shard,
        agent: owner.id,
      });
    }
  }
  for (const id of new Set([...adds.keys(), ...revokes.keys()])) {
    const agent = core.agents.get(id)!;
    core.outbox.send(agent.session, { kind: "assignments", snapshot: false, add: adds.get(id) ?? [], revoke: revokes.get(id) ?? [] });
  }
  for (const shard of assigned) Executions.dispatchShard(core, shard);
  FireComplete.dispatchFireCompletes(core);
}

/**
 * Runs the job's strategy. A custom one (user code) that throws, or maps a shard to an agent
 * that is not eligible, is not trusted: the job falls back to sticky and an event says why.
 */
export function placeShards(core: CoreState, spec: JobSpec, input: ShardingInput): Map<number, string> {
  const spreadBy = spec.placement.spreadBy ?? [];
  if (spreadBy.length > 0) {
    // The manifest allows spreadBy only with sticky; placeable() let in only agents with every label.
    const topologyOf = (id: string): string[] => {
      const labels = core.agents.get(id)?.labels;
      return labels === undefined ? [] : spreadBy.map((key) => labels[key] ?? "");
    };
    return spreadSticky(topologyOf, spreadBy.length)(input);
  }
  if (!spec.strategy.startsWith("custom:")) return strategyFor(spec.strategy as StrategyName)(input);
  const name = spec.strategy.slice("custom:".length);
  const custom = core.config.customStrategies?.get(name);
  let problem: string;
  if (custom === undefined) {
    problem = `strategy ${spec.strategy} is not loaded on this controller`;
  } else {
    try {
      const result = custom(input);
      problem = invalidPlacement(result, input) ?? "";
      if (problem === "") return result;
    } catch (error) {
      problem = `strategy ${spec.strategy} threw: ${error instanceof Error ? error.message : String(error)}`;
    }
  }
  core.emit("job.strategy-failed", `${input.job}: ${problem}; placing its shards with sticky instead`, { job: input.job });
  return strategyFor("sticky")(input);
}

/**
 * What the job's shards may run, as a key: while a rollout is in progress an agent that runs
 * either revision may hold them (each fire runs the revision its owner can: rollouts.ts).
 */
function runsKey(job: JobEntry): string {
  return Rollouts.runsOf(job)
    .map((runs) => (runs.kind === "handler" ? `handler:${runs.handler}` : runs.kind))
    .join("|");
}

/** True when the agent may take the job's shards. */
export function eligible(core: CoreState, agent: AgentEntry, spec: JobSpec): boolean {
  return placeable(core, agent, spec) && runsIt(agent, spec.runs);
}

/** True when the agent declares what the job runs: its handler, or the executor of its kind. */
export function runsIt(agent: AgentEntry, runs: ExecutorSpec): boolean {
  switch (runs.kind) {
    case "handler":
      return agent.handlers.has(runs.handler);
    case "script":
    case "http":
    case "kubernetes":
      return agent.executors.has(runs.kind);
    default:
      return unknownExecutor(runs);
  }
}

/** True when the agent takes new work and matches the job's placement, whatever it runs. */
export function placeable(core: CoreState, agent: AgentEntry, spec: JobSpec): boolean {
  if (!agent.connected || agent.lost || agent.leaving || agent.cordoned) return false;
  for (const [key, value] of Object.entries(spec.placement.selector)) {
    if (agent.labels[key] !== value) return false;
  }
  // An agent whose place is unknown cannot be counted in a domain: it takes none of the shards.
  for (const key of spec.placement.spreadBy ?? []) {
    if (agent.labels[key] === undefined) return false;
  }
  return true;
}

export function assign(core: CoreState, shard: ShardEntry, agent: AgentEntry): void {
  shard.daemonEndedAt = undefined;
  shard.owner = agent.id;
  shard.term = core.term;
  shard.generation = ++core.generation;
  shard.revoking = false;
  agent.shards.add(shard);
  core.emit("shard.assigned", `${shard.job}/${shard.shard} assigned to ${agent.id}`, {
    job: shard.job,
    shard: shard.shard,
    agent: agent.id,
  });
}

export function unassign(core: CoreState, shard: ShardEntry): void {
  if (shard.retired === true) {
    core.jobs.get(shard.job)?.retired.delete(shard.shard);
    const deleted = core.deletedJobShards.get(shard.job);
    if (deleted?.get(shard.shard) === shard) {
      deleted.delete(shard.shard);
      if (deleted.size === 0) core.deletedJobShards.delete(shard.job);
    }
  }
  if (shard.owner !== undefined) core.agents.get(shard.owner)?.shards.delete(shard);
  shard.owner = undefined;
  shard.revoking = false;
  shard.claim = undefined;
}

/** Why a strategy's answer cannot be used, or undefined when every shard has an eligible agent. */
export function invalidPlacement(result: unknown, input: ShardingInput): string | undefined {
  if (!(result instanceof Map)) return "the strategy did not return a Map of shard to agent id";
  if (input.agents.length === 0) return undefined;
  const ids = new Set(input.agents.map((a) => a.id));
  for (let shard = 0; shard < input.shardCount; shard++) {
    const agent: unknown = result.get(shard);
    if (typeof agent !== "string" || !ids.has(agent)) return `the strategy put shard ${shard} on ${JSON.stringify(agent)}, not an eligible agent`;
  }
  return undefined;
}
