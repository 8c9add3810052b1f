import type Database from "better-sqlite3";
import { ShardlineError } from "../../../shared/errors.js";

/**
 * The schema as a list of migrations: migration i brings a file from `PRAGMA user_version` i to
 * i + 1. A later change appends a step and never edits an earlier one, so any older file upgrades
 * in place on the next open.
 */
export const MIGRATIONS: readonly string[] = [
  `
  -- One row: the term of the latest controller to open this store.
  CREATE TABLE meta (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    term INTEGER NOT NULL
  );

  CREATE TABLE jobs (
    name      TEXT PRIMARY KEY,
    manifest  TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    paused    INTEGER NOT NULL,
    revision  INTEGER NOT NULL
  ) WITHOUT ROWID;

  -- No foreign key to jobs: a cursor goes with its job in the same batch, by an explicit delete.
  CREATE TABLE cursors (
    job       TEXT PRIMARY KEY,
    fire_time INTEGER NOT NULL
  ) WITHOUT ROWID;

  -- No foreign key to jobs either: history outlives a deleted job until retention drops it.
  CREATE TABLE executions (
    id          TEXT PRIMARY KEY,
    job         TEXT NOT NULL,
    shard       INTEGER NOT NULL,
    fire_time   INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    state       TEXT NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    error       TEXT,
    result      TEXT,
    cause       TEXT NOT NULL,
    parameter   TEXT NOT NULL
  );

  -- The key columns follow the listing order (fire_time DESC, shard, attempt DESC) so a filtered
  -- listing with a limit walks the index instead of sorting the whole history.
  CREATE INDEX executions_by_job   ON executions (job, fire_time DESC, shard, attempt DESC);
  CREATE INDEX executions_by_fire  ON executions (fire_time DESC, shard, attempt DESC);
  CREATE INDEX executions_by_state ON executions (state, fire_time DESC, shard, attempt DESC);
  CREATE INDEX executions_by_agent ON executions (agent, fire_time DESC, shard, attempt DESC);
  `,
  `
  -- Shards an operator disabled, as a JSON array of shard numbers.
  ALTER TABLE jobs ADD COLUMN disabled_shards TEXT NOT NULL DEFAULT '[]';
  -- A retry waits until this instant before it may be dispatched.
  ALTER TABLE executions ADD COLUMN not_before INTEGER;
  `,
  `
  -- For a run of spec.onFireComplete: how each shard of its fire ended, as a JSON array.
  ALTER TABLE executions ADD COLUMN fire_outcome TEXT;
  `,
  `
  -- The W3C trace context an execution runs under, as a JSON object; NULL when it was not traced.
  ALTER TABLE executions ADD COLUMN trace_context TEXT;
  `,
  `
  -- The disconnect grace its agent was told at dispatch, in ms; NULL until dispatched.
  ALTER TABLE executions ADD COLUMN grace_ms INTEGER;
  `,
  `
  -- Each revision of a job, as applied: kept for rollout history and undo and for the runs
  -- pinned to it. No foreign key to jobs: a job's revisions go with it by an explicit delete.
  CREATE TABLE revisions (
    job        TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    manifest   TEXT NOT NULL,
    spec_json  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    applied_at INTEGER NOT NULL,
    applied_by TEXT NOT NULL,
    undo_of    INTEGER,
    PRIMARY KEY (job, revision)
  ) WITHOUT ROWID;
  -- The job revision an execution runs; NULL in rows written before revisions were kept.
  ALTER TABLE executions ADD COLUMN revision INTEGER;
  -- The job's rollout state as a JSON object; NULL when it has none.
  ALTER TABLE jobs ADD COLUMN rollout TEXT;
  `,
  `
  -- An execution's log (controller/core/execution-log.ts: kept_from, next_line, chars, lines),
  -- as a JSON object, bounded by the controller; a row only for an execution that wrote
  -- something. No foreign key: prune deletes the logs of the executions it deletes.
  CREATE TABLE execution_logs (
    execution_id TEXT PRIMARY KEY,
    log_json     TEXT NOT NULL
  ) WITHOUT ROWID;
  `,
  `
  -- The audit trail: every mutating admin call answered and every call refused for its caller,
  -- in the order recorded (seq); pruned by its own retention.
  CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time    INTEGER NOT NULL,
    caller  TEXT NOT NULL,
    role    TEXT NOT NULL,
    peer    TEXT NOT NULL,
    method  TEXT NOT NULL,
    target  TEXT NOT NULL,
    summary TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error   TEXT NOT NULL
  );
  CREATE INDEX audit_by_time ON audit (time);
  `,
  `
  -- Succeeded executions, most of the history, leave executions_by_state: an execution that
  -- succeeds then costs one index write fewer, and a listing of succeeded ones walks
  -- executions_by_fire (or _by_job, _by_agent), where nearly every row is one. A query names the
  -- condition (state <> 'succeeded') for SQLite to use the index.
  DROP INDEX executions_by_state;
  CREATE INDEX executions_by_state ON executions (state, fire_time DESC, shard, attempt DESC) WHERE state <> 'succeeded';
  `,
];

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Brings the file's schema up to SCHEMA_VERSION, one transaction per step, so a crash mid-way
 * leaves the file at a whole version. A file from a newer Shardline is refused rather than guessed at.
 */
export function migrate(db: Database.Database, location: string): void {
  const current = db.pragma("user_version", { simple: true }) as number;
  if (current > SCHEMA_VERSION) {
    throw new ShardlineError(
      "failed-precondition",
      `the SQLite store at ${location} has schema version ${current}, newer than this Shardline ` +
        `supports (${SCHEMA_VERSION}); upgrade Shardline`,
      { field: "--store", value: location },
    );
  }
  for (let version = current; version < SCHEMA_VERSION; version++) {
    const step = MIGRATIONS[version] as string;
    db.transaction(() => {
      db.exec(step);
      // PRAGMA takes no bound parameters; the value is an integer we computed.
      db.pragma(`user_version = ${version + 1}`);
    }).immediate();
  }
}
