import { withExecutor, type ManifestShapedSpec } from "../../shared/manifest/executor-fields.js";
import type { JobSpec } from "../../shared/manifest/job-spec.js";

/**
 * A job's spec as a store gives it back (the JSON of a JobSpec, parsed), read as today's JobSpec:
 * every store reads a stored spec through this one function. Specs stored before JobSpec.runs
 * existed say what the job runs with the manifest's four fields (handler, "" when another is
 * given; script; http; kubernetes): they are read into `runs` here, and are written in the new
 * shape the next time the job is (an apply that changes it, a pause, a disabled shard).
 */
export function readStoredSpec(stored: unknown): JobSpec {
  const spec = stored as JobSpec | ManifestShapedSpec;
  return "runs" in spec ? spec : withExecutor(spec);
}
