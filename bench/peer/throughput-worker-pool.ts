/**
 * The parent's side of BullMQ's throughput benchmark: N forked bullmq-throughput-worker.js
 * processes on one queue, their reports turned into promises (nothing polls), their completions
 * tallied, and their end: each exits when disconnected, or is SIGKILLed when the run fails.
 */
import { type ChildProcess, fork } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { MeteredProcess } from "../cpu.js";
import { STEP_TIMEOUT_MS, within } from "./bullmq-scope.js";
import type { ThroughputWorkerCommand, ThroughputWorkerConfig, ThroughputWorkerReport } from "./bullmq-throughput-worker.js";
import { CompletionTally } from "./completion-tally.js";

const WORKER_MAIN = join(dirname(fileURLToPath(import.meta.url)), "bullmq-throughput-worker.js");

/**
 * Completions a worker counts before it reports: a report is an IPC message (tens of µs in each
 * process), so one per job would show in the CPU per job; 100 makes it negligible.
 */
const REPORT_EVERY = 100;
/** How long a disconnected worker may take to exit before it is SIGKILLed. */
const EXIT_GRACE_MS = 5_000;

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** What a pool of worker processes is started with. */
export interface ThroughputWorkerPoolOptions {
  processes: number;
  /** Jobs the run adds in all: the pool's completions resolve once the workers report that many. */
  jobs: number;
  connection: { host: string; port: number };
  queue: string;
  /** Each process's BullMQ Worker concurrency. */
  concurrency: number;
}

/** One forked worker process: its reports, its output for error messages, its exit. */
class ThroughputWorkerProcess {
  private readonly child: ChildProcess;
  private readonly readyReport = deferred<void>();
  private readonly startedReport = deferred<number>();
  private readonly exit = deferred<void>();
  private output = "";
  private stopping = false;

