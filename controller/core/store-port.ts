import type { JobSpec } from "../../shared/manifest/job-spec.js";

export { type ExecutionStateName, TERMINAL_STATES } from "../../shared/execution-state.js";
import type { ExecutionStateName } from "../../shared/execution-state.js";

/** Why an execution exists. "fire-complete" is the first run of a job's spec.onFireComplete hook. */
export type ExecutionCause = "schedule" | "trigger" | "failover" | "misfire" | "retry" | "daemon" | "fire-complete";

/**
 * The shard number of a run of spec.onFireComplete, which belongs to the whole fire rather than
 * to a shard; the proto shows it as shard 0 with `fire_complete` set.
 */
export const FIRE_COMPLETE_SHARD = -1;

/** How one shard of a fire ended, as a completion hook is told. */
export interface ShardOutcome {
  shard: number;
  state: ExecutionStateName;
  /** The shard's final attempt. */
  executionId: string;
  error?: string;
}

/** A job as the controller keeps it. */
export interface JobRecord {
  name: string;
  /** The manifest text as applied. */
  manifest: string;
  spec: JobSpec;
  paused: boolean;
  /** Grows by one on every change of the manifest. */
  revision: number;
  /** Shards an operator disabled: they are not fired. */
  disabledShards: number[];
  /**
   * The job's rollout (docs/rollouts.md): which revision its shards run while a change of what
   * it runs goes out in steps, or after one was aborted. Absent when every shard runs `revision`.
   */
  rollout?: RolloutState;
}

/**
 * One revision of a job: every apply that changes its spec makes the next one. Kept for
 * `rollout history` and `rollout undo`, and for the runs still pinned to it.
 */
export interface RevisionRecord {
  job: string;
  revision: number;
  /** The manifest text as applied. */
  manifest: string;
  spec: JobSpec;
  /** sha256 of the spec's canonical JSON, hex. */
  hash: string;
  /** Unix ms. */
  appliedAt: number;
  /** The applying token's name; "" when the controller checks no tokens. */
  appliedBy: string;
  /** Set when `rollout undo` made it: the revision it copies. */
  undoOf?: number;
}

/** How a rollout stands: see controller/core/rollouts.ts for the steps' rules. */
export type RolloutPhase = "progressing" | "paused" | "completed" | "aborted";

/** Finished runs of one revision since a wave began: what an analysis step judges. */
export interface RevisionTally {
  /** Runs that succeeded, failed or timed out (lost, cancelled and misfired runs are not counted). */
  runs: number;
  /** Of those, failed or timed out. */
  failures: number;
  /** The last durations (ms) of those runs that said when they started, at most TALLY_DURATIONS. */
  durationsMs: number[];
}

export interface RolloutState {
  /** The revision shards outside the waves run (and every shard after an abort). */
  stableRevision: number;
  /** The revision going out: the job's latest. */
  targetRevision: number;
  phase: RolloutPhase;
  /** The step running now, an index into the target's spec.rollout.steps; their count once completed. */
  step: number;
  /** When the current step began (Unix ms). */
  stepStartedAt: number;
  /** The job's fires since the current step began, counted while it is a pause by fires. */
  stepFires: number;
  /** The waves reached: shards whose owner matches one of these run the target... */
  selectors: WaveSelectorState[];
  /** ...and so do these shards, chosen by the weight steps. */
  shards: number[];
  /** Runs of fires at or after `since` (the last wave's start), of each revision. */
  since: number;
  target: RevisionTally;
  stable: RevisionTally;
  /** When it was aborted, why ("analysis: ...", "aborted by NAME"); when it ended, at what instant. */
  reason?: string;
  endedAt?: number;
}

/** A reached wave's selector, with `clusters` already turned into an expression. */
export interface WaveSelectorState {
  matchLabels: Record<string, string>;
  matchExpressions: { key: string; operator: "In" | "NotIn" | "Exists" | "DoesNotExist"; values: string[] }[];
}

