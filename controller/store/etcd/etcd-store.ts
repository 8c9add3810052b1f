import { type Namespace, Range } from "etcd3";
import { ShardlineError } from "../../../shared/errors.js";
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
} from "../store.js";
import { manifestShaped } from "../../../shared/manifest/index.js";
import { readStoredSpec } from "../stored-spec.js";
import { TERM_KEY } from "./etcd-leadership.js";
import { mergeExecutionLog } from "../../core/execution-log.js";

/**
 * Keys, relative to the store's namespace:
 * - `jobs/NAME`: a JobRecord as JSON; `cursors/NAME`: the last fire made, in Unix ms.
 * - `open/ID` and `done/ID`: an execution as JSON, under `open/` until it reaches a terminal state
 *   and under `done/` after. The id starts with `JOB/FIRE/`, so a job's or a fire's executions
 *   are one prefix, and a restart reads only `open/`.
 * - `revisions/JOB/REVISION`: a RevisionRecord as JSON, the revision zero-padded so that a job's
 *   revisions are one prefix in number order. Deleted with the job.
 * - `logs/ID`: an execution's log (controller/core/execution-log.ts) as JSON, for an execution
 *   that wrote something; merged as each batch is applied, deleted by prune with the execution.
 * - `audit/TIME-ENTRY-N`: an audit record as JSON, the time zero-padded so that the trail is one
 *   prefix in time order; pruned by the audit retention.
 * - `wal/TERM-SEQ`: a group of committed batches not yet applied to the keys above (see commit).
 * - `handover`: written by a leader stepping down on purpose, read and deleted by the next.
 * - `term`, `leader`: the election's (etcd-leadership.ts).
 */
const WAL = "wal/";
const REVISIONS = "revisions/";
const LOGS = "logs/";
const AUDIT = "audit/";
/** How long the agent leases of a leader that stepped down on purpose still ran, in ms. */
const HANDOVER_KEY = "handover";
const WAL_PART = "wal-part/";

/** etcd refuses requests over 1.5 MiB by default: a WAL entry larger than this is written in parts. */
const MAX_VALUE_BYTES = 1024 * 1024;
/** etcd refuses transactions of more than 128 operations by default. */
const MAX_TXN_OPS = 100;
/** Keys read per range request, so a large history never makes one oversized response. */
const PAGE = 1000;
/** How long a write is retried through etcd being briefly unreachable before the store gives up. */
const RETRY_FOR_MS = 3000;
/** Single keys read at once, when a snapshot reads the revisions it needs one by one. */
const PARALLEL_GETS = 32;

/** One key's new value, or null to delete it. */
type Writes = Map<string, string | null>;

interface PendingCommit {
  batch: StoreBatch;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * The controller's durable state in etcd, written under the term this controller won.
 *
 * A commit must be atomic, yet one batch may hold thousands of executions and etcd bounds a
 * transaction's operations and size. So a commit is first one write of the whole group of
 * batches as a WAL entry (in parts with a final manifest if large), fenced by the term: once that
 * write succeeds the commit is durable and resolves. The entry is then applied to the keys above
 * in small fenced transactions and deleted. A controller that takes over applies whatever WAL
 * entries are left, in order, before it reads anything; applying is idempotent (whole values put
 * or deleted), so applying twice is harmless. Every write compares the term, so writes of a
 * deposed leader fail, and after one failed write every later commit fails too.
 */
export class EtcdStore implements Store {
  readonly #ns: Namespace;
  readonly #term: number;
  readonly #termValue: string;
  #opened = false;
  #closed = false;
  #failure: ShardlineError | undefined;
  #queue: PendingCommit[] = [];
  #writing = false;
  #seq = 0;
  /** The tail of the apply chain: reads wait for it, so they see every resolved commit. */
  #applied: Promise<void> = Promise.resolve();
  #writerIdle: Promise<void> = Promise.resolve();

