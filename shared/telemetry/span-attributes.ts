/**
 * Span attribute names of Shardline's spans: the controller's fire spans and the agent's
 * execution spans say the same thing with the same name, so a trace can be searched by job,
 * shard or execution on either side.
 */
export const SPAN_ATTRIBUTES = {
  /** The job's name. */
  job: "shardline.job",
  /** The shard, 0..shardCount-1; absent on a spec.onFireComplete hook's run. */
  shard: "shardline.shard",
  /** The job's shard count. */
  shardCount: "shardline.shard_count",
  /** The fire instant the execution serves, ISO 8601 in UTC. */
  fireTime: "shardline.fire_time",
  /** The same instant in Unix milliseconds. */
  fireTimeUnixMs: "shardline.fire_time_unix_ms",
  /** Attempt number, from 1. */
  attempt: "shardline.attempt",
  /** The job revision the execution runs (agent spans). */
  jobRevision: "shardline.job.revision",
  /** The execution's id, JOB/FIRE_UNIX_MS/SHARD/ATTEMPT. */
  executionId: "shardline.execution_id",
  /** The id of the agent that ran it. */
  agentId: "shardline.agent_id",
  /** What runs it: handler, script or http. */
  executor: "shardline.executor",
  /** The handler's name, for handler runs. */
  handler: "shardline.handler",
  /** True on the run of a job's spec.onFireComplete hook. */
  fireComplete: "shardline.fire_complete",
  /** Why the execution exists: schedule, trigger, misfire, failover, retry, daemon or fire-complete (controller spans). */
  cause: "shardline.cause",
  /** How it ended: succeeded, failed, timed-out, cancelled or lost. */
  outcome: "shardline.outcome",
} as const;
