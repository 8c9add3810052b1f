import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { ShardlineError } from "../../../shared/errors.js";
import { OPEN_STATES } from "../../../shared/execution-state.js";
import type {
  AuditQuery,
  AuditRecord,
  ExecutionCause,
  ExecutionLogRecord,
  ExecutionQuery,
  ExecutionRecord,
  ExecutionStateName,
  JobRecord,
  RetentionPolicy,
  RevisionRecord,
  RolloutState,
  ShardOutcome,
  StoreSnapshot,
} from "../store.js";
import { manifestShaped } from "../../../shared/manifest/index.js";
import { readStoredSpec } from "../stored-spec.js";
import { removeOwnerRecord, storeInUse, writeOwnerRecord } from "./owner-record.js";
import { migrate } from "./schema.js";
import { mergeExecutionLog } from "../../core/execution-log.js";
import { ColumnReader, type ExecutionColumns, RowKind } from "./execution-columns.js";
import type { CommitBatch } from "./writer-protocol.js";

/** The path better-sqlite3 reads as a private in-memory database (for tests). */
export const IN_MEMORY = ":memory:";

/** The states the store treats as open; everything else is terminal and may be pruned. */
const OPEN_STATES_SQL = `(${OPEN_STATES.map((state) => `'${state}'`).join(", ")})`;

/**
 * The condition of executions_by_state (schema migration 9): a query by a state other than
 * succeeded says it too, as SQLite uses a partial index only for a query that names its condition.
 */
const IN_STATE_INDEX = "state <> 'succeeded'";

/** Open executions, by executions_by_state. */
const OPEN = `state IN ${OPEN_STATES_SQL} AND ${IN_STATE_INDEX}`;

const EXECUTION_COLUMNS =
  "id, job, shard, fire_time, attempt, agent, state, started_at, finished_at, error, result, cause, parameter, not_before, fire_outcome, trace_context, grace_ms, revision";

const REVISION_COLUMNS = "job, revision, manifest, spec_json, hash, applied_at, applied_by, undo_of";

/**
 * The (job, revision) pairs retention keeps and a snapshot loads: each job's current revision, its
 * rollout's stable one, and each one an open execution names. None is NULL, so NOT IN may use it.
 */
const PINNED_REVISIONS = `
  SELECT name, revision FROM jobs
  UNION SELECT name, json_extract(rollout, '$.stableRevision') FROM jobs WHERE json_extract(rollout, '$.stableRevision') IS NOT NULL
  UNION SELECT job, revision FROM executions WHERE ${OPEN} AND revision IS NOT NULL`;

/** Newest fire first; within a fire, shards in order and the latest attempt first. */
const EXECUTION_ORDER = "fire_time DESC, shard ASC, attempt DESC";

interface ExecutionRow {
  id: string;
  job: string;
  shard: number;
  fire_time: number;
  attempt: number;
  agent: string;
  state: string;
  started_at: number | null;
  finished_at: number | null;
  error: string | null;
  result: string | null;
  cause: string;
  parameter: string;
  not_before: number | null;
  fire_outcome: string | null;
  trace_context: string | null;
  grace_ms: number | null;
  revision: number | null;
}

interface JobRow {
  name: string;
  manifest: string;
  spec_json: string;
  paused: number;
  revision: number;
  disabled_shards: string;
  rollout: string | null;
}

interface RevisionRow {
  job: string;
  revision: number;
  manifest: string;
  spec_json: string;
  hash: string;
  applied_at: number;
  applied_by: string;
  undo_of: number | null;
}

/** An execution's parameters; a required one is null only in a malformed record, which then fails its NOT NULL constraint. */
type ExecutionParams = [
  string | null,
  string | null,
  number,
  number,
  number,
  string | null,
  string | null,
  number | null,
  number | null,
  string | null,
  string | null,
  string | null,
  string | null,
  number | null,
  string | null,
  string | null,
  number | null,
  number | null,
];

/** An update of an open execution: state, started_at, finished_at, error, result, not_before, fire_outcome, grace_ms, revision, then its id. */
type ExecutionUpdateParams = [string | null, number | null, number | null, string | null, string | null, number | null, string | null, number | null, number | null, string | null];

