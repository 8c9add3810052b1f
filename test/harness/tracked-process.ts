import { type ChildProcess, spawn } from "node:child_process";
import { CLI } from "./processes.js";

/** One pino log line of a Shardline process. */
export interface LogEntry {
  level: number;
  time: number;
  msg: string;
  [field: string]: unknown;
}

/**
 * A child process (any command, so that it can run under `ip netns exec`), with its output kept
 * for failure messages and log checks, and the instants it was frozen (SIGSTOP to SIGCONT) and
 * died: what the overlap check needs to know when the process could not have been running.
 */
export class TrackedProcess {
  readonly child: ChildProcess;
  output = "";
  readonly startedAt = Date.now();
  /** [from, to] wall-clock spans during which the process was stopped by SIGSTOP. */
  readonly frozen: [number, number][] = [];
  frozenSince: number | undefined;
  /**
   * [SIGCONT, fence] per thaw after which the agent logged that it fenced itself (the test fills
   * it in from the agent's log): what a frozen run did in it is the unavoidable part of a pause.
   */
  readonly resumes: [number, number][] = [];
  /** When the exit was observed: no later than this, the process ran nothing. */
  diedAt: number | undefined;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    env: Record<string, string> = {},
  ) {
    this.child = spawn(command, args, {
      env: { ...process.env, SHARDLINE_LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const keep = (chunk: Buffer): void => {
      this.output += chunk.toString();
      if (this.output.length > 4_000_000) this.output = this.output.slice(-2_000_000);
    };
    this.child.stdout!.on("data", keep);
    this.child.stderr!.on("data", keep);
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code, signal) => {
        this.diedAt = Date.now();
        resolve({ code, signal });
      }),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGSTOP: the process runs nothing until thaw(). */
  freeze(): void {
    if (!this.running || this.frozenSince !== undefined) return;
    this.child.kill("SIGSTOP");
    this.frozenSince = Date.now();
  }

  /** SIGCONT after freeze(). The span is closed before the signal, so it never covers running time. */
  thaw(): void {
    if (this.frozenSince === undefined) return;
    this.frozen.push([this.frozenSince, Date.now()]);
    this.frozenSince = undefined;
    if (this.running) this.child.kill("SIGCONT");
  }

  /** Sends `signal` if the process still runs; freeze() and thaw() are the way to SIGSTOP and SIGCONT it. */
  kill(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** SIGKILL, and waits for the exit. */
  async crash(): Promise<void> {
    if (this.running) this.child.kill("SIGKILL");
    await this.exited;
  }

  /** Stops the process (thawed, SIGTERM, then SIGKILL after `graceMs`). */
  async stop(graceMs = 5000): Promise<void> {
    this.thaw();
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.running && this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Its JSON log lines (anything else in the output is skipped). */
  logs(): LogEntry[] {
    const entries: LogEntry[] = [];
    for (const line of this.output.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const entry = JSON.parse(line) as LogEntry;
        if (typeof entry.msg === "string" && typeof entry.time === "number") entries.push(entry);
      } catch {
        // A line cut by the output limit, or not a log line.
      }
    }
    return entries;
  }

  /** The first log line at or after `since` whose message starts with `prefix`. */
  logged(prefix: string, since: number): LogEntry | undefined {
    return this.logs().find((entry) => entry.time >= since && entry.msg.startsWith(prefix));
  }
}

/** An agent process of the built CLI, run as `prefix... node CLI agent ...` (prefix: e.g. `ip netns exec NS`). */
export function spawnAgent(options: {
  name: string;
  controller: string;
  handlers: string;
  env?: Record<string, string>;
  prefix?: string[];
  /** More flags, e.g. --wait-for-id. */
  args?: string[];
}): TrackedProcess {
  const argv = [process.execPath, CLI, "agent", "--controller", options.controller, "--id", options.name, "--handlers", options.handlers, ...(options.args ?? [])];
  const [command, ...args] = [...(options.prefix ?? []), ...argv];
  return new TrackedProcess(options.name, command!, args, options.env);
}