  constructor(ns: Namespace, term: number) {
    this.#ns = ns;
    this.#term = term;
    this.#termValue = String(term);
  }

  async open(): Promise<StoreSnapshot> {
    if (this.#opened) throw new ShardlineError("failed-precondition", "the etcd store is already open");
    this.#opened = true;
    await this.#fenced(() => this.#recover());
    const jobs = (await this.#readAll("jobs/")).map(([, value]) => {
      const record = JSON.parse(value) as JobRecord;
      return { ...record, spec: readStoredSpec(record.spec) };
    });
    jobs.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const cursors = new Map((await this.#readAll("cursors/")).map(([key, value]) => [key.slice("cursors/".length), Number(value)]));
    const openExecutions = (await this.#readAll("open/")).map(([, value]) => JSON.parse(value) as ExecutionRecord);
    openExecutions.sort(byFireShardAttempt);
    const openFires = new Set(openExecutions.map((e) => `${e.job}/${e.fireTime}/`));
    const settled = await Promise.all([...openFires].map((fire) => this.#readAll(`done/${fire}`)));
    const settledOfOpenFires = settled.flat().map(([, value]) => JSON.parse(value) as ExecutionRecord);
    settledOfOpenFires.sort(byFireShardAttempt);
    const revisions = await this.#pinnedRevisions(jobs, openExecutions);
    // Every agent lease of a predecessor ended with its leadership lease, before this term began,
    // unless it stepped down on purpose and recorded how long they still ran.
    const handedOver = await this.#guard("read the hand-over", () => this.#ns.get(HANDOVER_KEY).string());
    if (handedOver !== null) await this.#fenced(() => this.#txn([[HANDOVER_KEY, null]]));
    const predecessorLeasesEndWithinMs = handedOver === null ? 0 : Math.max(0, Number(handedOver) || 0);
    return { term: this.#term, jobs, cursors, openExecutions, settledOfOpenFires, revisions, predecessorLeasesEndWithinMs };
  }

  /** The revisions held of those each job pins (see pinnedRevisions), in job then number order. */
  async #pinnedRevisions(jobs: readonly JobRecord[], openExecutions: readonly ExecutionRecord[]): Promise<RevisionRecord[]> {
    const keys: string[] = [];
    for (const [job, revisions] of pinnedRevisions(jobs, openExecutions)) {
      for (const revision of revisions) keys.push(revisionKey(job, revision));
    }
    keys.sort();
    const values: (string | null)[] = new Array<string | null>(keys.length).fill(null);
    let next = 0;
    const reader = async (): Promise<void> => {
      for (let i = next++; i < keys.length; i = next++) {
        const key = keys[i]!;
        values[i] = await this.#guard("read a revision", () => this.#ns.get(key).string());
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_GETS, keys.length) }, reader));
    return values.filter((value): value is string => value !== null).map(parseRevision);
  }

  commit(batch: StoreBatch): Promise<void> {
    const refused = this.#refusal();
    if (refused !== undefined) return Promise.reject(refused);
    return new Promise((resolve, reject) => {
      this.#queue.push({ batch, resolve, reject });
      if (!this.#writing) this.#writerIdle = this.#writeQueued();
    });
  }

  async listExecutions(query: ExecutionQuery): Promise<ExecutionRecord[]> {
    if (!Number.isSafeInteger(query.limit) || query.limit < 0) {
      throw ShardlineError.invalid("limit", query.limit, "an integer of at least 0");
    }
    this.#readable();
    await this.#applied;
    const scope = query.job === undefined ? "" : `${query.job}/`;
    const rows = [...(await this.#readAll(`open/${scope}`)), ...(await this.#readAll(`done/${scope}`))];
    const matching: ExecutionRecord[] = [];
    for (const [, value] of rows) {
      const e = JSON.parse(value) as ExecutionRecord;
      if (query.shard !== undefined && e.shard !== query.shard) continue;
      if (query.agent !== undefined && e.agent !== query.agent) continue;
      if (query.state !== undefined && e.state !== query.state) continue;
      if (query.since !== undefined && e.fireTime < query.since) continue;
      if (query.until !== undefined && e.fireTime >= query.until) continue;
      matching.push(e);
    }
    return matching.sort(listingOrder).slice(0, query.limit);
  }

  async getExecution(id: string): Promise<ExecutionRecord | undefined> {
    this.#readable();
    await this.#applied;
    for (const place of ["done/", "open/"]) {
      const value = await this.#guard("read an execution", () => this.#ns.get(place + id).string());
      if (value !== null) return JSON.parse(value) as ExecutionRecord;
    }
    return undefined;
  }

  async getExecutionLog(id: string): Promise<ExecutionLogRecord | undefined> {
    this.#readable();
    await this.#applied;
    const value = await this.#guard("read an execution's log", () => this.#ns.get(LOGS + id).string());
    return value === null ? undefined : (JSON.parse(value) as ExecutionLogRecord);
  }

  /** The audit trail, newest first: read backwards from the newest, a page at a time, until `limit` match. */
  async listAudit(query: AuditQuery): Promise<AuditRecord[]> {
    this.#readable();
    await this.#applied;
    const found: AuditRecord[] = [];
    const range = Range.prefix(AUDIT);
    const start = query.since === undefined ? range.start : Buffer.from(auditKey(query.since, ""));
    let end: Buffer = range.end;
    while (found.length < query.limit) {
      const page = await this.#guard("read the audit trail", () => this.#ns.getAll().inRange(new Range(start, end)).sort("Key", "Descend").limit(PAGE).exec());
      for (const kv of page.kvs) {
        const record = JSON.parse(kv.value.toString()) as AuditRecord;
        if (auditMatches(record, query)) found.push(record);
        if (found.length >= query.limit) break;
      }
      if (!page.more || page.kvs.length === 0) break;
      end = page.kvs[page.kvs.length - 1]!.key;
    }
    return found;
  }

  /** A job's revisions kept, newest first. */
  async listRevisions(job: string): Promise<RevisionRecord[]> {
    this.#readable();
    await this.#applied;
    return (await this.#readAll(`${REVISIONS}${job}/`)).map(([, value]) => parseRevision(value)).reverse();
  }

  async getRevision(job: string, revision: number): Promise<RevisionRecord | undefined> {
    this.#readable();
    await this.#applied;
    const value = await this.#guard("read a revision", () => this.#ns.get(revisionKey(job, revision)).string());
    return value === null ? undefined : parseRevision(value);
  }

  /**
   * Deletes finished executions beyond the policy, and each job's revisions beyond its
   * `revisionsPerJob` newest but for those it pins (see pinnedRevisions); resolves with how many
   * executions it deleted.
   */
  prune(policy: RetentionPolicy, now: number): Promise<number> {
    if (!(policy.maxAgeMs >= 0)) {
      return Promise.reject(ShardlineError.invalid("maxAgeMs", policy.maxAgeMs, "a number of milliseconds of at least 0"));
    }
    if (!isCount(policy.maxPerJob)) return Promise.reject(ShardlineError.invalid("maxPerJob", policy.maxPerJob, "an integer of at least 0"));
    if (!isCount(policy.revisionsPerJob)) {
      return Promise.reject(ShardlineError.invalid("revisionsPerJob", policy.revisionsPerJob, "an integer of at least 0"));
    }
    const refused = this.#refusal();
    if (refused !== undefined) return Promise.reject(refused);
    // In the apply chain, so it never interleaves with an entry being applied.
    return this.#chainApply(async () => {
      const byJob = new Map<string, { key: string; fireTime: number; shard: number; attempt: number }[]>();
      for (const key of await this.#readKeys("done/")) {
        const [job = "", fire = "", shard = "", attempt = ""] = key.slice("done/".length).split("/");
        const list = byJob.get(job) ?? [];
        list.push({ key, fireTime: Number(fire), shard: shard === "complete" ? -1 : Number(shard), attempt: Number(attempt) });
        byJob.set(job, list);
      }
      const doomed: Writes = new Map();
      const logs = new Set<string>();
      for (const list of byJob.values()) {
        list.sort(listingOrder);
        list.forEach((e, rank) => {
          if (rank >= policy.maxPerJob || e.fireTime < now - policy.maxAgeMs) {
            doomed.set(e.key, null);
            logs.add(e.key.slice("done/".length));
          }
        });
      }
      const executions = doomed.size;
      // A log goes with its execution; most executions have none, so only those held are deleted.
      for (const key of await this.#readKeys(LOGS)) if (logs.has(key.slice(LOGS.length))) doomed.set(key, null);
      for (const key of await this.#revisionsBeyond(policy.revisionsPerJob)) doomed.set(key, null);
      if (policy.audit !== undefined) {
        const keys = await this.#readKeys(AUDIT);
        const cutoff = auditKey(now - policy.audit.maxAgeMs, "");
        keys.forEach((key, index) => {
          if (key < cutoff || index < keys.length - policy.audit!.maxRecords) doomed.set(key, null);
        });
      }
      await this.#write(doomed);
      return executions;
    });
  }

  /**
   * The keys of each job's revisions past its `limit` newest that it does not pin. Only the jobs
   * with more than `limit` revisions have their record and open executions read.
   */
  async #revisionsBeyond(limit: number): Promise<string[]> {
    if (!Number.isFinite(limit)) return [];
    const byJob = new Map<string, number[]>();
    for (const key of await this.#readKeys(REVISIONS)) {
      const [job = "", revision = ""] = key.slice(REVISIONS.length).split("/");
      const list = byJob.get(job) ?? [];
      list.push(Number(revision));
      byJob.set(job, list);
    }
    const doomed: string[] = [];
    for (const [job, revisions] of byJob) {
      if (revisions.length <= limit) continue;
      const stored = await this.#guard("read a job", () => this.#ns.get(`jobs/${job}`).string());
      const record = stored === null ? [] : [JSON.parse(stored) as JobRecord];
      const open = (await this.#readAll(`open/${job}/`)).map(([, value]) => JSON.parse(value) as ExecutionRecord);
      const pinned = pinnedRevisions(record, open).get(job);
      for (const revision of revisions.sort((a, b) => b - a).slice(limit)) {
        if (!pinned?.has(revision)) doomed.push(revisionKey(job, revision));
      }
    }
    return doomed;
  }

  /** Records how long the agent leases granted under this term still run, for the next leader. */
  async handOver(leasesEndWithinMs: number): Promise<void> {
    const refused = this.#refusal();
    if (refused !== undefined) throw refused;
    await this.#writerIdle;
    await this.#fenced(() => this.#txn([[HANDOVER_KEY, String(Math.ceil(leasesEndWithinMs))]]));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#writerIdle;
    await this.#applied.catch(() => undefined);
  }

  #refusal(): ShardlineError | undefined {
    if (!this.#opened || this.#closed) return new ShardlineError("failed-precondition", "the etcd store is not open");
    return this.#failure;
  }

  #readable(): void {
    if (!this.#opened || this.#closed) throw new ShardlineError("failed-precondition", "the etcd store is not open");
  }

  /** Writes every queued commit as one WAL entry, group after group, until the queue is empty. */
  async #writeQueued(): Promise<void> {
    this.#writing = true;
    while (this.#queue.length > 0) {
      const group = this.#queue;
      this.#queue = [];
      if (this.#failure !== undefined) {
        for (const pending of group) pending.reject(this.#failure);
        continue;
      }
      const batches = group.map((pending) => pending.batch);
      const entry = `${WAL}${pad(this.#term)}-${pad(++this.#seq)}`;
      try {
        await this.#fenced(() => this.#writeEntry(entry, JSON.stringify(batches)));
      } catch (error) {
        this.#fail(error);
        for (const pending of group) pending.reject(asStoreError("write", error));
        continue;
      }
      for (const pending of group) pending.resolve();
      void this.#chainApply(() => this.#fenced(() => this.#applyEntry(entry, batches))).catch((error: unknown) => this.#fail(error));
    }
    this.#writing = false;
  }

  #chainApply<T>(step: () => Promise<T>): Promise<T> {
    const result = this.#applied.then(step);
    this.#applied = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  async #writeEntry(entry: string, text: string): Promise<void> {
    if (Buffer.byteLength(text) <= MAX_VALUE_BYTES) {
      await this.#txn([[entry, text]]);
      return;
    }
    // Parts first, then the manifest that makes them count: a crash in between leaves parts
    // without a manifest, which the next leader deletes unapplied.
    const parts: string[] = [];
    // A UTF-16 unit is at most 3 bytes of UTF-8; a cut never splits a surrogate pair.
    const step = Math.floor(MAX_VALUE_BYTES / 3);
    for (let at = 0; at < text.length; ) {
      let end = Math.min(at + step, text.length);
      const last = text.charCodeAt(end - 1);
      if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
      parts.push(text.slice(at, end));
      at = end;
    }
    for (let i = 0; i < parts.length; i++) await this.#txn([[`${WAL_PART}${entry}/${pad(i)}`, parts[i]!]]);
    await this.#txn([[entry, JSON.stringify({ parts: parts.length })]]);
  }

  async #applyEntry(entry: string, batches: readonly StoreBatch[]): Promise<void> {
    const writes = writesOf(batches, await this.#heldRevisions(batches));
    for (const [key, log] of await this.#mergedLogs(batches)) writes.set(key, log);
    // The WAL entry's name makes each record's key unique, and the same when an entry is applied again.
    let n = 0;
    for (const batch of batches) for (const record of batch.audit ?? []) writes.set(auditKey(record.time, `${entry.slice(WAL.length)}-${n++}`), JSON.stringify(record));
    await this.#write(writes);
    const cleanup: Writes = new Map([[entry, null]]);
    for (const key of await this.#readKeys(`${WAL_PART}${entry}/`)) cleanup.set(key, null);
    await this.#write(cleanup);
  }

  /**
   * The revisions etcd holds now of each job whose revisions the batches make or delete: what
   * writesOf needs to keep a revision already held and to delete a job's. Read while applying,
   * in the apply chain, so they are those every earlier entry left.
   */
  async #heldRevisions(batches: readonly StoreBatch[]): Promise<Map<string, Set<number>>> {
    const jobs = new Set<string>();
    for (const batch of batches) {
      for (const revision of batch.revisions ?? []) jobs.add(revision.job);
      for (const name of batch.deletedJobs ?? []) jobs.add(name);
    }
    const held = new Map<string, Set<number>>();
    for (const job of jobs) {
      const prefix = `${REVISIONS}${job}/`;
      held.set(job, new Set((await this.#readKeys(prefix)).map((key) => Number(key.slice(prefix.length)))));
    }
    return held;
  }

  /**
   * The logs the batches add lines to, each merged with what etcd holds: read while applying, in
   * the apply chain, so each merge starts from what every earlier entry left.
   */
  async #mergedLogs(batches: readonly StoreBatch[]): Promise<Map<string, string>> {
    const merged = new Map<string, ExecutionLogRecord | undefined>();
    for (const batch of batches) {
      for (const chunk of batch.logs ?? []) {
        const key = LOGS + chunk.executionId;
        if (!merged.has(key)) {
          const value = await this.#guard("read an execution's log", () => this.#ns.get(key).string());
          merged.set(key, value === null ? undefined : (JSON.parse(value) as ExecutionLogRecord));
        }
        merged.set(key, mergeExecutionLog(merged.get(key), chunk));
      }
    }
    return new Map([...merged].map(([key, log]) => [key, JSON.stringify(log)]));
  }

  /** Applies the WAL entries a previous leader left, in order, and drops parts without a manifest. */
  async #recover(): Promise<void> {
    const entries = await this.#readAll(WAL);
    for (const [entry, value] of entries) {
      const head = JSON.parse(value) as StoreBatch[] | { parts: number };
      let batches: StoreBatch[];
      if (Array.isArray(head)) {
        batches = head;
      } else {
        const parts = await this.#readAll(`${WAL_PART}${entry}/`);
        if (parts.length !== head.parts) {
          throw new ShardlineError("internal", `etcd store: WAL entry ${entry} has ${parts.length} of its ${head.parts} parts`);
        }
        batches = JSON.parse(parts.map(([, text]) => text).join("")) as StoreBatch[];
      }
      await this.#applyEntry(entry, batches);
    }
    const orphans: Writes = new Map();
    for (const key of await this.#readKeys(WAL_PART)) orphans.set(key, null);
    await this.#write(orphans);
  }

  /** Puts and deletes in fenced transactions of at most MAX_TXN_OPS operations and about MAX_VALUE_BYTES. */
  async #write(writes: Writes): Promise<void> {
    let chunk: [string, string | null][] = [];
    let bytes = 0;
    for (const write of writes) {
      const size = write[0].length + (write[1] === null ? 0 : Buffer.byteLength(write[1]));
      if (chunk.length > 0 && (chunk.length >= MAX_TXN_OPS || bytes + size > MAX_VALUE_BYTES)) {
        await this.#txn(chunk);
        chunk = [];
        bytes = 0;
      }
      chunk.push(write);
      bytes += size;
    }
    if (chunk.length > 0) await this.#txn(chunk);
  }

  /** One transaction of puts and deletes that applies only while the term is still this store's. */
  async #txn(writes: readonly [string, string | null][]): Promise<void> {
    const ops = writes.map(([key, value]) => (value === null ? this.#ns.delete().key(key) : this.#ns.put(key).value(value)));
    const result = await this.#ns.if(TERM_KEY, "Value", "==", this.#termValue).then(...ops).commit();
    if (!result.succeeded) {
      const current = await this.#ns.get(TERM_KEY).string();
      throw new ShardlineError(
        "failed-precondition",
        `etcd store: this controller's term ${this.#term} is over (etcd holds term ${current ?? "none"}): another controller leads; nothing more is written`,
      );
    }
  }

  /** All keys and values under a prefix, in key order, a page at a time. */
  async #readAll(prefix: string): Promise<[string, string][]> {
    const rows: [string, string][] = [];
    const range = Range.prefix(prefix);
    let start: Buffer = range.start;
    for (;;) {
      const page = await this.#guard("read", () => this.#ns.getAll().inRange(new Range(start, range.end)).limit(PAGE).exec());
      for (const kv of page.kvs) rows.push([kv.key.toString(), kv.value.toString()]);
      if (!page.more || page.kvs.length === 0) return rows;
      start = Buffer.concat([page.kvs[page.kvs.length - 1]!.key, Buffer.from([0])]);
    }
  }

  async #readKeys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    const range = Range.prefix(prefix);
    let start: Buffer = range.start;
    for (;;) {
      const page = await this.#guard("read", () => this.#ns.getAll().inRange(new Range(start, range.end)).limit(PAGE).keys());
      keys.push(...page);
      if (page.length < PAGE) return keys;
      start = Buffer.concat([Buffer.from(page[page.length - 1]!), Buffer.from([0])]);
    }
  }

  /** Runs a fenced write, retrying while etcd is briefly unreachable; a lost term is never retried. */
  async #fenced<T>(write: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + RETRY_FOR_MS;
    for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
      try {
        return await write();
      } catch (error) {
        if (error instanceof ShardlineError || Date.now() + delay > deadline) throw asStoreError("write", error);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  async #guard<T>(action: string, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      throw asStoreError(action, error);
    }
  }

  #fail(error: unknown): void {
    this.#failure ??= new ShardlineError(
      "unavailable",
      `etcd store: a write failed, so no later commit is accepted: ${error instanceof Error ? error.message : String(error)}`,
      {},
      { cause: error },
    );
  }
}

/**
 * The key writes of a group of batches, in order: the last write of a key wins. Within a batch:
 * jobs, then revisions (one already held stays as it is), then deleted jobs with their revisions
 * (also those the batch made), cursors and executions. `held` has the revisions etcd holds of
 * each job whose revisions the batches make or delete; it is updated as the batches go.
 */
function writesOf(batches: readonly StoreBatch[], held: Map<string, Set<number>>): Writes {
  const writes: Writes = new Map();
  for (const batch of batches) {
    // The spec in the manifest's shape, as every version stored it: an older controller reads it too.
    for (const job of batch.jobs ?? []) writes.set(`jobs/${job.name}`, JSON.stringify({ ...job, spec: manifestShaped(job.spec) }));
    for (const r of batch.revisions ?? []) {
      let numbers = held.get(r.job);
      if (numbers === undefined) held.set(r.job, (numbers = new Set()));
      if (numbers.has(r.revision)) continue;
      numbers.add(r.revision);
      writes.set(revisionKey(r.job, r.revision), JSON.stringify({ ...r, spec: manifestShaped(r.spec) }));
    }
    for (const name of batch.deletedJobs ?? []) {
      writes.set(`jobs/${name}`, null);
      for (const revision of held.get(name) ?? []) writes.set(revisionKey(name, revision), null);
      held.delete(name);
    }
    for (const cursor of batch.cursors ?? []) writes.set(`cursors/${cursor.job}`, String(cursor.fireTime));
    for (const e of batch.executions ?? []) {
      if (TERMINAL_STATES.has(e.state)) {
        writes.set(`open/${e.id}`, null);
        writes.set(`done/${e.id}`, JSON.stringify(e));
      } else {
        writes.set(`open/${e.id}`, JSON.stringify(e));
      }
    }
  }
  return writes;
}

function asStoreError(action: string, error: unknown): ShardlineError {
  if (error instanceof ShardlineError) return error;
  return new ShardlineError("unavailable", `etcd store: could not ${action}: ${error instanceof Error ? error.message : String(error)}`, {}, { cause: error });
}

/** A job's revision's key: `revisions/JOB/REVISION`, zero-padded. */
/** An audit record's key: its time zero-padded (so keys sort in time order), then what makes it unique. */
function auditKey(time: number, unique: string): string {
  return `${AUDIT}${String(Math.max(0, Math.trunc(time))).padStart(15, "0")}-${unique}`;
}

function revisionKey(job: string, revision: number): string {
  return `${REVISIONS}${job}/${pad(revision)}`;
}

/** A stored revision, its spec read as every store reads one. */
function parseRevision(value: string): RevisionRecord {
  const record = JSON.parse(value) as RevisionRecord;
  return { ...record, spec: readStoredSpec(record.spec) };
}

/** A limit of at least 0, whole or infinite. */
function isCount(value: number): boolean {
  return value >= 0 && (Number.isInteger(value) || value === Infinity);
}

/** Fixed width, so keys sort in number order. */
function pad(n: number): string {
  return String(n).padStart(12, "0");
}

/** Oldest fire first, then shard, then attempt: the order a restart replays in. */
function byFireShardAttempt(a: ExecutionRecord, b: ExecutionRecord): number {
  return a.fireTime - b.fireTime || a.shard - b.shard || a.attempt - b.attempt;
}

/** The listing order: newest fire first; within a fire, shards in order and the latest attempt first. */
function listingOrder(a: { fireTime: number; shard: number; attempt: number }, b: { fireTime: number; shard: number; attempt: number }): number {
  return b.fireTime - a.fireTime || a.shard - b.shard || b.attempt - a.attempt;
}
