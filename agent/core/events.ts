import type { ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import type { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { AssignmentRef } from "./assignment-table.js";

/**
 * The inputs and outputs of the agent core (agent-core.ts): everything that happens to an agent
 * is one AgentInput, and everything it decides to do is one AgentEffect. The runtime (gRPC,
 * timers, executors) and the simulator are two drivers of the same core.
 */

/** One execution of a Dispatch, as far as the core's rules need it. */
export interface DispatchedRun {
  executionId: string;
  job: string;
  /** The assignment it must run under; undefined when the dispatch names none (or no shard). */
  assignment: AssignmentRef | undefined;
  /** A run of spec.onFireComplete (fire_outcome set): it belongs to no shard, only to the lease. */
  hook: boolean;
  /** Its fire instant, wall-clock Unix ms: it starts then (see the hold-run effect). */
  fireTimeUnixMs: number;
  /** How long it may go on once started if the lease lapses (ExecutionContext.disconnect_grace_ms); 0: abort at the lapse. */
  graceMs: number;
  /** Why this agent has no executor for it, if it has none: reported FAILED. */
  unrunnable?: string;
}

/** A controller message, decoded; each carries the controller's term. */
export type ControllerMessage =
  | { kind: "welcome"; term: bigint; sessionId: string; heartbeatIntervalMs: number; leaseTtlMs: number; dispatchAheadMs: number }
  | { kind: "heartbeat-ack"; term: bigint; seq: bigint; leaseTtlMs: number }
  | { kind: "assignments"; term: bigint; snapshot: boolean; add: AssignmentRef[]; revoke: AssignmentRef[] }
  /** `atUnixMs`: the wall clock when it arrived, stamped on the reports of refused runs. */
  | { kind: "dispatch"; term: bigint; runs: DispatchedRun[]; atUnixMs: number }
  | { kind: "cancel"; term: bigint; executionIds: string[]; reason: string }
  | { kind: "redirect"; term: bigint; leaderAddress: string }
  /** A kind this agent does not know (from a newer controller): only its term counts. */
  | { kind: "unknown"; term: bigint };

/** Everything that can happen to an agent. */
export type AgentInput =
  | ControllerMessage
  /** Start connecting (once, when the process is ready to). */
  | { kind: "start" }
  /** A stream was opened: the core answers with the Hello's contents. */
  | { kind: "stream-opened" }
  /** The stream ended, whoever ended it (after a close-stream effect too). */
  | { kind: "stream-closed" }
  /** An executor reported on a run: RUNNING, then one terminal state. */
  | { kind: "run-report"; update: ExecutionUpdate }
  /** A held run's start instant came (see the hold-run effect). */
  | { kind: "start-due"; executionId: string }
  /**
   * A run this agent's previous process left going (a Kubernetes Job), found at start: held again
   * with its shard, and listed in the next Hello.
   */
  | { kind: "restore-run"; executionId: string; job: string; assignment: AssignmentRef }
  /** The end of an event-loop turn after a flush-soon: the turn's reports go out as one message. */
  | { kind: "flush" }
  /** Time passed: nextDeadline() came. */
  | { kind: "tick" }
  /** Leave gracefully. */
  | { kind: "drain"; reason: string }
  /** Stop at once, without a goodbye. */
  | { kind: "stop" };

/** What the agent sends on its stream (the Hello's identity is the driver's to add). */
export type AgentMessage =
  | { kind: "hello"; held: AssignmentRef[]; executions: ExecutionUpdate[] }
  | { kind: "heartbeat"; seq: bigint }
  | { kind: "execution-updates"; updates: ExecutionUpdate[] }
  | { kind: "release"; assignments: AssignmentRef[] }
  | { kind: "goodbye"; reason: string };

/** The states the core stops a run with. */
export type StopState = ExecutionState.CANCELLED | ExecutionState.LOST;

/** How the core ends a stream from its side. */
export interface StreamClose {
  kind: "close-stream";
  code: "unavailable" | "failed-precondition";
  reason: string;
  /** The controller stopped answering (or the lease lapsed): try another replica next. */
  unresponsive: boolean;
  /** The connection itself may be the stuck part: the next stream goes on a new one. */
  newConnection: boolean;
}

/** Everything the core decides to do, in order. */
export type AgentEffect =
  /** Open a stream to this controller, then step stream-opened. */
  | { kind: "open-stream"; address: string }
  | { kind: "send"; message: AgentMessage }
  | StreamClose
  /** A drained agent half-closes its stream; the controller then ends it. */
  | { kind: "half-close" }
  /** A dispatched run is now the agent's: prepare it, and step start-due at its start instant. */
  | { kind: "hold-run"; executionId: string; fireTimeUnixMs: number; maxWaitMs: number }
  | { kind: "start-run"; executionId: string }
  /** Abort a run (or drop it, if it waits); its executor then reports `state`. */
  | { kind: "stop-run"; executionId: string; state: StopState; reason: string }
  /** A report the core made itself (a refused or unrunnable dispatch): it goes out like any. */
  | { kind: "report"; job: string; update: ExecutionUpdate }
  | { kind: "welcomed"; term: bigint; sessionId: string; heartbeatIntervalMs: number; leaseTtlMs: number }
  /** A Redirect names the leader: close the stream; the next one goes there. */
  | { kind: "redirected"; leaderAddress: string }
  | { kind: "fenced"; reason: string }
  | { kind: "unfenced" }
  | { kind: "assignments-changed" }
  /** Reports wait to be sent: step flush at the end of this turn. */
  | { kind: "flush-soon" }
  /** drain finished: the agent stops. */
  | { kind: "drained" }
  | { kind: "log"; level: "debug" | "info" | "warn"; fields: Record<string, unknown>; message: string };
