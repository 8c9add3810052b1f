/**
 * The disconnect grace: ownership moves when a lease lapses, but a started run is not thrown away
 * with it. An agent whose lease lapsed starts nothing new, and lets each started run go on for
 * its grace (ExecutionContext.disconnect_grace_ms) while it tries to reach a controller again.
 * The controller meanwhile counts the run as `unknown`: the fire is not run elsewhere and, under
 * `overlap: forbid`, the shard stays busy for its next owner. The agent's report settles it (it
 * reconnects, to this controller or to the next one after a restart or a leader change); without
 * one, the grace and a margin end it as lost, and failover runs it again.
 */
import type { JobSpec } from "../../shared/manifest/job-spec.js";
import type { ExecutionRecord } from "./store-port.js";
import type { AgentEntry } from "./model.js";
import { CoreState } from "./core-state.js";
import { at } from "./waiting-reasons.js";
import * as Executions from "./executions.js";

/** A run whose agent is out of reach: until when it may still be going there, and on which process. */
export interface UnknownRun {
  /** The agent's lease ended then, in the controller's view. */
  since: number;
  /** After this the agent has surely aborted it: the lease, the grace and a margin are over. */
  until: number;
  /** The Hello.instance_id of the process that ran it; "" when unknown (restored from the store). */
  instance: string;
  /** Why it went unknown (the lease that ended), for the record if it ends lost. */
  reason: string;
  graceMs: number;
}

/** How long the agent keeps a run of `spec` going after its lease lapsed, in ms. */
export function graceOf(core: CoreState, spec: JobSpec | undefined, daemon: boolean): number {
  // fast failover re-runs at the stream's end, and a daemon run ends when its shard moves:
  // neither waits for an agent that may come back.
  if (spec === undefined || spec.failover === "fast" || daemon) return 0;
  return spec.disconnectGraceSeconds === undefined ? core.config.disconnectGraceMs : spec.disconnectGraceSeconds * 1000;
}

/**
 * The grace `execution` is dispatched with, recorded on it: what its agent is told is what the
 * controller waits for after a lapse, whatever the job's spec says by then.
 */
export function atDispatch(core: CoreState, execution: ExecutionRecord, spec: JobSpec | undefined): number {
  const graceMs = graceOf(core, spec, execution.cause === "daemon");
  execution.disconnectGraceMs = graceMs;
  return graceMs;
}

/**
 * The fencing token of an assignment: term * 2^32 + generation, which grows whenever a shard
 * changes owner or a new controller term starts. Below 2^63 while the term stays below 2^31.
 */
export function fencingToken(term: number, generation: number): bigint {
  return (BigInt(term) << 32n) + BigInt(generation);
}

/**
 * `agent`'s lease ended at `leaseEnd` (in the controller's view) with `execution` dispatched to
 * it: it goes on as unknown for its grace, or is lost now when its job has none. A run dispatched
 * ahead and not yet reported running counts as started: the agent may have started it at its
 * instant with the RUNNING report lost on the way (an agent's clock that runs ahead starts it up
 * to the dispatch-ahead early, so no instant proves it had not).
 */
export function presumeGoing(core: CoreState, execution: ExecutionRecord, agent: AgentEntry, leaseEnd: number, reason: string, instance = agent.instance): void {
  // The grace the agent was told; a record from before it was kept gets the job's current one.
  const graceMs = execution.disconnectGraceMs ?? graceOf(core, core.jobs.get(execution.job)?.record.spec, execution.cause === "daemon");
  if (graceMs === 0) {
    Executions.loseExecution(core, execution, reason);
    return;
  }
  const until = leaseEnd + graceMs + core.config.leaseMarginMs;
  const previous = core.unknownRuns.get(execution.id);
  core.unknownRuns.set(execution.id, { since: previous?.since ?? leaseEnd, until: Math.max(until, previous?.until ?? 0), instance, reason, graceMs });
  core.timers.push(until, { kind: "unknown-run", executionId: execution.id });
  if (execution.state !== "unknown") {
    execution.state = "unknown";
    core.outbox.saveExecution(execution);
  }
  core.emit(
    "execution.unknown",
    `${execution.id}: ${reason}; it may still be running on ${agent.id} (disconnect grace ${graceMs / 1000} s), so it is not run elsewhere before ${at(until)}`,
    { job: execution.job, shard: execution.shard, agent: agent.id, executionId: execution.id, state: "unknown" },
  );
}

/** The controller could not run from `began` for `stalledMs`: every grace not over by then lasts that much longer. */
export function extendGraces(core: CoreState, began: number, stalledMs: number): void {
  for (const [id, unknown] of core.unknownRuns) {
    if (unknown.until <= began) continue;
    unknown.until += stalledMs;
    core.timers.push(unknown.until, { kind: "unknown-run", executionId: id });
  }
}

/** The grace of an unknown run is over without a word from its agent: it is lost (and re-run as failover says). */
export function graceOver(core: CoreState, executionId: string): void {
  const unknown = core.unknownRuns.get(executionId);
  if (unknown === undefined || unknown.until > core.now) return;
  core.unknownRuns.delete(executionId);
  const execution = core.open.get(executionId);
  if (execution === undefined || execution.state !== "unknown") return;
  const agent = core.agents.get(execution.agent);
  Executions.loseExecution(core, execution, `${unknown.reason}, and no word came from it within the disconnect grace of ${unknown.graceMs / 1000} s`);
  // Kept only for this run: an agent with nothing left and no stream is gone.
  if (agent !== undefined && !agent.connected && agent.shards.size === 0 && agent.executions.size === 0) {
    core.agents.delete(agent.id);
    core.emit("agent.left", `agent ${agent.id} left`, { agent: agent.id });
  }
}

/**
 * The agent reported the run again (running, or how it ended): it is no longer unknown.
 * Returns true when it was.
 */
export function reported(core: CoreState, executionId: string): boolean {
  return core.unknownRuns.delete(executionId);
}

/**
 * True when a reconnecting process that does not list `executionId` may still not be the one
 * running it: the run went unknown under another process of the same agent id, which may be
 * alive behind a partition and running it until its grace ends.
 */
export function heldByAnotherProcess(core: CoreState, executionId: string, instance: string): boolean {
  const unknown = core.unknownRuns.get(executionId);
  return unknown !== undefined && unknown.instance !== "" && instance !== "" && unknown.instance !== instance;
}

/** Why an unknown run waits, for the admin API. */
export function unknownReason(core: CoreState, execution: ExecutionRecord): string {
  const unknown = core.unknownRuns.get(execution.id);
  // Restored unknown by a restarted controller: its agent's lease, then its grace, start over.
  if (unknown === undefined) return `agent ${execution.agent} has not reconnected since the controller restarted; the run may still be going there`;
  return (
    `agent ${execution.agent} has been out of reach since ${at(unknown.since)}; the run may still be going there, ` +
    `until ${at(unknown.until)} at the latest (its disconnect grace), when it is recorded lost and runs again as spec.failover says`
  );
}
