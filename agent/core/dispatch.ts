import { create } from "@bufbuild/protobuf";
import { ExecutionUpdateSchema, type ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { comparePairs, shardKey, type AssignmentRef, type AssignmentTable } from "./assignment-table.js";
import type { AgentEffect, DispatchedRun } from "./events.js";
import { NO_SHARD, type RunBook } from "./run-book.js";

/** What the dispatch rules need of the agent core: its books, its state, and its steps. */
export interface DispatchPort {
  readonly table: AssignmentTable;
  readonly runs: RunBook;
  /**
   * Draining, and the controller may not have read the Goodbye yet (nor the grace ended): a
   * Dispatch it sent before reading it still runs.
   */
  readonly takesCrossedDispatch: boolean;
  /** Stopped, or draining and past taking even such a Dispatch: nothing new is taken on. */
  readonly shuttingDown: boolean;
  readonly stopped: boolean;
  readonly fenced: boolean;
  /** The longest the controller dispatches ahead of a fire instant (Welcome.dispatch_ahead_ms). */
  readonly dispatchAheadMs: number;
  /** Fences now if the lease lapsed at `now` and its deadline was not stepped yet. */
  fenceIfLapsed(now: number): void;
  emit(effect: AgentEffect): void;
  log(level: "debug" | "info" | "warn", fields: Record<string, unknown>, message: string): void;
  /** Takes a report as if an executor had made it. */
  report(update: ExecutionUpdate): void;
}

/**
 * Takes the runs of a Dispatch (docs/protocol.md, step 6, "Dispatch: executions to run"): holds
 * each one this agent may run until its fire instant, and reports the others at once, LOST when
 * refused (the controller runs it elsewhere) and FAILED when no executor here can run it.
 */
export function takeDispatch(port: DispatchPort, runs: DispatchedRun[], atUnixMs: number, now: number): void {
  for (const run of runs) {
    if (port.runs.has(run.executionId)) {
      port.log("debug", { executionId: run.executionId }, "ignored a dispatch of an execution already running");
      continue;
    }
    const refusal = refusalOf(port, run, now);
    if (refusal !== undefined) {
      port.log("warn", { executionId: run.executionId, reason: refusal }, "refused a dispatch");
      made(port, run.job, run.executionId, ExecutionState.LOST, refusal, atUnixMs);
      continue;
    }
    if (run.unrunnable !== undefined) {
      made(port, run.job, run.executionId, ExecutionState.FAILED, run.unrunnable, atUnixMs);
      continue;
    }
    // A completion hook run belongs to no shard: no revoke waits for it.
    port.runs.hold(run.executionId, run.job, run.hook ? NO_SHARD : run.assignment!.shard, run.graceMs);
    // Dispatched ahead of its fire instant: started at it, by the agent's clock, if the lease
    // still holds then.
    port.emit({ kind: "hold-run", executionId: run.executionId, fireTimeUnixMs: run.fireTimeUnixMs, maxWaitMs: port.dispatchAheadMs });
  }
}

/** A held run's instant came: it starts only under a valid lease (else the fence stops it). */
export function startDue(port: DispatchPort, executionId: string, now: number): void {
  const run = port.runs.get(executionId);
  if (run === undefined || run.started || port.stopped) return;
  port.fenceIfLapsed(now);
  if (port.fenced) return;
  run.started = true;
  port.emit({ kind: "start-run", executionId });
}

/** A run the previous process left going is held again, with its shard, as started. */
export function restoreRun(port: DispatchPort, executionId: string, job: string, assignment: AssignmentRef): void {
  if (port.runs.has(executionId)) return;
  port.table.restore(assignment);
  port.runs.hold(executionId, job, assignment.shard).started = true;
  port.emit({ kind: "start-run", executionId });
}

/** A report of the core's own making, on a run it never held. */
function made(port: DispatchPort, job: string, executionId: string, state: ExecutionState, error: string, atUnixMs: number): void {
  const update = create(ExecutionUpdateSchema, { executionId, state, finishedAtUnixMs: BigInt(Math.trunc(atUnixMs)), error });
  port.emit({ kind: "report", job, update });
  port.report(update);
}

/** Why a dispatched execution may not run here, or undefined when it may. */
function refusalOf(port: DispatchPort, run: DispatchedRun, now: number): string | undefined {
  if (port.shuttingDown) return "the agent is shutting down";
  // The lease lapsed and its deadline has not been stepped yet: fence now, which closes the
  // stream, rather than refuse dispatch after dispatch on a stream the controller still trusts.
  port.fenceIfLapsed(now);
  if (port.fenced) return "the agent holds no valid lease";
  // A completion hook run is fenced by the lease alone, checked above.
  if (run.hook) return undefined;
  if (run.assignment === undefined) return "the dispatch names no assignment";
  const wanted = run.assignment;
  if (port.table.holds(wanted)) return undefined;
  const held = port.table.get(wanted.job, wanted.shard);
  const named = `${shardKey(wanted.job, wanted.shard)} at (${wanted.term}, ${wanted.generation})`;
  if (held === undefined) return `the agent does not hold ${named}`;
  // Sent before the controller read the Goodbye, for a shard only the drain itself revoked: it
  // runs, as it would have had it come before the Goodbye. (A revoke from the controller comes
  // after every dispatch it sent for the shard.)
  if (port.takesCrossedDispatch && comparePairs(held, wanted) === 0) return undefined;
  return held.revoking
    ? `the agent is releasing ${named}`
    : `the agent holds ${shardKey(held.job, held.shard)} at (${held.term}, ${held.generation}), not ${named}`;
}