/**
 * A listing's WHERE clause from the filters given (a filter whose value is undefined is left out)
 * and its parameters, the limit last. Throws for a limit that is not a count.
 */
function filtered(limit: number, filters: readonly [unknown, string][]): { where: string; params: unknown[] } {
  if (!Number.isSafeInteger(limit) || limit < 0) throw ShardlineError.invalid("limit", limit, "an integer of at least 0");
  const given = filters.filter(([value]) => value !== undefined);
  return {
    where: given.length === 0 ? "" : `WHERE ${given.map(([, clause]) => clause).join(" AND ")}`,
    params: [...given.map(([value]) => value), limit],
  };
}

/**
 * An execution listing's SQL and parameters: every given filter, newest fire first, the limit last.
 * Throws for a limit that is not a count.
 */
export function executionListing(query: ExecutionQuery): { sql: string; params: unknown[] } {
  const { where, params } = filtered(query.limit, [
    [query.job, "job = ?"],
    [query.shard, "shard = ?"],
    [query.agent, "agent = ?"],
    [query.state, query.state === "succeeded" ? "state = ?" : `state = ? AND ${IN_STATE_INDEX}`],
    [query.since, "fire_time >= ?"],
    [query.until, "fire_time < ?"],
  ]);
  return { sql: `SELECT ${EXECUTION_COLUMNS} FROM executions ${where} ORDER BY ${EXECUTION_ORDER} LIMIT ?`, params };
}

/** The audit table's columns, named as AuditRecord's fields. */
const AUDIT_COLUMNS = "time, caller, role, peer, method, target, summary, outcome, error";

/** The statements prepared once per open file. */
interface Statements {
  bumpTerm: Database.Statement<[], { term: number }>;
  allJobs: Database.Statement<[], JobRow>;
  allCursors: Database.Statement<[], { job: string; fire_time: number }>;
  openExecutions: Database.Statement<[], ExecutionRow>;
  settledOfOpenFires: Database.Statement<[], ExecutionRow>;
  upsertJob: Database.Statement<[string, string, string, number, number, string, string | null]>;
  deleteJob: Database.Statement<[string]>;
  insertRevision: Database.Statement<[string, number, string, string, string, number, string, number | null]>;
  deleteRevisions: Database.Statement<[string]>;
  listRevisions: Database.Statement<[string], RevisionRow>;
  getRevision: Database.Statement<[string, number], RevisionRow>;
  pinnedRevisions: Database.Statement<[], RevisionRow>;
  pruneRevisions: Database.Statement<[number]>;
  upsertCursor: Database.Statement<[string, number]>;
  upsertExecution: Database.Statement<ExecutionParams>;
  updateExecution: Database.Statement<ExecutionUpdateParams>;
  updateExecutionAndAgent: Database.Statement<[string | null, ...ExecutionUpdateParams]>;
  getExecution: Database.Statement<[string], ExecutionRow>;
  pruneByAge: Database.Statement<[number]>;
  pruneByCount: Database.Statement<[number]>;
  getLog: Database.Statement<[string], { log_json: string }>;
  upsertLog: Database.Statement<[string, string]>;
  pruneLogs: Database.Statement<[]>;
  insertAudit: Database.Statement<[number, string, string, string, string, string, string, string, string]>;
  pruneAuditByAge: Database.Statement<[number]>;
  pruneAuditByCount: Database.Statement<[number]>;
}

/**
 * One open SQLite file in WAL mode, used synchronously: the store's writer thread owns it (see
 * writer-thread.ts), so nothing here runs on the controller's event loop. Every commit is one
 * transaction synced to disk before it returns.
 *
 * The file is locked from open to close: one writer per store. Two controllers on one file would
 * both fire every shard, so a second open, from this process or another, is refused before it
 * reads or writes anything (its term is not taken). The lock is the OS's, so it goes with the
 * process however it ends; who holds it is recorded beside the file (owner-record.ts).
 */
