/**
 * The SQLite store's own thread: it owns the file and runs every statement, so the controller's
 * event loop never waits on SQLite or on a sync to disk. Requests are answered in the order they
 * came. Commits that queue up while a sync is under way are written together, in order, in one
 * transaction (group commit): the sync to disk is what a commit costs, and under load one sync
 * then serves many event-loop turns.
 *
 * Once a commit fails, every later one fails with the same error: the file then always holds a
 * prefix of the batches in the order they were made, never a later batch without an earlier one.
 */
import { parentPort, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { ShardlineError } from "../../../shared/errors.js";
import { SqliteFile } from "./sqlite-file.js";
import type { CommitBatch, WriterError, WriterReply, WriterRequest } from "./writer-protocol.js";

const port: MessagePort = parentPort ?? fail("writer-thread.js runs only as a worker thread of SqliteStore");
let file: SqliteFile | undefined;
let commitFailure: WriterError | undefined;

port.on("message", (first: WriterRequest) => {
  // Everything already queued behind this request is taken now, so commits can be grouped.
  const requests = [first];
  for (let next = receiveMessageOnPort(port); next !== undefined; next = receiveMessageOnPort(port)) {
    requests.push(next.message as WriterRequest);
  }
  let i = 0;
  while (i < requests.length) {
    const request = requests[i]!;
    if (request.op !== "commit") {
      reply(request.id, () => serve(request));
      i++;
      continue;
    }
    let end = i;
    while (end < requests.length && requests[end]!.op === "commit") end++;
    const group = requests.slice(i, end) as Extract<WriterRequest, { op: "commit" }>[];
    commitGroup(group.map((r) => r.id), group.map((r) => r.batch));
    i = end;
  }
});

function serve(request: Exclude<WriterRequest, { op: "commit" }>): unknown {
  switch (request.op) {
    case "open": {
      const opened = SqliteFile.open(request.path);
      file = opened.file;
      return opened.snapshot;
    }
    case "list":
      return opened().listExecutions(request.query);
    case "get":
      return opened().getExecution(request.executionId);
    case "log":
      return opened().getExecutionLog(request.executionId);
    case "audit":
      return opened().listAudit(request.query);
    case "revisions":
      return opened().listRevisions(request.job);
    case "revision":
      return opened().getRevision(request.job, request.revision);
    case "prune":
      return opened().prune(request.policy, request.now);
    case "close": {
      const closing = file;
      file = undefined;
      closing?.close();
      return undefined;
    }
  }
}

function commitGroup(ids: number[], batches: CommitBatch[]): void {
  let error = commitFailure;
  if (error === undefined) {
    try {
      opened().commit(batches);
    } catch (err) {
      error = errorOf(err);
      commitFailure = error;
    }
  }
  for (const id of ids) port.postMessage(error === undefined ? ({ id, ok: true, value: undefined } satisfies WriterReply) : ({ id, ok: false, error } satisfies WriterReply));
}

function reply(id: number, operation: () => unknown): void {
  let answer: WriterReply;
  try {
    answer = { id, ok: true, value: operation() };
  } catch (err) {
    answer = { id, ok: false, error: errorOf(err) };
  }
  port.postMessage(answer);
}

function opened(): SqliteFile {
  if (file === undefined) throw new ShardlineError("failed-precondition", "the SQLite store is not open");
  return file;
}

function errorOf(err: unknown): WriterError {
  if (err instanceof ShardlineError) {
    const cause = err.cause instanceof Error ? { cause: err.cause.message } : {};
    return { code: err.code, message: err.message, details: err.details, ...cause };
  }
  return { code: "internal", message: err instanceof Error ? err.message : String(err), details: {} };
}

function fail(message: string): never {
  throw new Error(message);
}
