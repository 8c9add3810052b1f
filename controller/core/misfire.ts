import type { MisfirePolicy } from "../../shared/manifest/job-spec.js";
import type { ExecutionCause } from "../store/store.js";

/** The part of a job's spec that misfire rules read. */
export interface MisfireSpec {
  misfire: MisfirePolicy;
  maxCatchUp: number;
}

export type Admission = { admit: true } | { admit: false; reason: string };

/**
 * Decides whether a fire that cannot start at once (its shard is busy with an earlier run under
 * `overlap: forbid`, or has no owner able to start it) waits for the shard, or is recorded as
 * misfired. `waiting` counts the scheduled fires of this shard already waiting. Manual triggers
 * and failover re-runs always wait: a person or a lost run asked for them explicitly.
 */
export function admitLateFire(spec: MisfireSpec, cause: ExecutionCause, waiting: number): Admission {
  if (cause === "trigger" || cause === "failover") return { admit: true };
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
