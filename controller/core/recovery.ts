/**
 * Recovery: state restored from the store's snapshot after a restart or a leader change, and what
 * reconnecting agents hand back (runs and claimed shards).
 */
import type { ExecutionRecord, StoreSnapshot } from "./store-port.js";
import { FIRE_COMPLETE_SHARD } from "./store-port.js";
import { claimFromTheFuture } from "./hello-rules.js";
import type { AssignmentRef, ExecutionUpdate } from "./messages.js";
import type { AgentEntry } from "./model.js";
import { CoreState } from "./core-state.js";
import { fireKey, outcomeOf } from "./fire-complete.js";
import * as Agents from "./agents.js";
import * as DisconnectGrace from "./disconnect-grace.js";
import * as Fires from "./fires.js";
import * as JobAdmin from "./job-admin.js";
import * as Executions from "./executions.js";
import * as FireComplete from "./fire-complete.js";
import * as Placement from "./placement.js";
import * as Revisions from "./revisions.js";
import * as Rollouts from "./rollouts.js";

/**
 * Re-attaches the runs a reconnecting agent still holds. Returns its reports of runs that
 * finished meanwhile, and the runs it no longer holds (lost), for the caller to apply once the
 * agent has its assignments again: a finish frees the shard for its next execution, and a loss
 * queues its failover run, either of which is dispatched at once and must not reach the agent
 * before the snapshot (it would refuse it as a shard it does not hold).
 */
export function reattachExecutions(
  core: CoreState,
  agent: AgentEntry,
  reports: readonly ExecutionUpdate[],
): { finished: ExecutionUpdate[]; missing: ExecutionRecord[] } {
  const reported = new Set<string>();
  const finished: ExecutionUpdate[] = [];
  const stale: string[] = [];
  const cancelAgain: string[] = [];
  for (const report of reports) {
    const execution = core.open.get(report.executionId);
    if (execution === undefined || execution.agent !== agent.id) {
      // Still running on the agent, yet no longer its own here (recorded lost and run again, or
      // ended): work that outlived the agent's process, such as a Kubernetes Job. Stop it.
      if (report.state === "running" || report.state === "pending") stale.push(report.executionId);
      continue;
    }
    reported.add(execution.id);
    // A cancel asked while the agent was out of reach is asked again.
    if (core.cancelling.has(execution.id) && (report.state === "running" || report.state === "pending")) cancelAgain.push(execution.id);
    if (report.state === "pending") {
      // Dispatched ahead and never started: no longer unknown.
      if (DisconnectGrace.reported(core, execution.id)) {
        execution.state = "pending";
        core.outbox.saveExecution(execution);
      }
      continue;
    }
    if (report.state === "running") Executions.applyReport(core, agent, report);
    else finished.push(report);
  }
  const instance = agent.instance;
  const missing: ExecutionRecord[] = [];
  for (const id of [...agent.executions]) {
    if (reported.has(id)) {
      agent.inherited?.runs.delete(id);
      continue;
    }
    // A previous process's run stays its own until its fence ends, and its grace after that:
    // that process may still be running it behind a partition.
    if (agent.inherited?.runs.has(id) || DisconnectGrace.heldByAnotherProcess(core, id, instance)) continue;
    const execution = core.open.get(id);
    if (execution !== undefined) missing.push(execution);
  }
  if (stale.length > 0) {
    core.outbox.send(agent.session, { kind: "cancel", executionIds: stale, reason: "the controller no longer counts this execution as running on this agent" });
  }
  if (cancelAgain.length > 0) {
    core.outbox.send(agent.session, { kind: "cancel", executionIds: cancelAgain, reason: "cancelled while the agent was out of reach" });
  }
  return { finished, missing };
}

/**
 * Takes back shards a reconnecting agent says it holds, when nobody else owns them. After a
 * controller restart, conflicting claims are settled by the higher (term, generation).
 */
export function adoptHeld(core: CoreState, agent: AgentEntry, held: readonly AssignmentRef[]): void {
  const inGrace = core.now < core.startupGraceUntil;
  const future: AssignmentRef[] = [];
  for (const ref of held) {
    const shard = core.jobs.get(ref.job)?.shards[ref.shard];
    if (shard === undefined || shard.owner === agent.id) continue;
    if (claimFromTheFuture(ref, core.term, core.generation)) {
      future.push(ref);
      continue;
    }
    if (shard.owner === undefined) {
      Placement.assign(core, shard, agent);
      if (inGrace) shard.claim = [ref.term, ref.generation];
      continue;
    }
    const claim = shard.claim;
    if (!inGrace || claim === undefined) continue;
    if (ref.term > claim[0] || (ref.term === claim[0] && ref.generation > claim[1])) {
      const other = core.agents.get(shard.owner);
      Placement.unassign(core, shard);
      Placement.assign(core, shard, agent);
      shard.claim = [ref.term, ref.generation];
      if (other !== undefined && other.connected) Agents.sendSnapshot(core, other);
    }
  }
  if (future.length > 0) {
    const shown = future.slice(0, 5).map((r) => `${r.job}/${r.shard} @ (${r.term}, ${r.generation})`);
    core.emit(
      "shard.claim-ignored",
      `ignored ${future.length} claim${future.length === 1 ? "" : "s"} of ${agent.id} newer than any assignment made so far ` +
        `(term ${core.term}, generation ${core.generation}): ${shown.join(", ")}${future.length > shown.length ? ", ..." : ""}`,
      { agent: agent.id },
    );
  }
}

