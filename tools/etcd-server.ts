/**
 * A throwaway etcd for development runs: Debian's `etcd` (package etcd-server), one member or a
 * cluster of several, on free loopback ports, with its data in a temporary directory removed on stop. The
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
  /** `HOST:PORT` of its (first member's) client URL. */
  readonly endpoint: string;
  /** `etcd://HOST:PORT[,HOST:PORT...]`, the form `--store` takes (a `/PREFIX` may follow): every member. */
  readonly url: string;
  /** Each member's process id, for the benchmark's CPU meter. */
  readonly pids: readonly number[];
  /** What etcd printed lately, for failure messages. */
  log(): string;
  /** Sends every member a signal (SIGSTOP and SIGCONT freeze and thaw it). */
  signal(name: NodeJS.Signals): void;
  /** Ends the server (SIGKILL: nothing in it outlives the run) and removes its data directory. */
  stop(): Promise<void>;
}

/**
 * Starts etcd on 127.0.0.1, `members` members in one cluster (one unless given), and resolves
 * once it answers a read. Throws when the binary is not installed, or when it does not answer
 * within 20 s (with its output).
 */
export async function startEtcd(options: { members?: number } = {}): Promise<EtcdServer> {
  const count = options.members ?? 1;
  const dataDir = await mkdtemp(join(tmpdir(), "shardline-etcd-"));
  const members: { name: string; client: string; peer: string }[] = [];
  for (let i = 0; i < count; i++) {
    members.push({ name: count === 1 ? "shardline" : `shardline-${i}`, client: `http://127.0.0.1:${await freePort()}`, peer: `http://127.0.0.1:${await freePort()}` });
  }
  const cluster = members.map((m) => `${m.name}=${m.peer}`).join(",");
  let output = "";
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  let missing: Error | undefined;
  const children = members.map((m) => {
    const child = spawn(
      ETCD,
      [
        `--name=${m.name}`,
        `--data-dir=${count === 1 ? dataDir : join(dataDir, m.name)}`,
        `--listen-client-urls=${m.client}`,
        `--advertise-client-urls=${m.client}`,
        `--listen-peer-urls=${m.peer}`,
        `--initial-advertise-peer-urls=${m.peer}`,
        `--initial-cluster=${cluster}`,
        "--log-level=warn",
        "--logger=zap",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.once("error", (error: NodeJS.ErrnoException) => {
      missing =
        error.code === "ENOENT"
          ? new Error(`etcd is missing (${ETCD} is not on the PATH): the leader-failover benchmark and the etcd tests run a real etcd; install Debian's etcd-server (apt-get install -y etcd-server), as .ci/run does`, { cause: error })
          : error;
    });
    return { child, exited: new Promise<void>((resolve) => child.once("close", () => resolve())) };
  });
  const stop = async (): Promise<void> => {
    for (const { child, exited } of children) {
      if (child.exitCode === null && child.signalCode === null && missing === undefined) {
        child.kill("SIGKILL");
        await exited;
      }
    }
    await rm(dataDir, { recursive: true, force: true });
  };

  const hosts = members.map((m) => m.client);
  const probe = new Etcd3({ hosts, dialTimeout: 1000 });
  try {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (missing !== undefined) throw missing;
      const exited = children.find(({ child }) => child.exitCode !== null);
      if (exited !== undefined) throw new Error(`etcd exited with ${exited.child.exitCode} before answering; its output:\n${output}`);
      try {
        await probe.get("probe").string();
        break;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`etcd did not answer on ${hosts.join(", ")} within ${READY_TIMEOUT_MS} ms (${String(error)}); its output:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    probe.close();
  }
  const endpoints = hosts.map((h) => h.slice("http://".length));
  return {
    endpoint: endpoints[0]!,
    url: `etcd://${endpoints.join(",")}`,
    pids: children.map(({ child }) => child.pid!),
    log: () => output,
    signal: (name) => children.forEach(({ child }) => child.kill(name)),
    stop,
  };
}
