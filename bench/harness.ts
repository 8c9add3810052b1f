/**
 * The real processes a benchmark run drives: the controller (the built `shardline` binary) and
 * load-generator processes full of agents (load-agents.ts), all on loopback.
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AdminService } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { type Client, createClient } from "../shared/grpc/index.js";
import type { LoadCommand, LoadReport } from "./load-agents.js";
import { freePort } from "../tools/free-port.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = join(HERE, "..", "cli", "main.js");
const LOAD_AGENTS = join(HERE, "load-agents.js");

export type AdminClient = Client<typeof AdminService>;

/** A free loopback port. */
export { freePort };

/** Polls `probe` every `everyMs` until it returns a value; fails after `timeoutMs` naming `what`. */
export async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`benchmark: gave up waiting for ${what} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** Resident set size of a process, from /proc (Linux). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (match === null) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** A controller child process on a loopback port with its own store (a store URL: `sqlite:PATH`, `etcd:...`). */
export class ControllerProcess {
  private child: ChildProcess | undefined;
  private output = "";
  private stopping = false;
  readonly admin: AdminClient;

  private constructor(readonly address: string) {
    this.admin = createClient(AdminService, address);
  }

  /** `env`: variables over this process's own, such as the OTEL_* ones that turn tracing on. */
  static async start(store: string, flags: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ControllerProcess> {
    const controller = new ControllerProcess(`127.0.0.1:${await freePort()}`);
    const http = `127.0.0.1:${await freePort()}`;
    // For profiling the controller under the benchmark's load, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = process.env.SHARDLINE_BENCH_CONTROLLER_NODE_ARGS?.split(" ").filter((a) => a !== "") ?? [];
    const child = spawn(
      process.execPath,
      [...nodeArgs, CLI, "--log-level", "warn", "controller", "--listen", controller.address, "--http", http, "--store", store, ...flags],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } },
    );
    controller.child = child;
    const keep = (chunk: Buffer): void => {
      controller.output = (controller.output + chunk.toString()).slice(-20_000);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    child.once("exit", (code, signal) => {
      if (!controller.stopping) process.stderr.write(`bench: the controller exited (${code ?? signal}) unasked; its last output:\n${controller.output}\n`);
    });
    await until("the controller to answer", async () => {
      if (child.exitCode !== null) throw new Error(`the controller exited with ${child.exitCode}:\n${controller.output}`);
      try {
        await controller.admin.listJobs({});
        return true;
      } catch {
        return undefined;
      }
    });
    return controller;
  }

  get pid(): number {
    return this.child!.pid!;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.admin.close();
    const child = this.child;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/** How a load process's agents are made, and its environment. */
export interface LoadOptions {
  maxConcurrent?: number;
  /** Variables over this process's own, such as the OTEL_* ones that turn tracing on. */
  env?: NodeJS.ProcessEnv;
}

/** A load-generator process running `ids.length` agents. */
export class LoadProcess {
  private readonly child: ChildProcess;
  private readonly waiters: { type: LoadReport["type"]; resolve: (report: LoadReport) => void }[] = [];
  private readonly listeners: ((report: LoadReport) => void)[] = [];
  readonly exited: Promise<void>;

  constructor(
    controller: string,
    readonly ids: string[],
    options: LoadOptions = {},
  ) {
    // For profiling the agents' side, as SHARDLINE_BENCH_CONTROLLER_NODE_ARGS does the controller's.
    const execArgv = process.env.SHARDLINE_BENCH_LOAD_NODE_ARGS?.split(" ").filter((a) => a !== "") ?? [];
    const { env, ...start } = options;
    this.child = fork(LOAD_AGENTS, [], { stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "advanced", execArgv, env: { ...process.env, ...env } });
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    this.child.on("message", (report: LoadReport) => {
      for (const listener of this.listeners) listener(report);
      const index = this.waiters.findIndex((w) => w.type === report.type);
      if (index >= 0) this.waiters.splice(index, 1)[0]!.resolve(report);
    });
    this.send({ type: "start", controller, ids, ...start });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Calls `listener` with every report, as it arrives. */
  onReport(listener: (report: LoadReport) => void): void {
    this.listeners.push(listener);
  }

  send(command: LoadCommand): void {
    this.child.send(command);
  }

  /** The next report of `type`, within `timeoutMs`. */
  next<T extends LoadReport["type"]>(type: T, timeoutMs = 60_000): Promise<Extract<LoadReport, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`benchmark: no ${type} report from load process ${this.pid} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        type,
        resolve: (report) => {
          clearTimeout(timer);
          resolve(report as Extract<LoadReport, { type: T }>);
        },
      });
    });
  }

  async ask<T extends LoadReport["type"]>(command: LoadCommand, answer: T): Promise<Extract<LoadReport, { type: T }>> {
    const reply = this.next(answer);
    this.send(command);
    return reply;
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.child.kill(signal);
  }

  /** Stops its agents without a goodbye and ends the process. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.send({ type: "stop" });
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Starts `count` agents named `prefix-N` over `processes` load processes, and waits until each process has started its agents. */
export async function startLoad(controller: string, prefix: string, count: number, processes: number, options: LoadOptions = {}): Promise<LoadProcess[]> {
  const groups: string[][] = Array.from({ length: Math.min(processes, count) }, () => []);
  for (let i = 0; i < count; i++) groups[i % groups.length]!.push(`${prefix}-${i}`);
  const loads = groups.map((ids) => new LoadProcess(controller, ids, options));
  await Promise.all(loads.map((load) => load.next("started")));
  return loads;
}

/** Waits until the controller lists `count` ready agents. */
export async function agentsReady(admin: AdminClient, count: number, timeoutMs = 60_000): Promise<void> {
  await until(`${count} agents to connect`, async () => ((await admin.listAgents({})).agents.length >= count ? true : undefined), timeoutMs, 100);
}

/** The p-th percentile (0..100) of `values`, nearest rank; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/** A manifest for the benchmark's jobs. */
export function manifest(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({ apiVersion: "shardline.dev/v1", kind: "ShardedJob", metadata: { name }, spec });
}
