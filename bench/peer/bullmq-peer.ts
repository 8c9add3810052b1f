/**
 * The peer half of the benchmark: Shardline's measurements taken against BullMQ on a real Redis,
 * so the report can show Shardline's figures as ratios of BullMQ's from the same run and machine.
 * Each measurement makes its own uniquely named queue and closes and obliterates everything it
 * made before it returns, so they can run one after another in one process against one Redis.
 */
import { type ChildProcess, fork } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Job, WorkerOptions } from "bullmq";
import { until } from "../harness.js";
import { STEP_TIMEOUT_MS, inScope, nowMs, within } from "./bullmq-scope.js";
import type { StallWorkerConfig, StallWorkerReport } from "./bullmq-stall-worker.js";
import type { RedisServer } from "./redis-server.js";

export { bullmqThroughput, bullmqThroughputGrid, bullmqThroughputPoint } from "./bullmq-throughput.js";
export type { BullmqThroughputGrid, BullmqThroughputResult, BullmqThroughputVariant } from "./bullmq-throughput.js";

const STALL_WORKER = join(dirname(fileURLToPath(import.meta.url)), "bullmq-stall-worker.js");

/** The repeat interval of every scheduler in bullmqRepeatLag, as in Shardline's lag benchmark. */
const EVERY_MS = 1000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The instant a scheduler's run was scheduled for, and the scheduler it belongs to.
 *
 * BullMQ's Lua scripts (addJobScheduler, updateJobScheduler) compute each run's slot of an
 * `every` scheduler in Redis: the first is the upsert's `now`, each next one is the previous slot
 * plus `every` (moved forward to the next future slot on the same phase if it is already past).
 * They store the run as a delayed job with id `repeat:<scheduler id>:<slot>`, timestamp = its
 * creation time and delay = slot - timestamp, so the delayed set releases it at the slot. The id
 * carries the slot itself, exact even where a delay was clamped to 0, so it is read from there.
 */
function scheduledRun(job: Job): { scheduler: string; slotMs: number } {
  const id = job.id ?? "";
  const match = /^repeat:(.+):(\d+)$/.exec(id);
  if (match === null) throw new Error(`benchmark: BullMQ ran job "${id}", not a scheduler's run (repeat:<scheduler>:<slot>)`);
  return { scheduler: match[1]!, slotMs: Number(match[2]) };
}

/** Slots strictly between a scheduler's consecutive runs `earlier` and `later` that fall in [from, to). */
function skippedSlots(earlier: number, later: number, from: number, to: number): number {
  let skipped = 0;
  for (let slot = earlier + EVERY_MS; slot < later; slot += EVERY_MS) {
    if (slot >= from && slot < to) skipped++;
  }
  return skipped;
}

/**
 * Start lag of BullMQ job schedulers: `schedules` schedulers each repeating every second
 * (`upsertJobScheduler` with `every: 1000`), run by `workers` Worker instances in this process
 * (concurrency 1 each, no-op processor). A lag is the processor's start minus the run's slot.
 *
 * Like Shardline's fire-lag scenario, runs slotted in the first `warmupSeconds` are dropped and
 * the `seconds` after them are measured. `missedRuns` counts slots in the measured window that
 * BullMQ never ran (its counterpart of a misfire): a scheduler only makes its next run when the
 * current one starts, and skips slots that are already past.
 */
export async function bullmqRepeatLag(
  redis: RedisServer,
  options: { schedules: number; workers: number; seconds: number; warmupSeconds: number },
): Promise<{ lagsMs: number[]; missedRuns: number }> {
  return inScope(redis, async (scope) => {
    const slots = new Map<string, number[]>();
    const lagsMs: number[] = [];
    let measureFrom = Number.POSITIVE_INFINITY;
    let measureUntil = Number.POSITIVE_INFINITY;
    const processor = async (job: Job): Promise<void> => {
      const startedAt = nowMs();
      const { scheduler, slotMs } = scheduledRun(job);
      const seen = slots.get(scheduler) ?? [];
      seen.push(slotMs);
      slots.set(scheduler, seen);
      if (slotMs >= measureFrom && slotMs < measureUntil) lagsMs.push(startedAt - slotMs);
    };
    const workers = Array.from({ length: options.workers }, () => scope.worker(processor));
    await within(Promise.all(workers.map((worker) => worker.waitUntilReady())), STEP_TIMEOUT_MS, "the BullMQ workers to connect");

    const startedAt = Date.now();
    measureFrom = startedAt + options.warmupSeconds * 1000;
    measureUntil = measureFrom + options.seconds * 1000;
    const ids = Array.from({ length: options.schedules }, (_, i) => `schedule-${i}`);
    for (const id of ids) await scope.queue.upsertJobScheduler(id, { every: EVERY_MS }, { name: "noop" });

    // Runs of one scheduler are strictly sequential, so once each has started a run slotted after
    // the window, every run slotted inside it has started (or was skipped).
    await until(
      "every BullMQ scheduler to run past the measured window",
      () => {
        scope.check();
        const past = ids.every((id) => (slots.get(id) ?? []).some((slot) => slot >= measureUntil));
        return Date.now() >= measureUntil && past ? true : undefined;
      },
      (options.warmupSeconds + options.seconds) * 1000 + STEP_TIMEOUT_MS,
      50,
    );

    let missedRuns = 0;
    for (const seen of slots.values()) {
      seen.sort((a, b) => a - b);
      for (let i = 1; i < seen.length; i++) missedRuns += skippedSlots(seen[i - 1]!, seen[i]!, measureFrom, measureUntil);
    }
    return { lagsMs, missedRuns };
  });
}