/** One run of one shard for one fire, as one attempt. Times are Unix milliseconds. */
export interface ExecutionRecord {
  /** `JOB/FIRE_UNIX_MS/SHARD/ATTEMPT`, or `JOB/FIRE_UNIX_MS/complete/ATTEMPT` for a completion hook run. */
  id: string;
  job: string;
  shard: number;
  fireTime: number;
  attempt: number;
  /** The agent it was dispatched to; "" while it has none. */
  agent: string;
  state: ExecutionStateName;
  startedAt?: number;
  finishedAt?: number;
  error?: string;
  result?: string;
  cause: ExecutionCause;
  /** The job parameter this execution runs with (a trigger may override the job's). */
  parameter: string;
  /** A retry is not dispatched before this instant. */
  notBefore?: number;
  /** For a run of spec.onFireComplete (shard FIRE_COMPLETE_SHARD): how each shard of the fire ended. */
  fireOutcome?: ShardOutcome[];
  /**
   * The W3C trace context (`traceparent`, `tracestate`) it runs under, fixed when it is created;
   * absent when tracing is off. Kept so that a run replacing it, after a restart or on another
   * leader too, can link to it.
   */
  traceContext?: Record<string, string>;
  /**
   * The disconnect grace its agent was told at dispatch (ExecutionContext.disconnect_grace_ms):
   * how long it may go on there after a lapse, which a later change of the job cannot shorten.
   * Absent until dispatched, and in records written before it existed.
   */
  disconnectGraceMs?: number;
  /**
   * The job revision it runs, fixed when its fire made its first attempt: every attempt of a
   * fire of a shard runs one revision. Absent in records written before revisions were kept.
   */
  revision?: number;
}

/**
 * The revisions each job pins, which retention keeps whatever the limit and a snapshot loads: its
 * current one, its rollout's stable one, and each one an open execution names. Every store
 * implements StoreSnapshot.revisions and RetentionPolicy.revisionsPerJob with it.
 */
export function pinnedRevisions(jobs: Iterable<JobRecord>, openExecutions: Iterable<ExecutionRecord>): Map<string, Set<number>> {
  const pinned = new Map<string, Set<number>>();
  const pin = (job: string, revision: number | undefined): void => {
    if (revision === undefined) return;
    let set = pinned.get(job);
    if (set === undefined) pinned.set(job, (set = new Set()));
    set.add(revision);
  };
  for (const job of jobs) {
    pin(job.name, job.revision);
    pin(job.name, job.rollout?.stableRevision);
  }
  for (const execution of openExecutions) pin(execution.job, execution.revision);
  return pinned;
}

/** One line of an execution's log, as kept. */
export interface ExecutionLogLine {
  /** Its number in the execution's log, from 0 (see ExecutionLog.first_line). */
  number: number;
  /** Unix ms on the agent's clock; 0 when unknown. */
  time: number;
  /** "log", "stdout", "stderr" or "pod". */
  stream: string;
  text: string;
}

/** Lines an agent shipped for one execution (ExecutionUpdate.log, decoded and checked). */
export interface ExecutionLogChunk {
  executionId: string;
  /** The number of lines[0]. */
  firstLine: number;
  lines: Omit<ExecutionLogLine, "number">[];
  /** The agent dropped every line numbered below this one. */
  keptFrom: number;
}

/** An execution's log as a store keeps it, beside the execution and pruned with it (execution-log.ts merges). */
export interface ExecutionLogRecord {
  executionId: string;
  /** Every line numbered below this one is no longer held (dropped by a bound, oldest first). */
  keptFrom: number;
  /** One past the highest line number received. */
  nextLine: number;
  /** The characters of text held, for the controller's bound. */
  chars: number;
  /** Oldest first, ascending numbers (a gap where lines were lost on the way). */
  lines: ExecutionLogLine[];
}

/** Everything one core step asks to make durable, written atomically. */
export interface StoreBatch {
  /** Jobs created or changed. */
  jobs?: JobRecord[];
  /**
   * Jobs removed (their execution history stays until retention). Their fire cursors stay too: a
   * job applied again under the same name fires only after them, so it never makes an execution
   * id (job, fire, shard, attempt) the deleted one already had.
   */
  deletedJobs?: string[];
  /** The last fire made per job, so a restart never fires the same instant twice. */
  cursors?: { job: string; fireTime: number }[];
  /** Executions created or changed, upserted by id. */
  executions?: ExecutionRecord[];
  /** Revisions made (never changed afterwards). A deleted job's revisions go with it. */
  revisions?: RevisionRecord[];
  /** Log lines to add to executions' logs, in the order received (merged by mergeExecutionLog). */
  logs?: ExecutionLogChunk[];
  /** Admin calls for the audit trail: written by the shell's AuditTrail, never by the core. */
  audit?: AuditRecord[];
}

