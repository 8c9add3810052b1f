import type { Execution } from "../../../shared/gen/shardline/v1/types_pb.js";
import { type ExecutionStateName, executionStateName } from "./states.js";

/** How a job's latest fire went, over its shards. */
export interface FireOutcome {
  /** The fire's state as one word: the worst of its shards' (failed before lost, before running...); "none" before any fire. */
  state: ExecutionStateName;
  /** The fire's instant, Unix ms; 0 when none. */
  fireTimeMs: number;
  /** E.g. "3/4 succeeded, 1 failed". */
  text: string;
}

/** Worst first: what an operator must see about a fire before the rest. */
const SEVERITY: readonly ExecutionStateName[] = ["failed", "timed_out", "lost", "unknown", "running", "pending", "misfired", "cancelled", "succeeded"];

/**
 * The outcome of the newest fire among `executions` (one job's; a shard's attempts of one fire
 * should be its latest only), summarised.
 */
export function latestFireOutcome(executions: Iterable<Execution>): FireOutcome {
  let newest = 0n;
  const runs: ExecutionStateName[] = [];
  for (const execution of executions) {
    if (execution.fireTimeUnixMs > newest) {
      newest = execution.fireTimeUnixMs;
      runs.length = 0;
    }
    if (execution.fireTimeUnixMs === newest) runs.push(executionStateName(execution.state));
  }
  if (runs.length === 0) return { state: "none", fireTimeMs: 0, text: "no run yet" };
  const counts = new Map<ExecutionStateName, number>();
  for (const state of runs) counts.set(state, (counts.get(state) ?? 0) + 1);
  const ordered = SEVERITY.filter((state) => counts.has(state));
  const state = ordered[0] ?? runs[0]!;
  const parts = [...ordered].reverse().map((name) => (name === "succeeded" ? `${counts.get(name)}/${runs.length} succeeded` : `${counts.get(name)} ${name.replace("_", " ")}`));
  return { state, fireTimeMs: Number(newest), text: parts.join(", ") };
}