/**
 * How long BullMQ takes to hand a job held by a dead worker to a live one. A Worker in a child
 * process (bullmq-stall-worker.js) takes one job and holds it; a second Worker in this process
 * is started, and half a stalled-check interval later the child is SIGKILLed. recoveryMs runs
 * from the SIGKILL to the second worker's processor starting that job: a stalled check must
 * first mark the job, and a later one, once its lock has expired, moves it back to wait.
 *
 * Both workers use BullMQ's own lockDuration and stalledInterval (30 s each in BullMQ 5) unless
 * the caller passes values, as a fast smoke run may. Fails if the job is not picked up again
 * within `timeoutMs` of the kill.
 */
export async function bullmqStallRecovery(
  redis: RedisServer,
  options: { lockDurationMs?: number; stalledIntervalMs?: number; timeoutMs: number },
): Promise<{ recoveryMs: number }> {
  return inScope(redis, async (scope) => {
    const timings: Omit<WorkerOptions, "connection"> = {
      ...(options.lockDurationMs === undefined ? {} : { lockDuration: options.lockDurationMs }),
      ...(options.stalledIntervalMs === undefined ? {} : { stalledInterval: options.stalledIntervalMs }),
    };
    const child = new StallWorkerProcess({
      port: redis.port,
      queue: scope.name,
      lockDurationMs: options.lockDurationMs,
      stalledIntervalMs: options.stalledIntervalMs,
    });
    try {
      await child.next("ready");
      const job = await scope.queue.add("hold", {});
      const held = await child.next("processing");
      if (held.jobId !== job.id) throw new Error(`benchmark: the stall worker took job ${held.jobId}, not ${job.id}`);

      let recoveredAt: number | undefined;
      const survivor = scope.worker(async (next) => {
        const startedAt = nowMs();
        if (!child.killed) throw new Error(`BullMQ gave job ${next.id} to a second worker while the first still held it`);
        if (next.id === job.id) recoveredAt = startedAt;
      }, timings);
      await within(survivor.waitUntilReady(), STEP_TIMEOUT_MS, "the second BullMQ worker to connect");
      // The survivor runs a stalled check as it starts and then every stalledInterval, and the
      // kill's place in that cycle decides the figure: right after a check is the worst case (two
      // whole intervals), so the kill waits half an interval, the average for a crash at a random
      // moment. Worker fills in its defaults, so the interval is set.
      await sleep(survivor.opts.stalledInterval! / 2);
      scope.check();

      const killedAt = nowMs();
      child.kill();
      const at = await until(
        `BullMQ to give job ${job.id} to the second worker after the first was SIGKILLed`,
        () => {
          scope.check();
          return recoveredAt;
        },
        options.timeoutMs,
        10,
      );
      return { recoveryMs: at - killedAt };
    } finally {
      await child.stop();
    }
  });
}

/** The child process running bullmq-stall-worker.js, with its output kept for error messages. */
class StallWorkerProcess {
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  private readonly reports: StallWorkerReport[] = [];
  private output = "";

  constructor(config: StallWorkerConfig) {
    this.child = fork(STALL_WORKER, [JSON.stringify(config)], { stdio: ["ignore", "pipe", "pipe", "ipc"], execArgv: [] });
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    const keep = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString()).slice(-20_000);
    };
    this.child.stdout!.on("data", keep);
    this.child.stderr!.on("data", keep);
    this.child.on("message", (report: StallWorkerReport) => this.reports.push(report));
  }

  /** The first report of `type`; fails on an error report, an early exit or after 30 s. */
  async next<T extends "ready" | "processing">(type: T): Promise<Extract<StallWorkerReport, { type: T }>> {
    const report = await until(
      `the BullMQ stall worker (pid ${this.child.pid}) to report ${type}`,
      () => {
        const failure = this.reports.find((r) => r.type === "error");
        if (failure !== undefined) throw new Error(`benchmark: the BullMQ stall worker failed: ${failure.message}\n${this.output}`);
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          throw new Error(`benchmark: the BullMQ stall worker exited (${this.child.signalCode ?? `code ${this.child.exitCode}`}) before reporting ${type}:\n${this.output}`);
        }
        return this.reports.find((r) => r.type === type);
      },
      STEP_TIMEOUT_MS,
    );
    return report as Extract<StallWorkerReport, { type: T }>;
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }

  /** Whether kill() has sent its signal. */
  get killed(): boolean {
    return this.child.killed;
  }

  /** Kills the process if it still runs and waits until it has gone. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await within(this.exited, STEP_TIMEOUT_MS, `the BullMQ stall worker (pid ${this.child.pid}) to exit`);
  }
}
