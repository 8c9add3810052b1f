/**
 * A throwaway etcd for development runs: Debian's `etcd` (package etcd-server) as a one-member
 * cluster on free loopback ports, with its data in a temporary directory removed on stop. The
 * benchmark's leader-failover scenario (bench/scenarios/leader-failover.ts) and the tests
 * (test/harness/etcd.ts) both start theirs here. It lives in tools/, beside neither, because
 * the tests must not depend on the benchmark and the benchmark, which is built and run from
 * dist/, cannot import from test/, which the build leaves out; nothing in the product imports it.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { freePort } from "./free-port.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Etcd3 } from "etcd3";

/** The binary to run; the same variable the tests' etcd harness reads. */
const ETCD = process.env.SHARDLINE_ETCD_BINARY ?? "etcd";
/** How long etcd may take to answer its first read. */
const READY_TIMEOUT_MS = 20_000;


/** A running etcd that only its starter uses. */
export interface EtcdServer {
  /** `HOST:PORT` of its client URL. */
  readonly endpoint: string;
  /** `etcd://HOST:PORT`, the form `--store` takes (a `/PREFIX` may follow). */
  readonly url: string;
  /** What etcd printed lately, for failure messages. */
  log(): string;
  /** Sends the process a signal (SIGSTOP and SIGCONT freeze and thaw it). */
  signal(name: NodeJS.Signals): void;
  /** Ends the server (SIGKILL: nothing in it outlives the run) and removes its data directory. */
  stop(): Promise<void>;
}

/**
 * Starts etcd on 127.0.0.1 and resolves once it answers a read. Throws when the binary is not
 * installed, or when it does not answer within 20 s (with its output).
 */
export async function startEtcd(): Promise<EtcdServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "shardline-etcd-"));
  const client = `http://127.0.0.1:${await freePort()}`;
  const peer = `http://127.0.0.1:${await freePort()}`;
  const child = spawn(
    ETCD,
    [
      "--name=shardline",
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=shardline=${peer}`,
      "--log-level=warn",
      "--logger=zap",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  let missing: Error | undefined;
  child.once("error", (error: NodeJS.ErrnoException) => {
    missing =
      error.code === "ENOENT"
        ? new Error(`etcd is missing (${ETCD} is not on the PATH): the leader-failover benchmark and the etcd tests run a real etcd; install Debian's etcd-server (apt-get install -y etcd-server), as .ci/run does`, { cause: error })
        : error;
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && missing === undefined) {
      child.kill("SIGKILL");
      await exited;
    }
    await rm(dataDir, { recursive: true, force: true });
  };

  const probe = new Etcd3({ hosts: client, dialTimeout: 1000 });
  try {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (missing !== undefined) throw missing;
      if (child.exitCode !== null) throw new Error(`etcd exited with ${child.exitCode} before answering; its output:\n${output}`);
      try {
        await probe.get("probe").string();
        break;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`etcd did not answer on ${client} within ${READY_TIMEOUT_MS} ms (${String(error)}); its output:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    probe.close();
  }
  const endpoint = client.slice("http://".length);
  return { endpoint, url: `etcd://${endpoint}`, log: () => output, signal: (name) => void child.kill(name), stop };
}
