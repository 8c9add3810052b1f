/**
 * One BullMQ measurement's footprint on the shared Redis: a uniquely named queue, the workers this
 * process makes on it, and the cleanup that deletes every key of it afterwards, so measurements
 * can run one after another against one Redis without seeing each other's jobs.
 */
import { randomUUID } from "node:crypto";
import { type Processor, Queue, Worker, type WorkerOptions } from "bullmq";
import type { RedisServer } from "./redis-server.js";

/** Longest wait for a close, an obliterate, a connect or a child's report before the run fails. */
export const STEP_TIMEOUT_MS = 30_000;

/** Wall-clock milliseconds with a fraction, comparable between processes on one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Settles like `promise`, or rejects after `ms` saying what did not happen; `what` may be a
 * function, to describe the state at the moment of giving up.
 */
export function within<T>(promise: Promise<T>, ms: number, what: string | (() => string)): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    const describe = (): string => (typeof what === "string" ? what : what());
    timer = setTimeout(() => reject(new Error(`benchmark: gave up waiting for ${describe()} after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * One measurement's BullMQ objects: one queue and its workers, with every `error` event kept (an
 * EventEmitter without an error listener would crash the process instead) and failing the run.
 */
export class BullmqScope {
  readonly name = `shardline-bench-${randomUUID()}`;
  readonly queue: Queue;
  private readonly workers: Worker[] = [];
  private failure: Error | undefined;

  constructor(private readonly redis: RedisServer) {
    // A fresh options object per client: BullMQ adjusts the one it is given.
    this.queue = new Queue(this.name, { connection: { ...redis.connection } });
    this.queue.on("error", (error) => this.fail("queue", error));
  }

  worker(processor: Processor, options: Omit<WorkerOptions, "connection"> = {}): Worker {
    const worker = new Worker(this.name, processor, { ...options, connection: { ...this.redis.connection } });
    worker.on("error", (error) => this.fail("worker", error));
    worker.on("failed", (job, error) => this.fail(`job ${job?.id}`, error));
    this.workers.push(worker);
    return worker;
  }

  /** Throws the first error any queue, worker or job reported. */
  check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * Closes the workers, then deletes the queue's keys and closes it; each step bounded. If a step
   * fails (Redis has gone, say) every client is dropped at once before the error is thrown: one
   * left reconnecting would keep the process alive.
   */
  async close(): Promise<void> {
    try {
      await within(Promise.all(this.workers.map((worker) => worker.close())), STEP_TIMEOUT_MS, `the workers of ${this.name} to close`);
      await within(this.queue.obliterate({ force: true }), STEP_TIMEOUT_MS, `${this.name} to be obliterated`);
      await within(this.queue.close(), STEP_TIMEOUT_MS, `${this.name} to close`);
    } catch (error) {
      // Not awaited: the disconnect itself is at once, but a client caught between reconnects never
      // emits the "end" it would wait for.
      void Promise.allSettled([this.queue.disconnect(), ...this.workers.map((worker) => worker.disconnect())]);
      throw error;
    }
  }

  private fail(source: string, error: Error): void {
    this.failure ??= new Error(`BullMQ ${source} in ${this.name} failed: ${error.message}`, { cause: error });
  }
}

/** Runs `body` in a fresh scope and closes the scope whatever happens, never hiding body's error. */
export async function inScope<T>(redis: RedisServer, body: (scope: BullmqScope) => Promise<T>): Promise<T> {
  const scope = new BullmqScope(redis);
  let result: T;
  try {
    result = await body(scope);
  } catch (error) {
    try {
      await scope.close();
    } catch (closeError) {
      throw new AggregateError([error, closeError], `${String(error)} (and cleaning up failed too: ${String(closeError)})`);
    }
    throw error;
  }
  await scope.close();
  return result;
}
