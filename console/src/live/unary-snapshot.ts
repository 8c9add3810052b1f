import { create } from "@bufbuild/protobuf";
import {
  ControllerStatusSchema,
  type ListAssignmentsResponse,
  ShardStatusSchema,
  type WatchResponse,
  WatchResponseSchema,
} from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import { type Agent, AgentState, type Execution, type Job } from "../../../shared/gen/shardline/v1/types_pb.js";
import { specOf } from "../model/job-spec.js";

/** What the unary calls answered: ListJobs, ListAgents, ListAssignments and the newest ListExecutions. */
export interface UnaryLists {
  jobs: readonly Job[];
  agents: readonly Agent[];
  assignments: ListAssignmentsResponse;
  /** Newest fire first, as ListExecutions answers. */
  executions: readonly Execution[];
}

/**
 * The state a watch would give, made from unary calls, for a controller that does not serve
 * Watch: a whole snapshot (reset and synced), every shard of every job with its owner (or why it
 * has none) and the newest of its executions listed. The status has what the lists tell (no
 * term, no rates: they read 0 and the header shows them as unknown).
 */
export function snapshotFromLists(lists: UnaryLists, address: string, now: number): WatchResponse {
  const owners = new Map(lists.assignments.assignments.map((a) => [`${a.job}/${a.shard}`, a]));
  const reasons = new Map(lists.assignments.unassigned.map((u) => [`${u.job}/${u.shard}`, u.reason]));
  const latest = new Map<string, Execution>();
  for (const execution of lists.executions) {
    if (execution.fireComplete) continue;
    const key = `${execution.job}/${execution.shard}`;
    // Newest fire first: a shard's latest is of the first fire seen, its highest attempt.
    const seen = latest.get(key);
    if (seen === undefined || (seen.fireTimeUnixMs === execution.fireTimeUnixMs && execution.attempt > seen.attempt)) latest.set(key, execution);
  }
  const shards = lists.jobs.flatMap((job) => {
    const disabled = new Set(job.disabledShards);
    return Array.from({ length: specOf(job).shards }, (_, shard) => {
      const key = `${job.name}/${shard}`;
      const owner = owners.get(key);
      return create(ShardStatusSchema, {
        job: job.name,
        shard,
        agent: owner?.agent ?? "",
        revoking: owner?.revoking ?? false,
        unassignedReason: reasons.get(key) ?? "",
        disabled: disabled.has(shard),
        lastExecution: latest.get(key),
      });
    });
  });
  const status = create(ControllerStatusSchema, {
    address,
    timeUnixMs: BigInt(now),
    agentsConnected: lists.agents.filter((a) => a.state === AgentState.READY || a.state === AgentState.DRAINING).length,
    agentsLost: lists.agents.filter((a) => a.state === AgentState.LOST).length,
    agentsCordoned: lists.agents.filter((a) => a.cordoned).length,
    jobs: lists.jobs.length,
    jobsPaused: lists.jobs.filter((j) => j.paused).length,
    shards: shards.length,
    shardsUnassigned: lists.assignments.unassigned.length,
  });
  return create(WatchResponseSchema, {
    reset: true,
    synced: true,
    jobs: [...lists.jobs],
    agents: [...lists.agents],
    shards,
    executions: [...lists.executions],
    status,
  });
}
