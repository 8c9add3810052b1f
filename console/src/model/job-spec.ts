import type { Job } from "../../../shared/gen/shardline/v1/types_pb.js";

/** The parts of a job's spec (Job.spec_json, defaults filled in) the console shows. */
export interface JobSpecSummary {
  /** Cron; undefined for a job fired by hand only, or a daemon. */
  schedule: string | undefined;
  timeZone: string;
  shards: number;
  daemon: boolean;
  suspend: boolean;
}

const parsed = new WeakMap<Job, JobSpecSummary>();

/** What `job`'s spec says; a spec that does not parse reads as one shard, no schedule. */
export function specOf(job: Job): JobSpecSummary {
  const known = parsed.get(job);
  if (known !== undefined) return known;
  let spec: Record<string, unknown> = {};
  try {
    const value: unknown = JSON.parse(job.specJson);
    if (typeof value === "object" && value !== null) spec = value as Record<string, unknown>;
  } catch {
    // Shown with what is known; the manifest below it still says everything.
  }
  const summary: JobSpecSummary = {
    schedule: typeof spec.schedule === "string" ? spec.schedule : undefined,
    timeZone: typeof spec.timeZone === "string" ? spec.timeZone : "UTC",
    shards: typeof spec.shards === "number" && spec.shards > 0 ? spec.shards : 1,
    daemon: spec.daemon === true,
    suspend: spec.suspend === true,
  };
  parsed.set(job, summary);
  return summary;
}
