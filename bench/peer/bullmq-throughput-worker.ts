/**
 * One worker process of BullMQ's throughput benchmark: a BullMQ Worker with a no-op processor and
 * the given concurrency, started with child_process.fork and one JSON argument
 * (ThroughputWorkerConfig). It speaks to its parent over the IPC channel:
 *
 * 1. It connects to Redis without taking jobs and reports `ready`.
 * 2. On `run` it starts taking jobs and reports `started` with the instant it did, so a queue
 *    filled beforehand is timed from the first worker's start.
 * 3. It counts its own `completed` events and reports the cumulative count every `reportEvery`
 *    completions; after `eager`, at the end of every event-loop turn that completed any.
 * 4. Any error of the Worker or failure of a job is reported as `error`; the parent fails the run.
 * 5. When the parent disconnects (or goes away) the process exits: no worker is ever left behind.
 */
import { Worker } from "bullmq";

/** What the parent passes as the only argument, JSON-encoded. */
export interface ThroughputWorkerConfig {
  connection: { host: string; port: number };
  queue: string;
  concurrency: number;
  /** Completions per report until the parent asks for eager reports. */
  reportEvery: number;
}

/** What the parent sends. */
export type ThroughputWorkerCommand = { type: "run" } | { type: "eager" };

/** What this process sends to its parent. Times are wall-clock ms with a fraction. */
export type ThroughputWorkerReport =
  | { type: "ready" }
  | { type: "started"; at: number }
  | { type: "completed"; completed: number; lastCompletedAt: number }
  | { type: "error"; message: string };

function send(report: ThroughputWorkerReport): void {
  if (process.connected) process.send!(report);
}

function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

const config = JSON.parse(process.argv[2] ?? "") as ThroughputWorkerConfig;

let completed = 0;
let reported = 0;
let lastCompletedAt = 0;
let eager = false;
let flushQueued = false;

function flush(): void {
  flushQueued = false;
  if (completed === reported) return;
  reported = completed;
  send({ type: "completed", completed, lastCompletedAt });
}

const worker = new Worker(config.queue, async () => {}, {
  connection: config.connection,
  concurrency: config.concurrency,
  autorun: false,
});
worker.on("completed", () => {
  completed++;
  lastCompletedAt = nowMs();
  if (!eager) {
    if (completed - reported >= config.reportEvery) flush();
  } else if (!flushQueued) {
    // Completions that arrive in one read from Redis share one report.
    flushQueued = true;
    setImmediate(flush);
  }
});
worker.on("error", (error) => send({ type: "error", message: `the Worker reported: ${error.message}` }));
worker.on("failed", (job, error) => send({ type: "error", message: `job ${job?.id} failed: ${error.message}` }));

process.on("message", (command: ThroughputWorkerCommand) => {
  if (command.type === "run") {
    const at = nowMs();
    worker.run().catch((error: Error) => send({ type: "error", message: `the Worker stopped running: ${error.message}` }));
    send({ type: "started", at });
  } else {
    eager = true;
    flush();
  }
});
process.on("disconnect", () => process.exit(0));

try {
  await worker.waitUntilReady();
  send({ type: "ready" });
} catch (error) {
  send({ type: "error", message: `the Worker did not connect to ${config.connection.host}:${config.connection.port}: ${String(error)}` });
}
