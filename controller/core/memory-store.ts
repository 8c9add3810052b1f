import { ShardlineError } from "../../shared/errors.js";
import { mergeExecutionLog } from "./execution-log.js";
import {
  auditMatches,
  type AuditQuery,
  type AuditRecord,
  type ExecutionLogRecord,
  type ExecutionQuery,
  type ExecutionRecord,
  type JobRecord,
  type RetentionPolicy,
  type RevisionRecord,
  type Store,
  type StoreBatch,
  type StoreSnapshot,
  pinnedRevisions,
  TERMINAL_STATES,
} from "./store-port.js";

/** Newest fire first; within a fire, shards in order and the latest attempt first: every store lists so. */
function listingOrder(a: ExecutionRecord, b: ExecutionRecord): number {
  return b.fireTime - a.fireTime || a.shard - b.shard || b.attempt - a.attempt;
}

/** Oldest fire first, as a snapshot gives open executions. */
function restoreOrder(a: ExecutionRecord, b: ExecutionRecord): number {
  return a.fireTime - b.fireTime || a.shard - b.shard || a.attempt - b.attempt;
}

const isOpen = (e: ExecutionRecord): boolean => !TERMINAL_STATES.has(e.state);

/**
 * The store port kept in memory, as etcd's raft ships `MemoryStorage` beside its `Storage`: what the
 * core's tests and the simulator restart a controller from, and a reference for the durable
 * stores (it passes the same contract tests). Every batch is applied whole, in order; records are
 * copied in and out, so what a caller keeps cannot change what is stored. `snapshot()` is the
 * synchronous form of `open()`: each takes the next term.
 */
export class MemoryStore implements Store {
  term = 0;
  /** What the next snapshot says of earlier controllers' leases (see StoreSnapshot). */
  predecessorLeasesEndWithinMs: number | undefined;
  jobs = new Map<string, JobRecord>();
  cursors = new Map<string, number>();
  executions = new Map<string, ExecutionRecord>();
  /** Each job's revisions by number. */
  revisions = new Map<string, Map<number, RevisionRecord>>();
  /** Executions' logs by execution id. */
  logs = new Map<string, ExecutionLogRecord>();
  /** The audit trail, oldest first. */
  audit: AuditRecord[] = [];

