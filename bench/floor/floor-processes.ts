/**
 * The bench process's side of the transport floor's children: the echo controller and the floor
 * agent processes, each forked and spoken to over its IPC channel (./ipc.ts).
 */
import { type ChildProcess, fork } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { EchoCommand, EchoReport, FloorAgentCommand, FloorAgentReport } from "./ipc.js";

const HERE = dirname(fileURLToPath(import.meta.url));

/** How long a child asked to stop has before it is killed. */
const STOP_GRACE_MS = 10_000;

/**
 * One forked child and its reports. A `failed` report from it, or its exit before it was asked
 * to stop, makes `failure` reject with what happened.
 */
export class FloorChild<Command, Report extends { type: string }> {
  readonly #child: ChildProcess;
  readonly #listeners = new Set<(report: Report) => void>();
  #stopping = false;
  readonly exited: Promise<void>;
  /** Rejects when the child fails or dies unasked; never resolves. */
  readonly failure: Promise<never>;

  constructor(
    /** The child as a failure names it, e.g. "the echo controller". */
    readonly name: string,
    module: string,
    nodeArgs: readonly string[],
  ) {
    // execArgv is set, not inherited: a test runner's flags have no place in a measured child.
    this.#child = fork(join(HERE, module), [], { stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "advanced", execArgv: [...nodeArgs] });
    this.exited = new Promise((resolve) => this.#child.once("exit", () => resolve()));
    let rejectFailure!: (error: Error) => void;
    this.failure = new Promise<never>((_, reject) => (rejectFailure = reject));
    // Callers race against it; one that never looks must not make an unhandled rejection.
    this.failure.catch(() => {});
    this.#child.on("message", (report: Report) => {
      if (report.type === "failed") rejectFailure(new Error(`floor: ${(report as unknown as { reason: string }).reason}`));
      for (const listener of [...this.#listeners]) listener(report);
    });
    this.#child.once("exit", (code, signal) => {
      if (!this.#stopping) rejectFailure(new Error(`floor: ${this.name} (pid ${this.pid}) exited (${code ?? signal}) before it was asked to stop`));
    });
  }

  get pid(): number {
    return this.#child.pid!;
  }

  send(command: Command): void {
    this.#child.send(command as object);
  }

  /** Calls `listener` with every report; returns what stops it. */
  onReport(listener: (report: Report) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The next report of `type`, within `timeoutMs`; the failure names `what` did not happen. Also
   * rejects when the child fails first.
   */
  next<T extends Report["type"]>(type: T, what: string, timeoutMs: number): Promise<Extract<Report, { type: T }>> {
    let stop = (): void => {};
    const arrived = new Promise<Extract<Report, { type: T }>>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`floor: ${what} did not happen within ${timeoutMs} ms (no ${type} report from ${this.name}, pid ${this.pid})`)),
        timeoutMs,
      );
      const off = this.onReport((report) => {
        if (report.type !== type) return;
        stop();
        resolve(report as Extract<Report, { type: T }>);
      });
      stop = () => {
        clearTimeout(timer);
        off();
      };
    });
    return Promise.race([arrived, this.failure]).finally(stop);
  }

  /** Asks the child to stop and waits for it to exit; kills it if it has not within STOP_GRACE_MS. */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    if (this.#child.connected) this.#child.send({ type: "stop" });
    else this.#child.kill("SIGKILL");
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), STOP_GRACE_MS);
    await this.exited;
    clearTimeout(timer);
  }
}

export type EchoControllerProcess = FloorChild<EchoCommand, EchoReport>;
export type FloorAgentProcess = FloorChild<FloorAgentCommand, FloorAgentReport>;

/** Node flags for a child, from an environment variable of space-separated flags (for profiling). */
function nodeArgsFrom(variable: string): string[] {
  return process.env[variable]?.split(" ").filter((a) => a !== "") ?? [];
}

/**
 * Starts the echo controller and waits until it listens; resolves with it and its address.
 * SHARDLINE_BENCH_CONTROLLER_NODE_ARGS gives it Node flags, as it does the real controller.
 */
export async function startEchoController(timeoutMs = 30_000): Promise<{ echo: EchoControllerProcess; address: string }> {
  const echo: EchoControllerProcess = new FloorChild("the echo controller", "echo-controller.js", nodeArgsFrom("SHARDLINE_BENCH_CONTROLLER_NODE_ARGS"));
  try {
    const { address } = await echo.next("listening", "the echo controller listening", timeoutMs);
    return { echo, address };
  } catch (error) {
    await echo.stop();
    throw error;
  }
}

/**
 * Starts `count` floor agents named `prefix-N` over `processes` processes, agent i in process
 * i mod processes, as the harness spreads real agents. They connect at once; wait for each
 * process's `welcomed` report. SHARDLINE_BENCH_LOAD_NODE_ARGS gives them Node flags.
 */
export function startFloorAgents(controller: string, prefix: string, count: number, processes: number): FloorAgentProcess[] {
  const groups: string[][] = Array.from({ length: Math.min(processes, count) }, () => []);
  for (let i = 0; i < count; i++) groups[i % groups.length]!.push(`${prefix}-${i}`);
  return groups.map((ids) => {
    const child: FloorAgentProcess = new FloorChild(`a floor agent process (${ids.length} agents)`, "floor-agents.js", nodeArgsFrom("SHARDLINE_BENCH_LOAD_NODE_ARGS"));
    child.send({ type: "start", controller, ids });
    return child;
  });
}