  constructor(
    readonly index: number,
    config: ThroughputWorkerConfig,
    onCompleted: (completed: number, lastCompletedAt: number) => void,
    private readonly fail: (error: Error) => void,
  ) {
    // No execArgv: the bench's own Node flags (a profiler, say) are not the worker's.
    this.child = fork(WORKER_MAIN, [JSON.stringify(config)], { stdio: ["ignore", "pipe", "pipe", "ipc"], execArgv: [] });
    const keep = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString()).slice(-20_000);
    };
    this.child.stdout!.on("data", keep);
    this.child.stderr!.on("data", keep);
    this.child.on("message", (report: ThroughputWorkerReport) => {
      if (report.type === "ready") this.readyReport.resolve();
      else if (report.type === "started") this.startedReport.resolve(report.at);
      else if (report.type === "completed") onCompleted(report.completed, report.lastCompletedAt);
      else this.fail(new Error(`benchmark: BullMQ throughput worker ${this.describe()} failed: ${report.message}${this.tail()}`));
    });
    this.child.once("error", (error) => this.fail(new Error(`benchmark: BullMQ throughput worker ${this.describe()} could not run: ${error.message}`, { cause: error })));
    this.child.once("exit", (code, signal) => {
      this.exit.resolve();
      if (!this.stopping) this.fail(new Error(`benchmark: BullMQ throughput worker ${this.describe()} exited (${signal ?? `code ${code}`}) during the run${this.tail()}`));
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get ready(): Promise<void> {
    return this.readyReport.promise;
  }

  /** When its Worker started taking jobs (wall-clock ms). */
  get started(): Promise<number> {
    return this.startedReport.promise;
  }

  send(command: ThroughputWorkerCommand): void {
    if (this.child.connected) this.child.send(command);
  }

  /** Ends the process: asks it by disconnecting (SIGKILL after a grace period), or SIGKILLs at once. */
  async stop(how: "disconnect" | "kill"): Promise<void> {
    this.stopping = true;
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    let timer: NodeJS.Timeout | undefined;
    if (how === "disconnect" && this.child.connected) {
      this.child.disconnect();
      timer = setTimeout(() => this.child.kill("SIGKILL"), EXIT_GRACE_MS);
    } else {
      this.child.kill("SIGKILL");
    }
    try {
      await within(this.exit.promise, STEP_TIMEOUT_MS, `BullMQ throughput worker ${this.describe()} to exit`);
    } finally {
      clearTimeout(timer);
    }
  }

  private describe(): string {
    return `${this.index} (pid ${this.child.pid ?? "none"})`;
  }

  private tail(): string {
    return this.output.trim() === "" ? "" : `; its output:\n${this.output}`;
  }
}

/**
 * The worker processes of one throughput run. Started, they are connected and idle; `run()`
 * starts them taking jobs. Any process's error report or unexpected exit fails the pool: every
 * promise it hands out then rejects with that error, and `stop("kill")` ends every process.
 */
export class ThroughputWorkerPool {
  private readonly tally: CompletionTally;
  private readonly processes: ThroughputWorkerProcess[];
  private readonly completion = deferred<number>();
  private readonly failure: Promise<never>;
  private failWith!: (error: Error) => void;
  private firstFailure: Error | undefined;
  private eagerSent = false;

  private constructor(options: ThroughputWorkerPoolOptions) {
    this.tally = new CompletionTally(options.jobs, options.processes, REPORT_EVERY);
    this.failure = new Promise<never>((_, reject) => {
      this.failWith = (error) => {
        this.firstFailure ??= error;
        reject(this.firstFailure);
      };
    });
    // Observed through the promises below; this keeps an unawaited failure from crashing the bench.
    this.failure.catch(() => undefined);
    const config: ThroughputWorkerConfig = {
      connection: options.connection,
      queue: options.queue,
      concurrency: options.concurrency,
      reportEvery: REPORT_EVERY,
    };
    this.processes = Array.from(
      { length: options.processes },
      (_, index) => new ThroughputWorkerProcess(index, config, (completed, at) => this.recordCompleted(index, completed, at), (error) => this.failWith(error)),
    );
  }

  /** Forks the processes and resolves once every one has connected; kills them all if any fails. */
  static async start(options: ThroughputWorkerPoolOptions): Promise<ThroughputWorkerPool> {
    const pool = new ThroughputWorkerPool(options);
    try {
      await within(
        pool.whileHealthy(Promise.all(pool.processes.map((p) => p.ready))),
        STEP_TIMEOUT_MS,
        `${options.processes} BullMQ throughput worker(s) to connect to Redis`,
      );
    } catch (error) {
      await pool.stop("kill");
      throw error;
    }
    return pool;
  }

  /** Each process under the name "workers", for a CpuMeter (read before the pool stops). */
  get metered(): MeteredProcess[] {
    return this.processes.map((p) => ({ name: "workers", pid: p.pid }));
  }

  /** Completions reported so far. */
  get completed(): number {
    return this.tally.completed;
  }

  /** Throws the first failure of any process. */
  check(): void {
    if (this.firstFailure !== undefined) throw this.firstFailure;
  }

  /** Settles like `promise`, unless a process fails first. */
  whileHealthy<T>(promise: Promise<T>): Promise<T> {
    return Promise.race([promise, this.failure]);
  }

  /** Starts every process's Worker taking jobs. */
  run(): void {
    for (const p of this.processes) p.send({ type: "run" });
    this.eagerIfNearEnd();
  }

  /** The earliest instant any Worker started (wall-clock ms), once every one has. */
  async firstStarted(): Promise<number> {
    const starts = await within(this.whileHealthy(Promise.all(this.processes.map((p) => p.started))), STEP_TIMEOUT_MS, "every BullMQ throughput worker to start");
    return Math.min(...starts);
  }

  /** The instant of the last completion (wall-clock ms), once the workers have reported every job. */
  allCompleted(): Promise<number> {
    return this.whileHealthy(this.completion.promise);
  }

  /** Ends every process: by disconnecting after a run that went well, by SIGKILL otherwise. */
  async stop(how: "disconnect" | "kill"): Promise<void> {
    const stopped = await Promise.allSettled(this.processes.map((p) => p.stop(how)));
    const failed = stopped.flatMap((s) => (s.status === "rejected" ? [s.reason as Error] : []));
    if (failed.length > 0) throw new AggregateError(failed, failed.map((e) => e.message).join("; "));
  }

  private recordCompleted(index: number, completed: number, at: number): void {
    this.tally.record(index, completed, at);
    if (this.tally.done) this.completion.resolve(this.tally.lastCompletedAt!);
    else this.eagerIfNearEnd();
  }

  private eagerIfNearEnd(): void {
    if (this.eagerSent || !this.tally.nearEnd) return;
    this.eagerSent = true;
    for (const p of this.processes) p.send({ type: "eager" });
  }
}
