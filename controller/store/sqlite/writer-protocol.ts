import type { ErrorCode, ErrorDetails } from "../../../shared/errors.js";
import type { AuditQuery, AuditRecord, ExecutionLogRecord, ExecutionQuery, ExecutionRecord, RetentionPolicy, RevisionRecord, StoreBatch, StoreSnapshot } from "../store.js";
import type { ExecutionColumns } from "./execution-columns.js";

/** A StoreBatch as it crosses to the writer thread: its executions as columns. */
export type CommitBatch = Omit<StoreBatch, "executions"> & { executions?: ExecutionColumns };

/** What SqliteStore asks its writer thread, each with an id its reply carries back. */
export type WriterRequest =
  | { id: number; op: "open"; path: string }
  | { id: number; op: "commit"; batch: CommitBatch }
  | { id: number; op: "list"; query: ExecutionQuery }
  | { id: number; op: "get"; executionId: string }
  | { id: number; op: "log"; executionId: string }
  | { id: number; op: "audit"; query: AuditQuery }
  | { id: number; op: "revisions"; job: string }
  | { id: number; op: "revision"; job: string; revision: number }
  | { id: number; op: "prune"; policy: RetentionPolicy; now: number }
  | { id: number; op: "close" };

/** What each request resolves with. */
export interface WriterResults {
  open: StoreSnapshot;
  commit: undefined;
  list: ExecutionRecord[];
  get: ExecutionRecord | undefined;
  log: ExecutionLogRecord | undefined;
  audit: AuditRecord[];
  revisions: RevisionRecord[];
  revision: RevisionRecord | undefined;
  prune: number;
  close: undefined;
}

/** A ShardlineError as it crosses the thread boundary (a structured clone drops its class). */
export interface WriterError {
  code: ErrorCode;
  message: string;
  details: ErrorDetails;
  /** The message of the error's cause (the SQLite driver's), when it had one. */
  cause?: string;
}

export type WriterReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: WriterError };
