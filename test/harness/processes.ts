import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { vi } from "vitest";
import { ADMIN_MAX_RECEIVE_BYTES } from "../../cli/commands/admin.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { type Client, createClient } from "../../shared/grpc/index.js";
import { freePort } from "../../tools/free-port.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The built CLI: `npm test` builds it before running the suite. */
export const CLI = join(ROOT, "dist", "cli", "main.js");

export function requireBuiltCli(): void {
  if (!existsSync(CLI)) {
    throw new Error(`${CLI} is missing: these tests run the real binary; run \`npm run build\` first (npm test does)`);
  }
}

/** Runs the built `shardline` binary to completion, with `env` added to this process's. */
export function shardline(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A free loopback port, so a restarted controller can come back on the same address. */
export { freePort };

/** A child process of the CLI, with its output kept for failure messages. */
export class CliProcess {
  readonly child: ChildProcess;
  output = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly name: string,
    args: string[],
    env: Record<string, string> = {},
  ) {
    this.child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, SHARDLINE_LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const keep = (chunk: Buffer): void => {
      this.output += chunk.toString();
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    this.child.stdout!.on("data", keep);
    this.child.stderr!.on("data", keep);
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** Stops the process (SIGTERM, then SIGKILL after `graceMs`). */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * Polls `check` (vitest's vi.waitFor) until it returns a value other than undefined, and resolves
 * with it; fails after `timeoutMs` saying what was awaited, with the last error `check` threw, if
 * any. A throw counts as "not yet", as undefined does. The default timeout is far above what
 * anything takes on an idle machine: these tests run beside other work on two cores.
 */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, intervalMs = 50): Promise<T> {
  let lastError: unknown;
  try {
    return await vi.waitFor(
      async () => {
        let value: T | undefined;
        try {
          value = await check();
        } catch (error) {
          lastError = error;
          throw error;
        }
        if (value === undefined) throw new NotYet(what);
        return value;
      },
      { timeout: timeoutMs, interval: intervalMs },
    );
  } catch (error) {
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError === undefined ? "" : ` (last error: ${String(lastError)})`}`, { cause: error });
  }
}

/** What a waitFor check throws while its answer is undefined, so that vi.waitFor asks again. */
class NotYet extends Error {
  constructor(what: string) {
    super(`not yet: ${what}`);
  }
}

export type AdminClient = Client<typeof AdminService>;

export function adminClient(address: string): AdminClient {
  // As the CLI does: a listing with full result and error texts can pass gRPC's default 4 MiB.
  return createClient(AdminService, address, { deadlineMs: 5000, maxReceiveMessageBytes: ADMIN_MAX_RECEIVE_BYTES });
}

/** A controller process on a fixed port and store, restartable on the same address. */
export class ControllerProcess {
  process: CliProcess | undefined;
  constructor(
    readonly port: number,
    readonly storePath: string,
    /** More flags for the next start(), e.g. a longer --lease-ttl. */
    public extraArgs: string[] = [],
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const http = await freePort();
    this.process = new CliProcess("controller", [
      "controller",
      "--listen",
      this.address,
      "--http",
      `127.0.0.1:${http}`,
      "--store",
      `sqlite:${this.storePath}`,
      ...this.extraArgs,
    ]);
    const admin = adminClient(this.address);
    try {
      await waitFor("the controller to answer", async () => {
        if (!this.process!.running) throw new Error(`controller exited:\n${this.process!.output}`);
        await admin.listJobs({});
        return true;
      });
    } finally {
      admin.close();
    }
  }
}

/** Starts an agent process of the CLI. */
export function startAgent(controller: string, id: string, handlers: string, env: Record<string, string> = {}, extra: string[] = []): CliProcess {
  return new CliProcess(id, ["agent", "--controller", controller, "--id", id, "--handlers", handlers, ...extra], env);
}
