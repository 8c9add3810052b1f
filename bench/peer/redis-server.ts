/**
 * A throwaway Redis for the peer benchmark: Debian's `redis-server` as a child process on a free
 * loopback port, in its own temporary directory, with persistence off so disk speed never shows
 * up in BullMQ's figures.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../harness.js";

/** A running Redis that only this benchmark uses. */
export interface RedisServer {
  readonly host: "127.0.0.1";
  readonly port: number;
  /** The redis-server process, for metering its CPU (bench/cpu.ts). */
  readonly pid: number;
  /** `redis://127.0.0.1:<port>`, for clients that take a URL. */
  readonly url: string;
  /** What BullMQ's Queue, Worker and QueueEvents take as `connection`: each makes its own client. */
  readonly connection: { host: string; port: number };
  /** Ends the server (SIGTERM, then SIGKILL after 5 s) and removes its directory. */
  stop(): Promise<void>;
}

/** How long a server may take to say it accepts connections. */
const READY_TIMEOUT_MS = 10_000;
/** Redis 7 logs this once it listens; earlier and later versions share the prefix. */
const READY_LINE = "Ready to accept connections";
/** Tries before giving up when another process takes the port between choosing and binding it. */
const PORT_ATTEMPTS = 3;

/**
 * Starts `redis-server` on 127.0.0.1 and resolves once it accepts connections. Throws when
 * `redis-server` is not installed, or when it does not come up within 10 s (with its output).
 */
export async function startRedis(): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), "shardline-bench-redis-"));
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        return await launch(dir, await freePort());
      } catch (error) {
        if (!(error instanceof PortTakenError) || attempt >= PORT_ATTEMPTS) throw error;
      }
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** The port was free when chosen but taken by the time Redis bound it. */
class PortTakenError extends Error {}

async function launch(dir: string, port: number): Promise<RedisServer> {
  // Without a config file Redis logs to stdout, where the ready line is read.
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"];
  const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));

  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (error?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error === undefined) return resolve();
      child.kill("SIGKILL");
      reject(error);
    };
    const timer = setTimeout(
      () => settle(new Error(`redis-server did not accept connections on 127.0.0.1:${port} within ${READY_TIMEOUT_MS} ms; its output:\n${output}`)),
      READY_TIMEOUT_MS,
    );
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-20_000);
      if (output.includes(READY_LINE)) settle();
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.once("error", (error: NodeJS.ErrnoException) => {
      settle(
        error.code === "ENOENT"
          ? new Error("the peer benchmark needs Debian's redis-server on the PATH (apt-get install redis-server)", { cause: error })
          : error,
      );
    });
    child.once("exit", (code, signal) => {
      const message = `redis-server exited (${signal ?? `code ${code}`}) before accepting connections on 127.0.0.1:${port}; its output:\n${output}`;
      settle(/address already in use/i.test(output) ? new PortTakenError(message) : new Error(message));
    });
  });

  return {
    host: "127.0.0.1",
    port,
    // Set once spawned: a child that never got a pid emitted "error" and was rejected above.
    pid: child.pid!,
    url: `redis://127.0.0.1:${port}`,
    connection: { host: "127.0.0.1", port },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
