import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { ShardlineError } from "../../../shared/errors.js";
import type { AuditQuery, AuditRecord, ExecutionLogRecord, ExecutionQuery, ExecutionRecord, RetentionPolicy, RevisionRecord, Store, StoreBatch, StoreSnapshot } from "../store.js";
import { OpenExecutions, toColumns } from "./execution-columns.js";
import type { CommitBatch, WriterReply, WriterRequest, WriterResults } from "./writer-protocol.js";

type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void };

/**
 * The embedded store: one SQLite file in WAL mode, for a single controller. It is locked while
 * open, so a second store on the file, in this process or another, is refused naming the holder
 * (see sqlite-file.ts and owner-record.ts); the lock goes with the process. The file lives on a
 * thread of its own (writer-thread.ts), so statements and syncs to disk never block the event
 * loop, and commits queued during a sync share the next one. A commit's executions cross to it as
 * columns, an open one's update as only what changes (execution-columns.ts). A commit resolves once its batch is
 * on disk, so the shell may dispatch what it wrote; batches reach the disk in the order they
 * were committed, and after a failed commit every later one fails too.
 */
export class SqliteStore implements Store {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private state: "new" | "open" | "closed" = "new";
  /** Why a batch could not be handed to the thread: every later commit fails with it, as the thread's own failures do. */
  private handOverFailure: ShardlineError | undefined;
  /**
   * The executions the file holds open, as of the batches handed over so far. Those of the
   * snapshot are not in it: their next write is an upsert, as every write was before.
   */
  private readonly openInFile = new OpenExecutions();

  /** @param path a file path (its directory is created on open), or `:memory:`. */
  constructor(readonly path: string) {}

  /**
   * Opens and locks the file, upgrades its schema, takes the next term and loads what a
   * controller needs. Another holder's lock is a `failed-precondition` naming it, and this open
   * then changed nothing.
   */
  async open(): Promise<StoreSnapshot> {
    if (this.state !== "new") {
      throw new ShardlineError("failed-precondition", `the SQLite store at ${this.path} is already open`);
    }
    this.state = "open";
    this.worker = this.startWorker();
    try {
      return await this.ask("open", { path: this.path });
    } catch (error) {
      await this.stopWorker();
      this.state = "new";
      throw error;
    }
  }

  /** Writes the whole batch in one transaction; resolves once it is on disk, rejects having written nothing. */
  commit(batch: StoreBatch): Promise<void> {
    if (this.state !== "open") return this.notOpen();
    if (this.handOverFailure !== undefined) return Promise.reject(this.handOverFailure);
    let crossing: CommitBatch;
    try {
      const { executions, ...rest } = batch;
      crossing = executions === undefined ? rest : { ...rest, executions: toColumns(executions, this.openInFile) };
    } catch (err) {
      this.handOverFailure = new ShardlineError("unavailable", `SQLite store: could not commit a batch: ${err instanceof Error ? err.message : String(err)}`, {}, { cause: err });
      return Promise.reject(this.handOverFailure);
    }
    return this.ask("commit", { batch: crossing });
  }

  /** The execution history matching every given filter, newest fire first, at most `limit`. */
  listExecutions(query: ExecutionQuery): Promise<ExecutionRecord[]> {
    return this.ask("list", { query });
  }

  /** One execution by its id (`JOB/FIRE_UNIX_MS/SHARD/ATTEMPT`), if the store still holds it. */
  getExecution(id: string): Promise<ExecutionRecord | undefined> {
    return this.ask("get", { executionId: id });
  }

  /** An execution's log, if it wrote one and the store still holds it. */
  getExecutionLog(id: string): Promise<ExecutionLogRecord | undefined> {
    return this.ask("log", { executionId: id });
  }

  /** The audit trail, newest first. */
  listAudit(query: AuditQuery): Promise<AuditRecord[]> {
    return this.ask("audit", { query });
  }

  /** A job's revisions kept, newest first. */
  listRevisions(job: string): Promise<RevisionRecord[]> {
    return this.ask("revisions", { job });
  }

  /** One revision of a job, if the store still holds it. */
  getRevision(job: string, revision: number): Promise<RevisionRecord | undefined> {
    return this.ask("revision", { job, revision });
  }

  /**
   * Deletes finished executions whose fire is older than `now - maxAgeMs`, then those beyond the
   * `maxPerJob` newest finished ones of each job, then each job's revisions beyond its
   * `revisionsPerJob` newest (but its current one, its rollout's stable one and those open
   * executions name), in one transaction. Pending and running executions are never touched. An
   * infinite limit disables that rule. Resolves with how many executions it deleted.
   */
  prune(policy: RetentionPolicy, now: number): Promise<number> {
    return this.ask("prune", { policy, now });
  }

  /** Closes the file once everything asked before is done; a second close does nothing. */
  async close(): Promise<void> {
    if (this.state !== "open") return;
    try {
      await this.ask("close", {});
    } finally {
      this.state = "closed";
      await this.stopWorker();
    }
  }

  private ask<K extends WriterRequest["op"]>(
    op: K,
    fields: Omit<Extract<WriterRequest, { op: K }>, "id" | "op">,
  ): Promise<WriterResults[K]> {
    const worker = this.worker;
    if (this.state !== "open" || worker === undefined) return this.notOpen();
    const id = ++this.nextId;
    return new Promise<WriterResults[K]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      // The thread keeps the process alive only while it owes an answer.
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ id, op, ...fields });
    });
  }

  private notOpen(): Promise<never> {
    return Promise.reject(new ShardlineError("failed-precondition", `the SQLite store at ${this.path} is not open`));
  }

  private startWorker(): Worker {
    const worker = new Worker(writerThreadScript());
    worker.unref();
    worker.on("message", (reply: WriterReply) => {
      const waiting = this.pending.get(reply.id);
      if (waiting === undefined) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if (reply.ok) {
        waiting.resolve(reply.value);
      } else {
        const { code, message, details, cause } = reply.error;
        waiting.reject(new ShardlineError(code, message, details, cause === undefined ? undefined : { cause: new Error(cause) }));
      }
    });
    const failAll = (error: Error): void => {
      for (const waiting of this.pending.values()) waiting.reject(error);
      this.pending.clear();
    };
    worker.on("error", (error) => {
      failAll(new ShardlineError("unavailable", `SQLite store at ${this.path}: its thread failed: ${error.message}`, {}, { cause: error }));
    });
    worker.on("exit", (code) => {
      if (this.worker === worker) this.worker = undefined;
      failAll(new ShardlineError("unavailable", `SQLite store at ${this.path}: its thread exited (${code})`));
    });
    return worker;
  }

  private async stopWorker(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    if (worker !== undefined) await worker.terminate();
  }
}

/**
 * The thread's script. Built, it sits beside this module. Under vitest this module runs from its
 * TypeScript source, which Node 20 cannot start as a thread, so the build's copy is used: `npm
 * test` builds first.
 */
function writerThreadScript(): URL {
  const own = import.meta.url;
  if (!own.endsWith(".ts")) return new URL("./writer-thread.js", own);
  const built = new URL("../../../dist/controller/store/sqlite/writer-thread.js", own);
  if (!existsSync(fileURLToPath(built))) {
    throw new ShardlineError("failed-precondition", `the SQLite store's thread is not built (${fileURLToPath(built)}): run npm run build`);
  }
  return built;
}
