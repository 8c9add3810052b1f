/**
 * Who holds an SQLite store. The file's lock (see sqlite-file.ts) keeps a second controller out
 * but does not say who holds it, so the holder writes these few lines beside the database once it
 * has the lock, and a refused controller reads them for its message. Only the lock is the truth:
 * a SIGKILLed holder leaves its record behind, and the next holder simply overwrites it.
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { ShardlineError } from "../../../shared/errors.js";

/** What a controller records about itself while it holds a store. */
export interface OwnerRecord {
  pid: number;
  host: string;
  /** When it took the lock, as an ISO 8601 instant. */
  since: string;
  /** The term it took on open. */
  term: number;
}

/** The record's path: `shardline.db` is recorded in `shardline.db.owner`, beside SQLite's `-wal`. */
export function ownerRecordPath(databasePath: string): string {
  return `${databasePath}.owner`;
}

/** Records this process as the holder of the store at `databasePath`, replacing any earlier record. */
export function writeOwnerRecord(databasePath: string, term: number): void {
  const record: OwnerRecord = { pid: process.pid, host: hostname(), since: new Date().toISOString(), term };
  writeFileSync(ownerRecordPath(databasePath), `${JSON.stringify(record)}\n`);
}

/**
 * Removes this holder's record on a clean close. The caller still holds the lock, so the record
 * is its own and never a newer holder's.
 */
export function removeOwnerRecord(databasePath: string): void {
  rmSync(ownerRecordPath(databasePath), { force: true });
}

/**
 * The refusal for a store whose lock another process holds, naming the holder as its record
 * says. Without a record (a holder that is starting and has not written it yet, or a program
 * other than Shardline, such as the sqlite3 shell) the message says so rather than guessing.
 */
export function storeInUse(databasePath: string, cause: unknown): ShardlineError {
  const recordPath = ownerRecordPath(databasePath);
  const owner = readOwnerRecord(recordPath);
  const holder =
    typeof owner === "string"
      ? `is locked by another process (${recordPath} ${owner})`
      : `is in use by another controller (pid ${owner.pid} on host ${owner.host}, in term ${owner.term} since ${owner.since}, as recorded in ${recordPath})`;
  return new ShardlineError(
    "failed-precondition",
    `the SQLite store at ${databasePath} ${holder}; a SQLite file takes one controller: stop that one first, ` +
      "or run several replicas on etcd (--store etcd://HOST:2379)",
    { field: "--store", value: databasePath },
    { cause },
  );
}

/** The record, or why there is none to show, worded to follow the record's path. */
function readOwnerRecord(recordPath: string): OwnerRecord | string {
  const noHolder = "names no holder: a controller that is still starting, or another program such as the sqlite3 shell";
  let text: string;
  try {
    text = readFileSync(recordPath, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return noHolder;
    return `cannot be read: ${error instanceof Error ? error.message : String(error)}`;
  }
  let value: Partial<OwnerRecord> | null;
  try {
    value = JSON.parse(text) as Partial<OwnerRecord> | null;
  } catch {
    // Torn: read while its holder was writing it.
    return noHolder;
  }
  const { pid, host, since, term } = value ?? {};
  if (typeof pid !== "number" || typeof host !== "string" || typeof since !== "string" || typeof term !== "number") return noHolder;
  return { pid, host, since, term };
}
