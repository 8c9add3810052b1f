import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Etcd3 } from "etcd3";
import { freePort } from "./processes.js";

/** Debian's etcd-server puts it here; `.ci/run` installs it. */
const ETCD = process.env.SHARDLINE_ETCD_BINARY ?? "etcd";

/**
 * Whether an etcd binary can be run. Tests that need one fail with this text rather than skip:
 * CI installs etcd-server, so a missing binary is a broken machine, not a reason to pass.
 */
export function requireEtcd(): void {
  const probe = spawnSync(ETCD, ["--version"], { encoding: "utf8" });
  if (probe.error !== undefined || probe.status !== 0) {
    throw new Error(
      `etcd is missing (${probe.error?.message ?? probe.stderr}): these tests run a real etcd; install Debian's etcd-server (apt-get install -y etcd-server), as .ci/run does`,
    );
  }
}

/** A one-member etcd on loopback ports with a temporary data directory, removed on stop. */
export class EtcdServer {
  private constructor(
    readonly endpoint: string,
    private readonly child: ChildProcess,
    private readonly dataDir: string,
    private readonly output: () => string,
  ) {}

  /** Starts etcd and resolves once it answers a read. */
  static async start(): Promise<EtcdServer> {
    requireEtcd();
    const dataDir = await mkdtemp(join(tmpdir(), "shardline-etcd-"));
    const clientPort = await freePort();
    const peerPort = await freePort();
    const client = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const child = spawn(
      ETCD,
      [
        "--name=test",
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=test=${peer}`,
        "--log-level=warn",
        "--logger=zap",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-20_000);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    const server = new EtcdServer(`127.0.0.1:${clientPort}`, child, dataDir, () => output);
    const probe = new Etcd3({ hosts: client, dialTimeout: 1000 });
    try {
      const deadline = Date.now() + 20_000;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`etcd exited with ${child.exitCode}:\n${output}`);
        try {
          await probe.get("probe").string();
          break;
        } catch (error) {
          if (Date.now() > deadline) throw new Error(`etcd did not answer within 20 s (${String(error)}):\n${output}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    } catch (error) {
      await server.stop();
      throw error;
    } finally {
      probe.close();
    }
    return server;
  }

  /** `etcd://HOST:PORT` for --store. */
  get url(): string {
    return `etcd://${this.endpoint}`;
  }

  /**
   * A client of this server, for a test to look at or change what the controller wrote. With
   * `deadlineMs`, each request (not watches and keepalives) fails after that long, as the
   * controller's do.
   */
  client(deadlineMs?: number): Etcd3 {
    return new Etcd3({
      hosts: `http://${this.endpoint}`,
      ...(deadlineMs === undefined ? {} : { defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + deadlineMs }) }),
    });
  }

  /** Freezes etcd (SIGSTOP): connections stay open and nothing answers, as in a long pause. */
  pause(): void {
    this.child.kill("SIGSTOP");
  }

  resume(): void {
    this.child.kill("SIGCONT");
  }

  /** What etcd printed, for failure messages. */
  log(): string {
    return this.output();
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((resolve) => this.child.once("exit", resolve));
      this.child.kill("SIGKILL");
      await exited;
    }
    await rm(this.dataDir, { recursive: true, force: true });
  }
}
