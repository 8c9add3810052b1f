/**
 * BullMQ's job throughput at its best on this machine, and the CPU each job costs: BullMQ Workers
 * (no-op processor) in their own forked processes (bullmq-throughput-worker.js), this process as
 * the producer adding jobs with Queue.addBulk, all on the benchmark's local Redis. A grid search
 * over worker processes and concurrency finds the best point, so Shardline is compared with BullMQ
 * tuned for the machine rather than with one arbitrary setting.
 *
 * Completed jobs are kept (BullMQ's default), as Shardline keeps a record of every execution.
 */
import { CpuMeter, type MeteredProcess, microsecondsEach } from "../cpu.js";
import { type BullmqScope, STEP_TIMEOUT_MS, inScope, nowMs, within } from "./bullmq-scope.js";
import type { RedisServer } from "./redis-server.js";
import { ThroughputWorkerPool } from "./throughput-worker-pool.js";

/**
 * How the jobs meet the workers.
 * - `prefilled`: every job is added first, then the workers start; timed from the first worker's
 *   start to the last completion. The best case for the workers: a full queue all the time.
 * - `streamed`: the workers are running first and the jobs are added while they work; timed from
 *   the first add to the last completion, so the producer's pace is part of the figure.
 */
export type BullmqThroughputVariant = "prefilled" | "streamed";

/** One point of the grid: a variant, how many worker processes, each Worker's concurrency. */
export interface BullmqThroughputPoint {
  variant: BullmqThroughputVariant;
  processes: number;
  concurrency: number;
}

export interface BullmqThroughputResult extends BullmqThroughputPoint {
  jobs: number;
  seconds: number;
  perSecond: number;
  /**
   * CPU time (user + system, every thread) per job, in µs, summed over redis-server, every worker
   * process and, in `streamed` only, the producer; each over the timed window.
   */
  cpuMicrosecondsPerJob: number;
  /** The same CPU in seconds by name: `redis`, `workers` (all processes), `producer` (streamed only). */
  cpuSeconds: Record<string, number>;
}

/** Every point measured, in order, and the point with the highest jobs/s of each variant. */
export interface BullmqThroughputGrid<V extends BullmqThroughputVariant = BullmqThroughputVariant> {
  points: BullmqThroughputResult[];
  best: Record<V, BullmqThroughputResult>;
}

/** Jobs per addBulk call: large enough to amortise round trips, small enough for one Lua call. */
const ADD_CHUNK = 1000;
/** The longest a point may take from its first add to its last completion, unless the caller says. */
const DEFAULT_TIMEOUT_MS = 300_000;

function requireCount(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 1) throw new Error(`benchmark: ${what} must be a whole number of at least 1, not ${value}`);
}

/**
 * Measures one point: `jobs` no-op jobs through `processes` worker processes of one BullMQ Worker
 * each at `concurrency`, on a queue of its own that is obliterated afterwards. Fails if any worker
 * process reports an error or exits, or if the jobs have not all completed within `timeoutMs`
 * (default 300 s) of the first add; every worker process is ended either way.
 */
export async function bullmqThroughputPoint(
  redis: RedisServer,
  options: BullmqThroughputPoint & { jobs: number; timeoutMs?: number },
): Promise<BullmqThroughputResult> {
  const { variant, processes, concurrency, jobs } = options;
  requireCount(jobs, "jobs");
  requireCount(processes, "processes");
  requireCount(concurrency, "concurrency");
  const point = { variant, processes, concurrency, jobs, timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS };
  return inScope(redis, async (scope) => {
    const workers = await ThroughputWorkerPool.start({ processes, jobs, concurrency, connection: redis.connection, queue: scope.name });
    let result: BullmqThroughputResult;
    try {
      result = await measure(redis, scope, workers, point);
    } catch (error) {
      try {
        await workers.stop("kill");
      } catch (stopError) {
        throw new AggregateError([error, stopError], `${String(error)} (and ending the worker processes failed too: ${String(stopError)})`);
      }
      throw error;
    }
    await workers.stop("disconnect");
    return result;
  });
}

