import { ExecutionState } from "./gen/shardline/v1/types_pb.js";

/**
 * The states of an execution, named once: as the store, the CLI, the JSON output and the
 * controller core say them; the proto's ExecutionState is the same list as an enum.
 */
export type ExecutionStateName = "pending" | "running" | "succeeded" | "failed" | "timed-out" | "cancelled" | "lost" | "misfired" | "unknown";

/** Each proto value's name, in the proto's order; UNSPECIFIED has none. */
const NAME_OF: Readonly<Record<ExecutionState, ExecutionStateName | undefined>> = {
  [ExecutionState.UNSPECIFIED]: undefined,
  [ExecutionState.PENDING]: "pending",
  [ExecutionState.RUNNING]: "running",
  [ExecutionState.SUCCEEDED]: "succeeded",
  [ExecutionState.FAILED]: "failed",
  [ExecutionState.TIMED_OUT]: "timed-out",
  [ExecutionState.CANCELLED]: "cancelled",
  [ExecutionState.LOST]: "lost",
  [ExecutionState.MISFIRED]: "misfired",
  [ExecutionState.UNKNOWN]: "unknown",
};

const ENUM_OF = new Map<ExecutionStateName, ExecutionState>(
  Object.entries(NAME_OF)
    .filter(([, name]) => name !== undefined)
    .map(([value, name]) => [name!, Number(value) as ExecutionState]),
);

/** The states an execution ends in: nothing changes it after one of these. The others are open. */
export const TERMINAL_STATES: ReadonlySet<ExecutionStateName> = new Set(["succeeded", "failed", "timed-out", "cancelled", "lost", "misfired"]);

/** The name of a proto value; undefined for UNSPECIFIED and for values newer than this code. */
export function stateNameOf(state: ExecutionState): ExecutionStateName | undefined {
  return NAME_OF[state];
}

/** The proto value of a state name. */
export function stateEnumOf(name: ExecutionStateName): ExecutionState {
  return ENUM_OF.get(name)!;
}

/** The states of an open execution: pending, running, and unknown (its agent is out of reach). */
export const OPEN_STATES: readonly ExecutionStateName[] = (Object.values(NAME_OF) as (ExecutionStateName | undefined)[]).filter(
  (name): name is ExecutionStateName => name !== undefined && !TERMINAL_STATES.has(name),
);