export class SqliteFile {
  /** Listing statements by the set of filters used, so each shape is prepared once. */
  /** Listing statements by their SQL, prepared on first use (one per combination of filters). */
  private readonly listings = new Map<string, Database.Statement<unknown[], unknown>>();

  private constructor(
    readonly path: string,
    private readonly db: Database.Database,
    private readonly s: Statements,
  ) {}

  /**
   * Opens and locks the file (creating its directory), upgrades its schema, takes the next term,
   * records this process as its holder and loads what a controller needs. `path` may be
   * IN_MEMORY, which takes no lock and writes no record.
   */
  static open(path: string): { file: SqliteFile; snapshot: StoreSnapshot } {
    const db = openFile(path);
    try {
      const s = prepareStatements(db);
      // IMMEDIATE takes the write lock first, so the term and the snapshot belong together; in
      // exclusive locking mode this is also the file's lock, kept until close.
      const snapshot = db
        .transaction((): StoreSnapshot => {
          const row = s.bumpTerm.get();
          if (row === undefined) throw new Error("the term was not written");
          return {
            term: row.term,
            jobs: s.allJobs.all().map(toJobRecord),
            cursors: new Map(s.allCursors.all().map((c) => [c.job, c.fire_time])),
            openExecutions: s.openExecutions.all().map(toExecutionRecord),
            settledOfOpenFires: s.settledOfOpenFires.all().map(toExecutionRecord),
            revisions: s.pinnedRevisions.all().map(toRevisionRecord),
          };
        })
        .immediate();
      if (path !== IN_MEMORY) writeOwnerRecord(path, snapshot.term);
      return { file: new SqliteFile(path, db, s), snapshot };
    } catch (err) {
      db.close();
      throw openError(path, err);
    }
  }

  /**
   * Writes the batches, in order, in one transaction: all of them or, when one fails, none.
   * Batches that reach the writer together share one sync to disk (group commit).
   */
  commit(batches: readonly CommitBatch[]): void {
    const { db, s } = this;
    guard("commit a batch", () =>
      db
        .transaction(() => {
          for (const batch of batches) writeBatch(s, batch);
        })
        .immediate(),
    );
  }

  /** The execution history matching every given filter, newest fire first, at most `limit`. */
  listExecutions(query: ExecutionQuery): ExecutionRecord[] {
    const { sql, params } = executionListing(query);
    return guard("list executions", () => this.#listing<ExecutionRow>(sql).all(...params).map(toExecutionRecord));
  }

  /** The prepared statement of a listing's SQL, prepared once. */
  #listing<Row>(sql: string): Database.Statement<unknown[], Row> {
    let statement = this.listings.get(sql);
    if (statement === undefined) {
      statement = this.db.prepare<unknown[], unknown>(sql);
      this.listings.set(sql, statement);
    }
    return statement as Database.Statement<unknown[], Row>;
  }

  /** One execution by its id (`JOB/FIRE_UNIX_MS/SHARD/ATTEMPT`), if the file still holds it. */
  getExecution(id: string): ExecutionRecord | undefined {
    return guard("read an execution", () => {
      const row = this.s.getExecution.get(id);
      return row === undefined ? undefined : toExecutionRecord(row);
    });
  }

  /** An execution's log, if it wrote one and the file still holds it. */
  getExecutionLog(id: string): ExecutionLogRecord | undefined {
    return guard("read an execution's log", () => {
      const row = this.s.getLog.get(id);
      return row === undefined ? undefined : (JSON.parse(row.log_json) as ExecutionLogRecord);
    });
  }

