import { stateEnumOf, stateNameOf, TERMINAL_STATES } from "./execution-state.js";
import { ExecutionState, type Execution } from "./gen/shardline/v1/types_pb.js";

/**
 * An execution as JSON: what `shardline get executions -o json` prints and what a failure
 * webhook receives. A contract scripts rely on: fields may be added, never renamed or removed.
 * Times are ISO-8601 strings or null; an empty string from the API is null.
 */

/** Execution states as the JSON and the CLI name them, in the proto's order ("unspecified" for UNSPECIFIED). */
export const EXECUTION_STATE_NAMES: Readonly<Record<ExecutionState, string>> = Object.fromEntries(
  Object.values(ExecutionState)
    .filter((value): value is ExecutionState => typeof value === "number")
    .map((value) => [value, stateNameOf(value) ?? "unspecified"]),
) as Record<ExecutionState, string>;

/** The proto values of the states an execution ends in (shared/execution-state.ts). */
export const TERMINAL_EXECUTION_STATES: ReadonlySet<ExecutionState> = new Set([...TERMINAL_STATES].map(stateEnumOf));

/** The name of an execution state; a value newer than this code shows as its number. */
export function executionStateName(state: ExecutionState): string {
  return stateNameOf(state) ?? (state === ExecutionState.UNSPECIFIED ? "unspecified" : `state-${Number(state)}`);
}

/**
 * An instant from the API (Unix milliseconds, 0 meaning "none") as ISO-8601, or null. Every time
 * in JSON and YAML output goes through here.
 */
export function isoTime(unixMs: bigint | number): string | null {
  const ms = Number(unixMs);
  if (ms === 0 || !Number.isFinite(ms)) return null;
  return new Date(ms).toISOString();
}

/** One execution as JSON. */
export interface ExecutionView {
  id: string;
  job: string;
  /** null for a run of spec.onFireComplete, which belongs to the whole fire. */
  shard: number | null;
  fireTime: string | null;
  agent: string | null;
  attempt: number;
  state: string;
  startedAt: string | null;
  finishedAt: string | null;
  error: string | null;
  result: string | null;
  cause: string | null;
  /** Place in line while it waits for its shard or a free slot (1 is next); null otherwise. */
  queuePosition: number | null;
  /** True for a run of the job's spec.onFireComplete hook. */
  fireComplete: boolean;
  /** Why a pending execution is not running yet; null when it is not waiting. */
  waitingReason: string | null;
  /** The job revision it runs (the same for every attempt of its fire); null when recorded without one. */
  revision: number | null;
  /** The W3C trace id of the trace it runs under; null when the controller traces nothing. */
  traceId: string | null;
}

/** Converts an API execution into its JSON view. */
export function executionView(execution: Execution): ExecutionView {
  return {
    id: execution.id,
    job: execution.job,
    shard: execution.fireComplete ? null : execution.shard,
    fireTime: isoTime(execution.fireTimeUnixMs),
    agent: emptyToNull(execution.agent),
    attempt: execution.attempt,
    state: executionStateName(execution.state),
    startedAt: isoTime(execution.startedAtUnixMs),
    finishedAt: isoTime(execution.finishedAtUnixMs),
    error: emptyToNull(execution.error),
    result: emptyToNull(execution.result),
    cause: emptyToNull(execution.cause),
    queuePosition: execution.queuePosition === 0 ? null : execution.queuePosition,
    fireComplete: execution.fireComplete,
    waitingReason: emptyToNull(execution.waitingReason),
    revision: execution.revision === 0n ? null : Number(execution.revision),
    traceId: emptyToNull(execution.traceId),
  };
}

function emptyToNull(value: string): string | null {
  return value === "" ? null : value;
}