/** One point's run on workers that are connected and idle; the caller ends them. */
async function measure(
  redis: RedisServer,
  scope: BullmqScope,
  workers: ThroughputWorkerPool,
  point: BullmqThroughputPoint & { jobs: number; timeoutMs: number },
): Promise<BullmqThroughputResult> {
  const { variant, processes, concurrency, jobs, timeoutMs } = point;
  const deadline = Date.now() + timeoutMs;
  const overdue = (): string =>
    `BullMQ to complete ${jobs} jobs (${variant}, ${processes} process(es) at concurrency ${concurrency}; ${workers.completed} reported) within the ${timeoutMs} ms allowed`;
  const redisCpu: MeteredProcess = { name: "redis", pid: redis.pid };
  let meter: CpuMeter;
  let startedAt: number;
  if (variant === "prefilled") {
    await addJobs(scope, workers, jobs, deadline, overdue);
    // The producer is done before the window opens and is not counted: Redis and the workers are.
    meter = new CpuMeter([redisCpu, ...workers.metered]).start();
    workers.run();
    startedAt = await workers.firstStarted();
  } else {
    workers.run();
    await workers.firstStarted();
    // The producer is this process from its first add to the last completion's report: adding
    // jobs, then waiting on the workers' reports (a few IPC messages, next to nothing).
    meter = new CpuMeter([redisCpu, ...workers.metered, { name: "producer", pid: "self" }]).start();
    startedAt = nowMs();
    await addJobs(scope, workers, jobs, deadline, overdue);
  }
  const lastCompletedAt = await within(workers.allCompleted(), Math.max(0, deadline - Date.now()), overdue);
  const cpu = meter.stop();
  scope.check();
  const seconds = (lastCompletedAt - startedAt) / 1000;
  return {
    variant,
    processes,
    concurrency,
    jobs,
    seconds,
    perSecond: jobs / seconds,
    cpuMicrosecondsPerJob: microsecondsEach(cpu, jobs),
    cpuSeconds: cpu.byName,
  };
}

/** Adds `jobs` no-op jobs in chunks, stopping at the first failure of the queue or of a worker process. */
async function addJobs(scope: BullmqScope, workers: ThroughputWorkerPool, jobs: number, deadline: number, overdue: () => string): Promise<void> {
  for (let added = 0; added < jobs; added += ADD_CHUNK) {
    scope.check();
    workers.check();
    if (Date.now() >= deadline) throw new Error(`benchmark: gave up waiting for ${overdue()} (still adding jobs)`);
    const chunk = Array.from({ length: Math.min(ADD_CHUNK, jobs - added) }, () => ({ name: "noop", data: {} }));
    const what = `jobs ${added + 1}-${added + chunk.length} of ${jobs} to ${scope.name}`;
    const adding = scope.queue.addBulk(chunk).catch((error: Error) => {
      throw new Error(`benchmark: BullMQ could not add ${what}: ${error.message}`, { cause: error });
    });
    await within(workers.whileHealthy(adding), STEP_TIMEOUT_MS, `BullMQ to add ${what}`);
  }
}

/**
 * Measures every (variant, processes, concurrency) point, one after another, each with `jobs` jobs
 * on its own queue, and picks the best of each variant by jobs/s. `onPoint` hears each result as
 * it is measured (for progress lines). Fails at the first point that fails.
 */
export async function bullmqThroughputGrid<V extends BullmqThroughputVariant>(
  redis: RedisServer,
  options: {
    jobs: number;
    processes: readonly number[];
    concurrency: readonly number[];
    variants: readonly V[];
    timeoutMs?: number;
    onPoint?: (result: BullmqThroughputResult) => void;
  },
): Promise<BullmqThroughputGrid<V>> {
  for (const [name, list] of [["processes", options.processes], ["concurrency", options.concurrency], ["variants", options.variants]] as const) {
    if (list.length === 0) throw new Error(`benchmark: the BullMQ throughput grid needs at least one value of ${name}`);
  }
  const points: BullmqThroughputResult[] = [];
  const best = {} as Record<V, BullmqThroughputResult>;
  for (const variant of options.variants) {
    for (const processes of options.processes) {
      for (const concurrency of options.concurrency) {
        const result = await bullmqThroughputPoint(redis, { variant, processes, concurrency, jobs: options.jobs, timeoutMs: options.timeoutMs });
        options.onPoint?.(result);
        points.push(result);
        if (best[variant] === undefined || result.perSecond > best[variant].perSecond) best[variant] = result;
      }
    }
  }
  return { points, best };
}

/**
 * Throughput of one BullMQ worker process at `concurrency` with jobs added while it runs: the
 * `streamed` point with one process, as the benchmark measured before the grid existed.
 */
export function bullmqThroughput(
  redis: RedisServer,
  options: { jobs: number; concurrency: number; timeoutMs?: number },
): Promise<BullmqThroughputResult> {
  return bullmqThroughputPoint(redis, { variant: "streamed", processes: 1, ...options });
}