/** One admin call as the audit trail keeps it (the API's AuditRecord). */
export interface AuditRecord {
  /** When the controller answered it, Unix ms. */
  time: number;
  /** The token's name; "" when the controller checks no tokens. */
  caller: string;
  /** The caller's role; "" when none is known. */
  role: string;
  /** The client's address. */
  peer: string;
  /** The AdminService method, e.g. "PauseJob". */
  method: string;
  /** A job name, an agent id or an execution id; "" when none. */
  target: string;
  /** What it changed, in words. */
  summary: string;
  /** "ok", or the error's code as the API names it ("permission_denied", ...). */
  outcome: string;
  /** The error's text when outcome is not "ok", else "". */
  error: string;
}

/** Which audit records to list: newest first, at most `limit`, each filter an AND. */
export interface AuditQuery {
  limit: number;
  /** At or after this instant, Unix ms. */
  since?: number;
  caller?: string;
  target?: string;
}

/** True when `record` passes `query`'s filters (not its limit): the one definition the stores share. */
export function auditMatches(record: AuditRecord, query: AuditQuery): boolean {
  return (
    (query.since === undefined || record.time >= query.since) &&
    (query.caller === undefined || record.caller === query.caller) &&
    (query.target === undefined || record.target === query.target)
  );
}

/** What the controller loads when it starts. */
export interface StoreSnapshot {
  /** The term this controller runs under: one more than any earlier controller of this store. */
  term: number;
  jobs: JobRecord[];
  cursors: Map<string, number>;
  /** Executions not yet in a terminal state. */
  openExecutions: ExecutionRecord[];
  /**
   * The finished executions of fires that still have open ones: the core rebuilds from them how
   * far each fire is from running its spec.onFireComplete hook.
   */
  settledOfOpenFires: ExecutionRecord[];
  /**
   * The revisions the core needs to run what is open: each one an open execution names, and
   * each job's rollout's stable revision (a store may return more of a job's history).
   */
  revisions: RevisionRecord[];
  /**
   * Every agent lease an earlier controller granted has ended within this many ms from when the
   * snapshot was read; absent, nothing is known and one whole lease is assumed. On etcd a leader
   * bounds its leases by its own leadership lease, which ended before this term began (0), unless
   * it handed over on purpose while they still ran (the time it recorded with handOver).
   */
  predecessorLeasesEndWithinMs?: number;
}

/** A filter over the execution history; every field narrows. Results are newest fire first. */
export interface ExecutionQuery {
  job?: string;
  shard?: number;
  agent?: string;
  state?: ExecutionStateName;
  /** fireTime >= since. */
  since?: number;
  /** fireTime < until. */
  until?: number;
  /** At most this many. */
  limit: number;
}

/** How much finished history to keep. Open executions are never pruned. */
export interface RetentionPolicy {
  /** Keep at most this many finished executions per job. */
  maxPerJob: number;
  /** Drop finished executions whose fire is older than this. */
  maxAgeMs: number;
  /**
   * Keep at most this many revisions per job, newest first; the job's current revision, its
   * rollout's stable one and any an open execution names are kept beyond it.
   */
  revisionsPerJob: number;
  /** The audit trail's own retention: records older than maxAgeMs, and those past the maxRecords newest, are dropped. */
  audit?: { maxAgeMs: number; maxRecords: number };
}

/**
 * The controller's durable state. One interface, two backends (SQLite now, etcd later). A commit
 * resolves only once the batch is durable: the shell dispatches nothing before that.
 */
export interface Store {
  open(): Promise<StoreSnapshot>;
  commit(batch: StoreBatch): Promise<void>;
  listExecutions(query: ExecutionQuery): Promise<ExecutionRecord[]>;
  getExecution(id: string): Promise<ExecutionRecord | undefined>;
  /**
   * An execution's log; undefined when it has none (or retention dropped it with its execution).
   * Every durable store has it; a store without it (a test's fake) keeps no logs.
   */
  getExecutionLog?(id: string): Promise<ExecutionLogRecord | undefined>;
  /**
   * The audit trail, newest first. Every durable store has it; a store without it (a test's
   * fake) keeps no audit records.
   */
  listAudit?(query: AuditQuery): Promise<AuditRecord[]>;
  /** A job's revisions kept, newest first. */
  listRevisions(job: string): Promise<RevisionRecord[]>;
  getRevision(job: string, revision: number): Promise<RevisionRecord | undefined>;
  /** Deletes finished executions beyond the policy, and their logs; returns how many. */
  prune(policy: RetentionPolicy, now: number): Promise<number>;
  /**
   * Records, before a leader steps down on purpose, that the agent leases it granted all end
   * within `ms`: the next leader's snapshot says so (predecessorLeasesEndWithinMs). Stores with one
   * controller need not keep it.
   */
  handOver?(leasesEndWithinMs: number): Promise<void>;
  close(): Promise<void>;
}
