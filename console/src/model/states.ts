import { AgentState, ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";

/**
 * An execution state as the console names it (and as the CLI and `data-state` do): lower case,
 * underscores kept, "none" for no execution at all.
 */
export type ExecutionStateName =
  | "pending"
  | "running"
  | "succeeded"
  | "failed"
  | "timed_out"
  | "cancelled"
  | "lost"
  | "misfired"
  | "unknown"
  | "none";

const EXECUTION_STATE_NAMES: Readonly<Record<ExecutionState, ExecutionStateName>> = {
  [ExecutionState.UNSPECIFIED]: "none",
  [ExecutionState.PENDING]: "pending",
  [ExecutionState.RUNNING]: "running",
  [ExecutionState.SUCCEEDED]: "succeeded",
  [ExecutionState.FAILED]: "failed",
  [ExecutionState.TIMED_OUT]: "timed_out",
  [ExecutionState.CANCELLED]: "cancelled",
  [ExecutionState.LOST]: "lost",
  [ExecutionState.MISFIRED]: "misfired",
  [ExecutionState.UNKNOWN]: "unknown",
};

/** The states a filter offers, in the order an operator reads them. */
export const FILTERABLE_STATES: readonly ExecutionStateName[] = ["pending", "running", "succeeded", "failed", "timed_out", "cancelled", "lost", "misfired", "unknown"];

/** `state`'s name; "none" for no execution (undefined) or UNSPECIFIED. */
export function executionStateName(state: ExecutionState | undefined): ExecutionStateName {
  // A state from a newer controller than this console: shown as unknown rather than as nothing.
  return state === undefined ? "none" : (EXECUTION_STATE_NAMES[state] ?? "unknown");
}

/** The enum value of a state's name; undefined for "none" or a name that is not a state. */
export function executionStateOf(name: string): ExecutionState | undefined {
  const found = Object.entries(EXECUTION_STATE_NAMES).find(([, candidate]) => candidate === name && name !== "none");
  return found === undefined ? undefined : (Number(found[0]) as ExecutionState);
}

/** True for PENDING, RUNNING and UNKNOWN: the states a run can still leave (and be cancelled in). */
export function isOpen(state: ExecutionState): boolean {
  return state === ExecutionState.PENDING || state === ExecutionState.RUNNING || state === ExecutionState.UNKNOWN;
}

/**
 * The colour family a state is drawn in, one CSS class each (`tone-ok` ...): succeeded green,
 * failed and timed out red, running blue, pending and unknown amber (waiting, or not known
 * yet), lost purple (it could not finish where it ran), cancelled and misfired slate (stopped on
 * purpose, or never run), none grey.
 */
export type Tone = "ok" | "bad" | "busy" | "wait" | "lost" | "off" | "none";

const TONES: Readonly<Record<ExecutionStateName, Tone>> = {
  succeeded: "ok",
  failed: "bad",
  timed_out: "bad",
  running: "busy",
  pending: "wait",
  unknown: "wait",
  lost: "lost",
  cancelled: "off",
  misfired: "off",
  none: "none",
};

/** The colour family of a state. */
export function toneOf(name: ExecutionStateName): Tone {
  return TONES[name];
}

/** What the map's legend lists, tone by tone. */
export const LEGEND: readonly { tone: Tone; label: string }[] = [
  { tone: "ok", label: "succeeded" },
  { tone: "bad", label: "failed, timed out" },
  { tone: "busy", label: "running" },
  { tone: "wait", label: "pending, unknown" },
  { tone: "lost", label: "lost" },
  { tone: "off", label: "cancelled, misfired" },
  { tone: "none", label: "no run yet" },
];

/** An agent state as the console names it: connected (ready), draining, lost. */
export function agentStateName(state: AgentState): "connected" | "draining" | "lost" | "unknown" {
  switch (state) {
    case AgentState.READY:
      return "connected";
    case AgentState.DRAINING:
      return "draining";
    case AgentState.LOST:
      return "lost";
    default:
      return "unknown";
  }
}
