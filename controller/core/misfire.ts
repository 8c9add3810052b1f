import type { MisfirePolicy } from "../../shared/manifest/job-spec.js";
import type { ExecutionCause } from "./store-port.js";

/** The part of a job's spec that misfire rules read. */
export interface MisfireSpec {
  misfire: MisfirePolicy;
  maxCatchUp: number;
}

/**
 * Why an execution misfired, for counting: its shard could not start it on time (`shard`), no
 * controller was running at its instant (`down`), or the controller was a whole schedule period
 * or more behind (`behind`).
 */
export const MISFIRE_KINDS = ["shard", "down", "behind"] as const;
export type MisfireKind = (typeof MISFIRE_KINDS)[number];

export type Admission = { admit: true } | { admit: false; reason: string };

/**
 * Decides whether a fire that cannot start at once (its shard is busy with an earlier run under
 * `overlap: forbid`, or has no owner able to start it) waits for the shard, or is recorded as
 * misfired. `waiting` counts the scheduled fires of this shard already waiting. Manual triggers,
 * failover re-runs and retries always wait: a person, a lost run or a failed one asked for them.
 */
export function admitLateFire(spec: MisfireSpec, cause: ExecutionCause, waiting: number): Admission {
  if (cause === "trigger" || cause === "failover" || cause === "retry") return { admit: true };
  switch (spec.misfire) {
    case "skip":
      return { admit: false, reason: "the shard could not start it on time and spec.misfire is skip" };
    case "fire-once":
      return waiting >= 1
        ? { admit: false, reason: "an earlier missed fire of this shard is already waiting (spec.misfire: fire-once)" }
        : { admit: true };
    case "catch-up":
      return waiting >= spec.maxCatchUp
        ? { admit: false, reason: `spec.maxCatchUp (${spec.maxCatchUp}) missed fires of this shard are already waiting` }
        : { admit: true };
  }
}

/**
 * Splits the fires a job missed while no controller ran (ascending instants) into those to run
 * now and those to record as misfired: `fire-once` runs the latest, `skip` none, `catch-up` the
 * latest `maxCatchUp`.
 */
export function planMissedFires(spec: MisfireSpec, missed: readonly number[]): { run: number[]; misfire: number[] } {
  const keep = spec.misfire === "skip" ? 0 : spec.misfire === "fire-once" ? 1 : spec.maxCatchUp;
  const cut = Math.max(0, missed.length - keep);
  return { run: missed.slice(cut), misfire: missed.slice(0, cut) };
}

/** The longest a retry waits, however many attempts came before. */
export const MAX_RETRY_DELAY_MS = 24 * 3600 * 1000;

/**
 * How long to wait before retrying a failed execution: the job's backoff, doubled for each
 * attempt already made (attempt 1 failed: one backoff; attempt 2 failed: two; then four...).
 */
export function retryDelayMs(backoffSeconds: number, failedAttempt: number): number {
  return Math.min(MAX_RETRY_DELAY_MS, backoffSeconds * 1000 * 2 ** Math.max(0, failedAttempt - 1));
}
