import { ShardlineError } from "../../shared/errors.js";
import {
  type ExecutionQuery,
  type ExecutionRecord,
  type JobRecord,
  type RetentionPolicy,
  type Store,
  type StoreBatch,
  type StoreSnapshot,
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

  /** Takes the next term and returns what a controller starts from. */
  snapshot(): StoreSnapshot {
    this.term += 1;
    const open = [...this.executions.values()].filter(isOpen);
    const openFires = new Set(open.map((e) => `${e.job}\n${e.fireTime}`));
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
    };
  }

  /** Applies one batch at once. */
  apply(batch: StoreBatch): void {
    for (const job of batch.jobs ?? []) this.jobs.set(job.name, structuredClone(job));
    for (const name of batch.deletedJobs ?? []) this.jobs.delete(name);
    for (const { job, fireTime } of batch.cursors ?? []) this.cursors.set(job, fireTime);
    for (const execution of batch.executions ?? []) this.executions.set(execution.id, structuredClone(execution));
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

  /** Drops finished executions fired before `now - maxAgeMs`, then those beyond each job's `maxPerJob` newest. */
  prune(policy: RetentionPolicy, now: number): Promise<number> {
    if (!(policy.maxAgeMs >= 0)) {
      return Promise.reject(ShardlineError.invalid("maxAgeMs", policy.maxAgeMs, "a number of milliseconds of at least 0"));
    }
    if (!(policy.maxPerJob >= 0) || !(Number.isInteger(policy.maxPerJob) || policy.maxPerJob === Infinity)) {
      return Promise.reject(ShardlineError.invalid("maxPerJob", policy.maxPerJob, "an integer of at least 0"));
    }
    let deleted = 0;
    const drop = (e: ExecutionRecord): void => {
      if (this.executions.delete(e.id)) deleted++;
    };
    const finished = [...this.executions.values()].filter((e) => !isOpen(e));
    for (const e of finished) if (e.fireTime < now - policy.maxAgeMs) drop(e);
    const byJob = new Map<string, ExecutionRecord[]>();
    for (const e of finished) if (this.executions.has(e.id)) byJob.set(e.job, [...(byJob.get(e.job) ?? []), e]);
    for (const list of byJob.values()) list.sort(listingOrder).slice(policy.maxPerJob).forEach(drop);
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