  /** Takes the next term and returns what a controller starts from. */
  snapshot(): StoreSnapshot {
    this.term += 1;
    const open = [...this.executions.values()].filter(isOpen);
    const openFires = new Set(open.map((e) => `${e.job}\n${e.fireTime}`));
    const needed: RevisionRecord[] = [];
    for (const [job, numbers] of pinnedRevisions(this.jobs.values(), open)) {
      for (const revision of numbers) {
        const record = this.revisions.get(job)?.get(revision);
        if (record !== undefined) needed.push(structuredClone(record));
      }
    }
    return {
      term: this.term,
      ...(this.predecessorLeasesEndWithinMs === undefined ? {} : { predecessorLeasesEndWithinMs: this.predecessorLeasesEndWithinMs }),
      jobs: [...this.jobs.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((j) => structuredClone(j)),
      cursors: new Map(this.cursors),
      openExecutions: open.sort(restoreOrder).map((e) => structuredClone(e)),
      settledOfOpenFires: [...this.executions.values()]
        .filter((e) => !isOpen(e) && openFires.has(`${e.job}\n${e.fireTime}`))
        .sort(restoreOrder)
        .map((e) => structuredClone(e)),
      revisions: needed.sort((a, b) => (a.job < b.job ? -1 : a.job > b.job ? 1 : a.revision - b.revision)),
    };
  }

  /**
   * Applies one batch at once. A revision already held is kept as it is (revisions never change);
   * a deleted job's revisions go with it, also those the same batch made.
   */
  apply(batch: StoreBatch): void {
    for (const job of batch.jobs ?? []) this.jobs.set(job.name, structuredClone(job));
    for (const revision of batch.revisions ?? []) {
      let held = this.revisions.get(revision.job);
      if (held === undefined) this.revisions.set(revision.job, (held = new Map()));
      if (!held.has(revision.revision)) held.set(revision.revision, structuredClone(revision));
    }
    for (const name of batch.deletedJobs ?? []) {
      this.jobs.delete(name);
      this.revisions.delete(name);
    }
    for (const { job, fireTime } of batch.cursors ?? []) this.cursors.set(job, fireTime);
    for (const execution of batch.executions ?? []) this.executions.set(execution.id, structuredClone(execution));
    for (const chunk of batch.logs ?? []) this.logs.set(chunk.executionId, mergeExecutionLog(this.logs.get(chunk.executionId), structuredClone(chunk)));
    for (const record of batch.audit ?? []) this.audit.push({ ...record });
  }

  open(): Promise<StoreSnapshot> {
    return Promise.resolve(this.snapshot());
  }

  commit(batch: StoreBatch): Promise<void> {
    this.apply(batch);
    return Promise.resolve();
  }

  listExecutions(query: ExecutionQuery): Promise<ExecutionRecord[]> {
    if (!Number.isSafeInteger(query.limit) || query.limit < 0) {
      return Promise.reject(ShardlineError.invalid("limit", query.limit, "an integer of at least 0"));
    }
    const matches = [...this.executions.values()].filter(
      (e) =>
        (query.job === undefined || e.job === query.job) &&
        (query.shard === undefined || e.shard === query.shard) &&
        (query.agent === undefined || e.agent === query.agent) &&
        (query.state === undefined || e.state === query.state) &&
        (query.since === undefined || e.fireTime >= query.since) &&
        (query.until === undefined || e.fireTime < query.until),
    );
    return Promise.resolve(matches.sort(listingOrder).slice(0, query.limit).map((e) => structuredClone(e)));
  }

  getExecution(id: string): Promise<ExecutionRecord | undefined> {
    const execution = this.executions.get(id);
    return Promise.resolve(execution === undefined ? undefined : structuredClone(execution));
  }

  getExecutionLog(id: string): Promise<ExecutionLogRecord | undefined> {
    const log = this.logs.get(id);
    return Promise.resolve(log === undefined ? undefined : structuredClone(log));
  }

  listAudit(query: AuditQuery): Promise<AuditRecord[]> {
    const matches = this.audit.filter((record) => auditMatches(record, query));
    return Promise.resolve(matches.reverse().slice(0, query.limit).map((record) => ({ ...record })));
  }

  listRevisions(job: string): Promise<RevisionRecord[]> {
    const held = [...(this.revisions.get(job)?.values() ?? [])];
    return Promise.resolve(held.sort((a, b) => b.revision - a.revision).map((r) => structuredClone(r)));
  }

  getRevision(job: string, revision: number): Promise<RevisionRecord | undefined> {
    const record = this.revisions.get(job)?.get(revision);
    return Promise.resolve(record === undefined ? undefined : structuredClone(record));
  }

  /**
   * Drops finished executions fired before `now - maxAgeMs`, then those beyond each job's
   * `maxPerJob` newest; and each job's revisions beyond its `revisionsPerJob` newest, but for
   * those pinned (see pinnedRevisions). Returns how many executions it dropped.
   */
  prune(policy: RetentionPolicy, now: number): Promise<number> {
    const invalid = invalidRetention(policy);
    if (invalid !== undefined) return Promise.reject(invalid);
    let deleted = 0;
    const drop = (e: ExecutionRecord): void => {
      this.logs.delete(e.id);
      if (this.executions.delete(e.id)) deleted++;
    };
    const finished = [...this.executions.values()].filter((e) => !isOpen(e));
    for (const e of finished) if (e.fireTime < now - policy.maxAgeMs) drop(e);
    const byJob = new Map<string, ExecutionRecord[]>();
    for (const e of finished) if (this.executions.has(e.id)) byJob.set(e.job, [...(byJob.get(e.job) ?? []), e]);
    for (const list of byJob.values()) list.sort(listingOrder).slice(policy.maxPerJob).forEach(drop);
    const pinned = pinnedRevisions(this.jobs.values(), [...this.executions.values()].filter(isOpen));
    for (const [job, held] of this.revisions) {
      const beyond = [...held.keys()].sort((a, b) => b - a).slice(policy.revisionsPerJob);
      for (const revision of beyond) if (!pinned.get(job)?.has(revision)) held.delete(revision);
    }
    if (policy.audit !== undefined) {
      const { maxAgeMs, maxRecords } = policy.audit;
      this.audit = this.audit.filter((record) => record.time >= now - maxAgeMs);
      this.audit = this.audit.slice(Math.max(0, this.audit.length - maxRecords));
    }
    return Promise.resolve(deleted);
  }

  handOver(leasesEndWithinMs: number): Promise<void> {
    this.predecessorLeasesEndWithinMs = leasesEndWithinMs;
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Why a retention policy cannot be applied, naming its field; undefined when it can. */
function invalidRetention(policy: RetentionPolicy): ShardlineError | undefined {
  if (!(policy.maxAgeMs >= 0)) return ShardlineError.invalid("maxAgeMs", policy.maxAgeMs, "a number of milliseconds of at least 0");
  const count = (value: number): boolean => value >= 0 && (Number.isInteger(value) || value === Infinity);
  if (!count(policy.maxPerJob)) return ShardlineError.invalid("maxPerJob", policy.maxPerJob, "an integer of at least 0");
  if (!count(policy.revisionsPerJob)) return ShardlineError.invalid("revisionsPerJob", policy.revisionsPerJob, "an integer of at least 0");
  return undefined;
}
