/**
 * The records and state names the controller core owns: the agents, jobs, shards and fires it
 * tracks between steps, and the views it gives of them.
 */
import { type JobSpec } from "../../shared/manifest/job-spec.js";
import type { ExecutionRecord, JobRecord, RevisionRecord, ShardOutcome } from "./store-port.js";

/** How an agent looks from the outside. */
export type AgentStateName = "ready" | "draining" | "lost";

export interface AgentView {
  id: string;
  labels: Record<string, string>;
  capacity: number;
  handlers: string[];
  version: string;
  state: AgentStateName;
  cordoned: boolean;
  shards: { job: string; shard: number }[];
  leaseExpiresAt: number;
  connectedAt: number;
  /** Executions it runs at once; 0 is no limit. */
  maxConcurrent: number;
  /** Executions dispatched to it and not finished. */
  running: number;
  /** The Hello.instance_id of the process holding the id; "" when it sent none. */
  instanceId: string;
  /** Hellos under its id from other processes refused while it held the id. */
  refusedHellos: number;
  /** The last such refusal (when, from where, which instance), for operators. */
  lastRefusal?: string;
}

export interface AssignmentView {
  job: string;
  shard: number;
  agent: string;
  term: number;
  generation: number;
  revoking: boolean;
}

export interface JobView {
  record: JobRecord;
  nextFire?: number;
  lastFire?: number;
  /** The next scheduled fires, up to five. */
  upcoming: number[];
  /** Why the job, or some of its shards, cannot run now; absent when nothing stops it. */
  waitingReason?: string;
}

/** An enabled shard no agent owns, and why. */
export interface UnassignedShardView {
  job: string;
  shard: number;
  reason: string;
}

export interface AgentEntry {
  id: string;
  /** Distinguishes this entry from an earlier one of the same id, for stale lease timers. */
  incarnation: number;
  session: string;
  /** The process holding the id (Hello.instance_id); "" when unknown. */
  instance: string;
  /** Where its current (or last) stream came from, as the shell saw it. */
  address: string;
  /** Hellos under its id from other processes refused while it held the id. */
  refusedHellos: number;
  lastRefusal?: string;
  /** What a previous process of this id left behind when this one took the id over: see takeOver. */
  inherited?: InheritedFence;
  connected: boolean;
  lost: boolean;
  /** Said goodbye: leaving on purpose. */
  leaving: boolean;
  cordoned: boolean;
  labels: Record<string, string>;
  capacity: number;
  handlers: Set<string>;
  executors: Set<string>;
  /** Executions it runs at once; 0 is no limit. */
  maxConcurrent: number;
  version: string;
  /** The controller's view of the lease: never earlier than the agent's own. */
  leaseExpiry: number;
  /** A lease timer is queued for this entry (one at most: it re-arms itself while renewed). */
  leaseTimerArmed: boolean;
  connectedAt: number;
  shards: Set<ShardEntry>;
  /** Open executions dispatched to it. */
  executions: Set<string>;
}

/**
 * The shards and runs of an agent's previous process, which lost its stream with its lease still
 * valid, when a new process took the id over: that process may still be alive (partitioned) and
 * running them until `until`, its lease's end in the controller's view. Until then the new process
 * is not sent those shards (but for a shard on which it reported a run, which its snapshot keeps,
 * fenced: agents.ts sendSnapshot), no placement moves them, and those runs are not taken for lost.
 */
export interface InheritedFence {
  shards: Set<ShardEntry>;
  runs: Set<string>;
  until: number;
  /** The previous process's instance, for messages. */
  instance: string;
}

export interface ShardEntry {
  job: string;
  shard: number;
  owner?: string;
  term: number;
  generation: number;
  /** A revoke was sent; the owner releases it once its runs are over. */
  revoking: boolean;
  /** Open executions dispatched to the owner. */
  running: Set<string>;
  /** Executions waiting for an owner able to start them, oldest first. */
  queue: ExecutionRecord[];
  /** The (term, generation) an agent claimed when the shard was adopted after a restart. */
  claim?: [number, number];
  /** When the shard's last daemon run ended under its current owner; the next one waits a backoff. */
  daemonEndedAt?: number;
  /** Cut off by a smaller shard count while its owner still held it: see JobEntry.retired. */
  retired?: boolean;
}

export interface JobEntry {
  record: JobRecord;
  shards: ShardEntry[];
  /** The last scheduled fire made (durable). */
  cursor?: number;
  nextFire?: number;
  /** Bumped whenever the schedule changes, so armed fire timers of the old schedule are ignored. */
  fireToken: number;
  /** The latest fire instant issued, scheduled or manual, so ids never collide. */
  lastIssuedFire: number;
  /**
   * Shards a smaller shard count removed whose owner has not yet given them back (released, or
   * lost and its lease expired). They stay owned, and revoked, meanwhile: should the count grow
   * again, the shard returns still fenced for that owner, and no second agent can take it while
   * the first may still be running it.
   */
  retired: Map<number, ShardEntry>;
  /** What its shards were last placed for: see placementCurrent. */
  placedFor?: { agentsEpoch: number; spec: JobSpec; runs: string };
  /** The revisions something runs: the latest, the rollout's stable one, open executions' (revisions.ts). */
  revisions: Map<number, RevisionRecord>;
}

/**
 * A fire of a job with spec.onFireComplete, from the fire until every shard of it has finished
 * (its final attempt, after retries and failover runs).
 */
export interface FireProgress {
  /** Shards whose final attempt has not finished. */
  pending: Set<number>;
  /** How the others ended, by shard. */
  outcomes: Map<number, ShardOutcome>;
}