/** Puts an execution that was open when the previous controller stopped back in its place. */
export function restoreExecution(core: CoreState, execution: ExecutionRecord): void {
  const job = core.jobs.get(execution.job);
  const shard = job?.shards[execution.shard];
  if (job === undefined || (shard === undefined && execution.shard !== FIRE_COMPLETE_SHARD)) {
    Executions.closeExecution(core, execution, "cancelled", { error: "its job no longer exists" });
    return;
  }
  if (execution.agent === "" && shard === undefined) {
    FireComplete.queueFireComplete(core, execution);
    return;
  }
  core.open.set(execution.id, execution);
  if (execution.agent === "" && shard !== undefined) {
    shard.queue.push(execution);
    core.queuedAt.set(execution.id, ++core.queueSeq);
    if (execution.notBefore !== undefined) core.timers.push(execution.notBefore, { kind: "retry", job: job.record.name, shard: shard.shard });
    return;
  }
  // It may still be running on an agent that has not reconnected yet, or have ended there with
  // the report not yet made: hold it on a stand-in for that agent, lost until it says hello.
  // The agent gets one lease to come back before its runs are taken for lost and run again,
  // even when its shards may move sooner (leases bounded by leadership): a live agent reports.
  let agent = core.agents.get(execution.agent);
  if (agent === undefined) {
    agent = Agents.addAgentEntry(core, execution.agent, { lost: true, leaseExpiry: Math.max(core.startupGraceUntil, Agents.leaseFromNow(core)) });
    Agents.armLeaseTimer(core, agent);
  }
  agent.executions.add(execution.id);
  shard?.running.add(execution.id);
}

/**
 * Rebuilds how far each fire of a job with spec.onFireComplete is from its completion run:
 * shards with an open execution are pending, the others ended as their latest attempt did.
 */
export function restoreFireProgress(core: CoreState, open: readonly ExecutionRecord[], settled: readonly ExecutionRecord[]): void {
  for (const execution of open) {
    if (execution.shard === FIRE_COMPLETE_SHARD || execution.cause === "daemon") continue;
    if (core.jobs.get(execution.job)?.record.spec.onFireComplete === undefined || !core.open.has(execution.id)) continue;
    const key = fireKey(execution.job, execution.fireTime);
    let progress = core.fires.get(key);
    if (progress === undefined) {
      progress = { pending: new Set(), outcomes: new Map() };
      core.fires.set(key, progress);
    }
    progress.pending.add(execution.shard);
  }
  const byAttempt = [...settled].sort((a, b) => a.attempt - b.attempt);
  for (const execution of byAttempt) {
    const progress = core.fires.get(fireKey(execution.job, execution.fireTime));
    if (progress === undefined || execution.shard === FIRE_COMPLETE_SHARD || progress.pending.has(execution.shard)) continue;
    progress.outcomes.set(execution.shard, outcomeOf(execution));
  }
}

/**
 * Rebuilds the core from the store's snapshot, as a new controller (after a restart or a leader
 * change) starts: its jobs and fire cursors, its open executions (held for agents not back yet),
 * each fire's progress towards its completion hook, and the fires missed while no controller ran.
 */
export function restore(core: CoreState, snapshot: StoreSnapshot): void {
  core.timers.push(core.startupGraceUntil, { kind: "startup-grace" });
  for (const record of snapshot.jobs) {
    const entry = JobAdmin.addJobEntry(core, record);
    entry.cursor = snapshot.cursors.get(record.name);
    if (entry.cursor !== undefined) entry.lastIssuedFire = entry.cursor;
  }
  for (const revision of snapshot.revisions) core.jobs.get(revision.job)?.revisions.set(revision.revision, revision);
  for (const job of core.jobs.values()) {
    // A job stored before revisions were kept gets a record of its current one, for its history.
    if (!job.revisions.has(job.record.revision)) {
      Revisions.add(core, job, Revisions.newRevision(job.record.name, job.record.revision, job.record.spec, job.record.manifest, core.now, ""));
    }
  }
  for (const [name, cursor] of snapshot.cursors) if (!core.jobs.has(name)) core.deletedCursors.set(name, cursor);
  const restored = [...snapshot.openExecutions].sort((a, b) => a.fireTime - b.fireTime || a.attempt - b.attempt);
  for (const execution of restored) restoreExecution(core, execution);
  restoreFireProgress(core, restored, snapshot.settledOfOpenFires);
  for (const job of core.jobs.values()) Fires.catchUpMissedFires(core, job);
  // A rollout goes on at the step it was at: its pause's timer is armed again.
  for (const job of core.jobs.values()) {
    Rollouts.advance(core, job);
    Revisions.forgetUnused(core, job);
  }
}
