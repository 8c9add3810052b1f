import type { ExecutionLogChunk, ExecutionStateName, ShardOutcome } from "./store-port.js";
import type { MisfireKind } from "./misfire.js";

/** An assignment as the core speaks of it: shard of job, stamped (term, generation). */
export interface AssignmentRef {
  job: string;
  shard: number;
  term: number;
  generation: number;
}

/** What an agent says when its stream opens (the proto's Hello, already decoded). */
export interface AgentHello {
  agentId: string;
  labels: Record<string, string>;
  capacity: number;
  handlers: string[];
  /** Executors beyond handlers that it runs: "script", "http". */
  executors: string[];
  /** Executions it runs at once; 0 is no limit. */
  maxConcurrent: number;
  version: string;
  /** Assignments it still holds from an earlier stream. */
  held: AssignmentRef[];
  /** Executions it still runs, or finished without a confirmed report. */
  executions: ExecutionUpdate[];
  /**
   * The process's instance, random per process start; absent or "" when the agent sent none.
   * Tells the same agent reconnecting from a second process claiming its id.
   */
  instanceId?: string;
}

/**
 * An agent's update about one execution (the proto's ExecutionUpdate, decoded). Times are the
 * agent's Unix milliseconds.
 */
export interface ExecutionUpdate {
  executionId: string;
  state: ExecutionStateName;
  startedAt?: number;
  finishedAt?: number;
  error?: string;
  result?: string;
  /** Lines the run wrote since the agent last sent any (ExecutionUpdate.log); absent when none. */
  log?: Omit<ExecutionLogChunk, "executionId">;
}

/** Everything an agent needs to run one execution. */
export interface ExecutionContext {
  executionId: string;
  job: string;
  shard: number;
  shardCount: number;
  shardParameter: string;
  parameter: string;
  fireTime: number;
  attempt: number;
  /** The job revision it runs (pinned for every attempt of its fire). */
  revision: number;
  handler: string;
  timeoutMs: number;
  /** How long the agent lets it go on after its lease lapsed (see disconnect-grace.ts). */
  disconnectGraceMs: number;
  /** term * 2^32 + generation of its assignment (or of the newest one, for a hook run): see fencingToken. */
  fencingToken: bigint;
  /** The assignment it runs under; absent for a completion hook run, which has none. */
  assignment?: AssignmentRef;
  traceContext: Record<string, string>;
  /** For a run of spec.onFireComplete: how each shard of the fire ended. */
  fireOutcome?: ShardOutcome[];
  /** The command to run, for a job with spec.script. */
  script?: { command: string; args: string[]; env: Record<string, string>; killGraceMs: number };
  /** True for a daemon job's run, which lasts as long as the agent owns the shard. */
  daemon?: boolean;
  /** The request to make, for a job with spec.http. */
  http?: { method: string; url: string; headers: Record<string, string>; body: string; connectTimeoutMs: number; readTimeoutMs: number };
  /** The Job to create, for a job with spec.kubernetes (its pod template as JSON). */
  kubernetes?: { podTemplateJson: string; backoffLimit: number; ttlSecondsAfterFinished: number; logContainer: string; startTimeoutSeconds: number };
}

/** A message the core asks the shell to send on one agent's stream. */
export type AgentCommand =
  | { kind: "welcome"; sessionId: string; heartbeatIntervalMs: number; leaseTtlMs: number; dispatchAheadMs: number }
  | { kind: "heartbeat-ack"; seq: number; leaseExpiresAt: number; leaseTtlMs: number }
  | { kind: "assignments"; snapshot: boolean; add: AssignmentRef[]; revoke: AssignmentRef[] }
  | { kind: "dispatch"; executions: ExecutionContext[] }
  | { kind: "cancel"; executionIds: string[]; reason: string };

/** Something that happened, for `shardline events`, logs and the web page. */
export interface CoreEvent {
  time: number;
  type: string;
  job?: string;
  shard?: number;
  agent?: string;
  executionId?: string;
  /** For execution events: the execution's state after the event. */
  state?: ExecutionStateName;
  /** For execution.misfired and job.misfired: why, in a word (MisfireKind). */
  misfire?: MisfireKind;
  /** For controller.stalled: how long the controller could not run, and how many leases it extended. */
  stall?: { ms: number; leasesExtended: number };
  message: string;
}