  /** The audit trail matching every given filter, newest first, at most `limit`. */
  listAudit(query: AuditQuery): AuditRecord[] {
    const { where, params } = filtered(query.limit, [
      [query.since, "time >= ?"],
      [query.caller, "caller = ?"],
      [query.target, "target = ?"],
    ]);
    return guard("list the audit trail", () => this.#listing<AuditRecord>(`SELECT ${AUDIT_COLUMNS} FROM audit ${where} ORDER BY seq DESC LIMIT ?`).all(...params));
  }

  /** A job's revisions kept, newest first. */
  listRevisions(job: string): RevisionRecord[] {
    return guard("list revisions", () => this.s.listRevisions.all(job).map(toRevisionRecord));
  }

  /** One revision of a job, if the file holds it. */
  getRevision(job: string, revision: number): RevisionRecord | undefined {
    return guard("read a revision", () => {
      const row = this.s.getRevision.get(job, revision);
      return row === undefined ? undefined : toRevisionRecord(row);
    });
  }

  /**
   * Deletes finished executions whose fire is older than `now - maxAgeMs`, then those beyond the
   * `maxPerJob` newest finished ones of each job, then each job's revisions beyond its
   * `revisionsPerJob` newest but for those pinned (PINNED_REVISIONS), in one transaction. Pending
   * and running executions are never touched. An infinite limit disables that rule. Returns how
   * many executions it deleted.
   */
  prune(policy: RetentionPolicy, now: number): number {
    if (!(policy.maxAgeMs >= 0)) {
      throw ShardlineError.invalid("maxAgeMs", policy.maxAgeMs, "a number of milliseconds of at least 0");
    }
    if (!isCount(policy.maxPerJob)) throw ShardlineError.invalid("maxPerJob", policy.maxPerJob, "an integer of at least 0");
    if (!isCount(policy.revisionsPerJob)) throw ShardlineError.invalid("revisionsPerJob", policy.revisionsPerJob, "an integer of at least 0");
    const { db, s } = this;
    return guard("prune executions", () =>
      db
        .transaction((): number => {
          let deleted = 0;
          if (Number.isFinite(policy.maxAgeMs)) deleted += s.pruneByAge.run(now - policy.maxAgeMs).changes;
          if (Number.isFinite(policy.maxPerJob)) deleted += s.pruneByCount.run(policy.maxPerJob).changes;
          if (Number.isFinite(policy.revisionsPerJob)) s.pruneRevisions.run(policy.revisionsPerJob);
          if (deleted > 0) s.pruneLogs.run();
          if (policy.audit !== undefined) {
            if (Number.isFinite(policy.audit.maxAgeMs)) s.pruneAuditByAge.run(now - policy.audit.maxAgeMs);
            if (Number.isFinite(policy.audit.maxRecords)) s.pruneAuditByCount.run(policy.audit.maxRecords);
          }
          return deleted;
        })
        .immediate(),
    );
  }

  /** Closes the file, which lets go of its lock; the holder's record goes first, while it is still ours. */
  close(): void {
    this.listings.clear();
    guard("close the store", () => {
      try {
        if (this.path !== IN_MEMORY) removeOwnerRecord(this.path);
      } finally {
        this.db.close();
      }
    });
  }
}

function openFile(path: string): Database.Database {
  let db: Database.Database | undefined;
  try {
    if (path !== IN_MEMORY) mkdirSync(dirname(path), { recursive: true });
    // No busy timeout: a lock held by another connection is held for that controller's life, so
    // waiting would only delay the refusal. Once this one holds the lock nothing else can take
    // one, so none is needed later either. Of two controllers opening at the same instant at
    // most one gets the lock (rarely neither: each is refused, and a restart settles it).
    db = new Database(path, { timeout: 0 });
    // EXCLUSIVE before WAL: the first read then takes a shared lock and the first write (the
    // term's, in open) the exclusive lock, and neither is ever let go until close; the WAL index
    // lives in this connection's memory rather than in a -shm file others could map.
    if (path !== IN_MEMORY) db.pragma("locking_mode = EXCLUSIVE");
    // FULL syncs the WAL on every commit, because a commit must survive power loss before the
    // controller dispatches what it recorded.
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    migrate(db, path);
    return db;
  } catch (err) {
    db?.close();
    throw openError(path, err);
  }
}

/** A limit of at least 0, whole or infinite. */
function isCount(value: number): boolean {
  return value >= 0 && (Number.isInteger(value) || value === Infinity);
}

/**
 * One batch's writes: jobs, then revisions (one already held stays as it is), then deleted jobs
 * with their revisions (also those the batch made), cursors and executions.
 */
function writeBatch(s: Statements, batch: CommitBatch): void {
  for (const job of batch.jobs ?? []) {
    s.upsertJob.run(
      job.name,
      job.manifest,
      // In the manifest's shape, as every version stored it: an older controller reads it too.
      JSON.stringify(manifestShaped(job.spec)),
      job.paused ? 1 : 0,
      job.revision,
      JSON.stringify(job.disabledShards ?? []),
      job.rollout === undefined ? null : JSON.stringify(job.rollout),
    );
  }
  for (const r of batch.revisions ?? []) {
    s.insertRevision.run(
      r.job,
      r.revision,
      r.manifest,
      // As a job's spec is stored (see above).
      JSON.stringify(manifestShaped(r.spec)),
      r.hash,
      r.appliedAt,
      r.appliedBy,
      r.undoOf ?? null,
    );
  }
  for (const name of batch.deletedJobs ?? []) {
    s.deleteJob.run(name);
    s.deleteRevisions.run(name);
  }
  for (const cursor of batch.cursors ?? []) {
    s.upsertCursor.run(cursor.job, cursor.fireTime);
  }
  if (batch.executions !== undefined) writeExecutions(s, batch.executions);
  for (const a of batch.audit ?? []) s.insertAudit.run(a.time, a.caller, a.role, a.peer, a.method, a.target, a.summary, a.outcome, a.error);
  for (const chunk of batch.logs ?? []) {
    const row = s.getLog.get(chunk.executionId);
    const stored = row === undefined ? undefined : (JSON.parse(row.log_json) as ExecutionLogRecord);
    s.upsertLog.run(chunk.executionId, JSON.stringify(mergeExecutionLog(stored, chunk)));
  }
}

/**
 * Writes each row of `c`, in order: a whole row by the upsert, an update of an open execution by
 * the UPDATE of what changes. An update that finds no row means the store's side was wrong about
 * the file (see OpenExecutions): the commit fails rather than lose the record.
 */
function writeExecutions(s: Statements, c: ExecutionColumns): void {
  const e = new ColumnReader(c);
  while (e.next()) {
    if (e.kind === RowKind.whole) {
      s.upsertExecution.run(
        e.id,
        e.job,
        e.shard,
        e.fireTime,
        e.attempt,
        e.agent,
        e.state,
        e.startedAt,
        e.finishedAt,
        e.error,
        e.result,
        e.cause,
        e.parameter,
        e.notBefore,
        e.fireOutcome,
        e.traceContext,
        e.graceMs,
        e.revision,
      );
      continue;
    }
    const changed =
      e.kind === RowKind.update
        ? s.updateExecution.run(e.state, e.startedAt, e.finishedAt, e.error, e.result, e.notBefore, e.fireOutcome, e.graceMs, e.revision, e.id)
        : s.updateExecutionAndAgent.run(e.agent, e.state, e.startedAt, e.finishedAt, e.error, e.result, e.notBefore, e.fireOutcome, e.graceMs, e.revision, e.id);
    if (changed.changes !== 1) {
      throw new ShardlineError("internal", `SQLite store: execution ${e.id} was written as open but the file does not hold it`, { field: "executions", value: e.id ?? "" });
    }
  }
}

function prepareStatements(db: Database.Database): Statements {
  return {
    bumpTerm: db.prepare(
      "INSERT INTO meta (id, term) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET term = term + 1 RETURNING term",
    ),
    allJobs: db.prepare("SELECT name, manifest, spec_json, paused, revision, disabled_shards, rollout FROM jobs ORDER BY name"),
    allCursors: db.prepare("SELECT job, fire_time FROM cursors"),
    openExecutions: db.prepare(
      `SELECT ${EXECUTION_COLUMNS} FROM executions WHERE ${OPEN}
       ORDER BY fire_time, shard, attempt`,
    ),
    // Walks from the open executions (few) to their fires' other rows through executions_by_job.
    settledOfOpenFires: db.prepare(
      `SELECT ${EXECUTION_COLUMNS.split(", ").map((c) => `e.${c}`).join(", ")}
       FROM (SELECT DISTINCT job, fire_time FROM executions WHERE ${OPEN}) AS f
       JOIN executions AS e ON e.job = f.job AND e.fire_time = f.fire_time
       WHERE e.state NOT IN ${OPEN_STATES_SQL}
       ORDER BY e.fire_time, e.shard, e.attempt`,
    ),
    upsertJob: db.prepare(
      `INSERT INTO jobs (name, manifest, spec_json, paused, revision, disabled_shards, rollout) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest, spec_json = excluded.spec_json,
         paused = excluded.paused, revision = excluded.revision, disabled_shards = excluded.disabled_shards,
         rollout = excluded.rollout`,
    ),
    deleteJob: db.prepare("DELETE FROM jobs WHERE name = ?"),
    // Revisions never change: writing one again keeps the first.
    insertRevision: db.prepare(
      `INSERT INTO revisions (${REVISION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job, revision) DO NOTHING`,
    ),
    deleteRevisions: db.prepare("DELETE FROM revisions WHERE job = ?"),
    listRevisions: db.prepare(`SELECT ${REVISION_COLUMNS} FROM revisions WHERE job = ? ORDER BY revision DESC`),
    getRevision: db.prepare(`SELECT ${REVISION_COLUMNS} FROM revisions WHERE job = ? AND revision = ?`),
    pinnedRevisions: db.prepare(
      `SELECT ${REVISION_COLUMNS} FROM revisions WHERE (job, revision) IN (${PINNED_REVISIONS}) ORDER BY job, revision`,
    ),
    // Ranks each job's revisions newest first and drops those past the limit that nothing pins.
    pruneRevisions: db.prepare(
      `DELETE FROM revisions WHERE (job, revision) IN (
         SELECT job, revision FROM (
           SELECT job, revision, ROW_NUMBER() OVER (PARTITION BY job ORDER BY revision DESC) AS rank FROM revisions
         ) WHERE rank > ?
       ) AND (job, revision) NOT IN (${PINNED_REVISIONS})`,
    ),
    upsertCursor: db.prepare(
      "INSERT INTO cursors (job, fire_time) VALUES (?, ?) ON CONFLICT (job) DO UPDATE SET fire_time = excluded.fire_time",
    ),
    // The id fixes job, fire time, shard and attempt (and with them cause, parameter and trace
    // context), so an update sets only what changes: SQLite then leaves the indexes on the fixed
    // columns alone.
    upsertExecution: db.prepare(
      `INSERT INTO executions (${EXECUTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET agent = excluded.agent, state = excluded.state,
         started_at = excluded.started_at, finished_at = excluded.finished_at, error = excluded.error,
         result = excluded.result, not_before = excluded.not_before, fire_outcome = excluded.fire_outcome,
         grace_ms = excluded.grace_ms, revision = excluded.revision`,
    ),
    // What the upsert's update sets, of an execution the file holds (see OpenExecutions): without
    // agent, SQLite leaves executions_by_agent alone.
    updateExecution: db.prepare(
      `UPDATE executions SET state = ?, started_at = ?, finished_at = ?, error = ?, result = ?, not_before = ?,
         fire_outcome = ?, grace_ms = ?, revision = ? WHERE id = ?`,
    ),
    updateExecutionAndAgent: db.prepare(
      `UPDATE executions SET agent = ?, state = ?, started_at = ?, finished_at = ?, error = ?, result = ?, not_before = ?,
         fire_outcome = ?, grace_ms = ?, revision = ? WHERE id = ?`,
    ),
    getExecution: db.prepare(`SELECT ${EXECUTION_COLUMNS} FROM executions WHERE id = ?`),
    pruneByAge: db.prepare(
      `DELETE FROM executions WHERE state NOT IN ${OPEN_STATES_SQL} AND fire_time < ?`,
    ),
    // Ranks each job's finished executions in listing order and drops those past the limit.
    pruneByCount: db.prepare(
      `DELETE FROM executions WHERE id IN (
         SELECT id FROM (
           SELECT id, ROW_NUMBER() OVER (PARTITION BY job ORDER BY ${EXECUTION_ORDER}) AS rank
           FROM executions WHERE state NOT IN ${OPEN_STATES_SQL}
         ) WHERE rank > ?
       )`,
    ),
    getLog: db.prepare("SELECT log_json FROM execution_logs WHERE execution_id = ?"),
    upsertLog: db.prepare(
      "INSERT INTO execution_logs (execution_id, log_json) VALUES (?, ?) ON CONFLICT (execution_id) DO UPDATE SET log_json = excluded.log_json",
    ),
    // A log goes with its execution: whatever prune deleted, by age or by count.
    pruneLogs: db.prepare("DELETE FROM execution_logs WHERE execution_id NOT IN (SELECT id FROM executions)"),
    insertAudit: db.prepare(`INSERT INTO audit (${AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    pruneAuditByAge: db.prepare("DELETE FROM audit WHERE time < ?"),
    // Keeps the newest N: deletes from the oldest up to the (N+1)th newest.
    pruneAuditByCount: db.prepare("DELETE FROM audit WHERE seq <= (SELECT seq FROM audit ORDER BY seq DESC LIMIT 1 OFFSET ?)"),
  };
}

function toJobRecord(row: JobRow): JobRecord {
  return {
    name: row.name,
    manifest: row.manifest,
    spec: readStoredSpec(JSON.parse(row.spec_json)),
    paused: row.paused !== 0,
    revision: row.revision,
    disabledShards: JSON.parse(row.disabled_shards) as number[],
    // Absent rather than undefined, so a record reads back exactly as it was written.
    ...(row.rollout === null ? {} : { rollout: JSON.parse(row.rollout) as RolloutState }),
  };
}

function toRevisionRecord(row: RevisionRow): RevisionRecord {
  const record: RevisionRecord = {
    job: row.job,
    revision: row.revision,
    manifest: row.manifest,
    spec: readStoredSpec(JSON.parse(row.spec_json)),
    hash: row.hash,
    appliedAt: row.applied_at,
    appliedBy: row.applied_by,
  };
  if (row.undo_of !== null) record.undoOf = row.undo_of;
  return record;
}

function toExecutionRecord(row: ExecutionRow): ExecutionRecord {
  const record: ExecutionRecord = {
    id: row.id,
    job: row.job,
    shard: row.shard,
    fireTime: row.fire_time,
    attempt: row.attempt,
    agent: row.agent,
    state: row.state as ExecutionStateName,
    cause: row.cause as ExecutionCause,
    parameter: row.parameter,
  };
  // Absent rather than undefined, so a record reads back exactly as it was written.
  if (row.started_at !== null) record.startedAt = row.started_at;
  if (row.finished_at !== null) record.finishedAt = row.finished_at;
  if (row.error !== null) record.error = row.error;
  if (row.result !== null) record.result = row.result;
  if (row.not_before !== null) record.notBefore = row.not_before;
  if (row.fire_outcome !== null) record.fireOutcome = JSON.parse(row.fire_outcome) as ShardOutcome[];
  if (row.trace_context !== null) record.traceContext = JSON.parse(row.trace_context) as Record<string, string>;
  if (row.grace_ms !== null) record.disconnectGraceMs = row.grace_ms;
  if (row.revision !== null) record.revision = row.revision;
  return record;
}

/** Runs one store operation, turning a driver error into `unavailable` with the cause kept. */
function guard<T>(action: string, operation: () => T): T {
  try {
    return operation();
  } catch (err) {
    if (err instanceof ShardlineError) throw err;
    throw new ShardlineError("unavailable", `SQLite store: could not ${action}: ${messageOf(err)}`, {}, { cause: err });
  }
}

/**
 * A file that cannot be opened, is not a database, or cannot be written will not get better by
 * retrying, so it is `failed-precondition`. So is a file locked by another process: its
 * controller holds the lock for its whole life, and the message names it as its record says.
 * Every refusal names the path for the operator.
 */
function openError(path: string, err: unknown): ShardlineError {
  if (err instanceof ShardlineError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))) return storeInUse(path, err);
  return new ShardlineError(
    "failed-precondition",
    `cannot open the SQLite store at ${path}: ${messageOf(err)}`,
    { field: "--store", value: path },
    { cause: err },
  );
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
