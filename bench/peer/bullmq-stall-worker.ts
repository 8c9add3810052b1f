/**
 * The worker that dies in BullMQ's stall-recovery benchmark: a BullMQ Worker in its own process
 * that takes one job and holds it, renewing its lock, until the parent SIGKILLs the process.
 * Started with child_process.fork and one JSON argument (StallWorkerConfig); it reports over the
 * IPC channel so the parent kills it only once the job is really being processed.
 */
import { Worker } from "bullmq";

/** What the parent passes as the only argument, JSON-encoded. */
export interface StallWorkerConfig {
  port: number;
  queue: string;
  /** Unset means BullMQ's default. */
  lockDurationMs?: number;
  /** Unset means BullMQ's default. */
  stalledIntervalMs?: number;
}

/** What this process sends to its parent. */
export type StallWorkerReport =
  | { type: "ready" }
  | { type: "processing"; jobId: string }
  | { type: "error"; message: string };

function send(report: StallWorkerReport): void {
  process.send?.(report);
}

const config = JSON.parse(process.argv[2] ?? "{}") as StallWorkerConfig;

const worker = new Worker(
  config.queue,
  async (job) => {
    send({ type: "processing", jobId: job.id ?? "" });
    // Never finishes: the job stays active under this worker's lock until the process is killed.
    await new Promise<never>(() => {});
  },
  {
    connection: { host: "127.0.0.1", port: config.port },
    ...(config.lockDurationMs === undefined ? {} : { lockDuration: config.lockDurationMs }),
    ...(config.stalledIntervalMs === undefined ? {} : { stalledInterval: config.stalledIntervalMs }),
  },
);
worker.on("error", (error) => send({ type: "error", message: String(error) }));

await worker.waitUntilReady();
send({ type: "ready" });

// The parent going away ends this process too: the benchmark never leaves a worker behind.
process.on("disconnect", () => process.exit(0));
