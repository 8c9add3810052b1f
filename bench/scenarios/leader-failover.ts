import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { startEtcd } from "../../tools/etcd-server.js";
import { type AdminClient, freePort, type LoadProcess, manifest, startLoad, until } from "../harness.js";
import type { LoadReport } from "../load-agents.js";

const CLI = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "cli", "main.js");

export interface LeaderFailoverOptions {
  /** Leaders SIGKILLed, one after another. */
  rounds: number;
  agents: number;
  /** Load processes the agents are spread over. */
  processes: number;
  shards: number;
}

export interface LeaderFailoverResult {
  /** Per round: SIGKILL of the leader to another replica leading (the time on its `leading` log line). */
  electedMs: number[];
  /** Per round: SIGKILL of the leader to every shard having run a fire to its end under the new leader. */
  resumedMs: number[];
  /** (fire, shard) pairs that ran to their end more than once, over the whole scenario. */
  doubledFires: number;
  /** Each doubled fire's runs, one line each, for the log: what a reader needs to chase one. */
  doubled: string[];
  /** (fire, shard) pairs that ran to their end, over the whole scenario. */
  firesRun: number;
  /** The leader's etcd lease (--leader-ttl; the controller's default). */
  leaderTtlSeconds: number;
}

const LEADER_TTL_SECONDS = 2;
const REPLICAS = 3;

type Run = Extract<LoadReport, { type: "run" }>;

/** A controller replica on a fixed loopback port, so agents given every address find it again when it restarts. */
class Replica {
  private child: ChildProcess | undefined;
  private output = "";
  private pending = "";
  private stopping = false;
  /** The terms this process led in, with the time its log gave for each. */
  private leads: { term: number; at: number }[] = [];
  private serving = false;

  constructor(
    readonly name: string,
    readonly address: string,
    private readonly store: string,
  ) {}

  async start(): Promise<void> {
    this.output = "";
    this.pending = "";
    this.leads = [];
    this.serving = false;
    this.stopping = false;
    const http = `127.0.0.1:${await freePort()}`;
    const nodeArgs = process.env.SHARDLINE_BENCH_CONTROLLER_NODE_ARGS?.split(" ").filter((a) => a !== "") ?? [];
    const child = spawn(
      process.execPath,
      [...nodeArgs, CLI, "--log-level", "info", "controller", "--listen", this.address, "--http", http, "--store", this.store, "--leader-ttl", String(LEADER_TTL_SECONDS)],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child = child;
    const read = (chunk: Buffer): void => {
      const text = chunk.toString();
      this.output = (this.output + text).slice(-20_000);
      const lines = (this.pending + text).split("\n");
      this.pending = lines.pop()!;
      for (const line of lines) this.readLine(line);
    };
    child.stdout!.on("data", read);
    child.stderr!.on("data", read);
    child.once("exit", (code, signal) => {
      if (!this.stopping) process.stderr.write(`bench: controller ${this.name} exited (${code ?? signal}) unasked; its last output:\n${this.output}\n`);
    });
    await until(`controller ${this.name} to serve`, () => {
      if (child.exitCode !== null) throw new Error(`controller ${this.name} exited with ${child.exitCode}:\n${this.output}`);
      return this.serving ? true : undefined;
    });
  }

  /** The controller logs JSON lines on stderr (it is not a terminal); the ones read here have a `msg` and a `time`. */
  private readLine(line: string): void {
    let entry: { msg?: unknown; time?: unknown };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      return;
    }
    if (typeof entry.msg !== "string") return;
    if (entry.msg.startsWith("controller serving on")) this.serving = true;
    const leading = /^leading \(term (\d+)\)$/.exec(entry.msg);
    if (leading !== null) this.leads.push({ term: Number(leading[1]), at: typeof entry.time === "number" ? entry.time : Date.now() });
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The latest term this process leads in, and when it began to; undefined while it follows. */
  get lead(): { term: number; at: number } | undefined {
    return this.running ? this.leads[this.leads.length - 1] : undefined;
  }

  async kill(): Promise<void> {
    const child = this.child!;
    this.stopping = true;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGKILL");
    await exited;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined || !this.running) return;
    this.stopping = true;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * Leader failover on etcd: a real etcd, three controller replicas and agents in their own
 * processes given every replica's address, with a job firing every second on several shards.
 * Each round SIGKILLs the leader and times, from the kill, another replica's election and every
 * shard running a fire again under it; the killed replica then comes back as a follower. Every
 * run reports its start and end from the agent, so a (fire, shard) run to its end twice is seen
 * even if no controller ever learnt of it. The leader dies just as a fire's runs have ended,
 * with their reports on their way to it and to etcd: where a lost or misread report would make
 * the next leader run a finished fire again.
 */
export async function shardlineLeaderFailover(options: LeaderFailoverOptions): Promise<LeaderFailoverResult> {
  const etcd = await startEtcd();
  const replicas: Replica[] = [];
  const loads: LoadProcess[] = [];
  const runs: Run[] = [];
  try {
    for (let i = 0; i < REPLICAS; i++) replicas.push(new Replica(`ctl-${i}`, `127.0.0.1:${await freePort()}`, `${etcd.url}/bench-leader-failover`));
    await Promise.all(replicas.map((replica) => replica.start()));
    const leader = (): Promise<Replica> =>
      until("a controller replica to lead", () => {
        const leading = replicas.filter((r) => r.lead !== undefined).sort((a, b) => b.lead!.term - a.lead!.term);
        return leading[0];
      });
    /** Resolves with when every shard has run a fire to its end under a term above `term`, and after `since`. */
    const everyShardRan = (what: string, term: number, since = 0): Promise<number> =>
      until(
        what,
        () => {
          const first = new Map<number, number>();
          for (const run of runs) if (run.event === "end" && run.term > term && run.at > since && !first.has(run.shard)) first.set(run.shard, run.at);
          return first.size >= options.shards ? Math.max(...first.values()) : undefined;
        },
        30_000,
        5,
      );

    loads.push(...(await startLoad(replicas.map((r) => r.address).join(","), "lf", options.agents, options.processes)));
    for (const load of loads) load.onReport((report) => void (report.type === "run" && runs.push(report)));
    const initial = await leader();
    await withAdmin(initial.address, async (admin) => {
      await until(`${options.agents} agents to connect`, async () => ((await admin.listAgents({})).agents.length >= options.agents ? true : undefined), 60_000, 100);
      await admin.applyJob({ manifest: manifest("sweep", { schedule: "* * * * * *", shards: options.shards, handler: "record" }) });
    });
    await everyShardRan("every shard to run a fire", 0);

    // Each kill follows at once the wait above, or the one closing the round before: a run has just ended on every shard.
    const electedMs: number[] = [];
    const resumedMs: number[] = [];
    for (let round = 0; round < options.rounds; round++) {
      const victim = await leader();
      const term = victim.lead!.term;
      const killedAt = Date.now();
      await victim.kill();
      const next = await until(`a replica to lead after term ${term}`, () => replicas.find((r) => r.lead !== undefined && r.lead.term > term), 30_000, 5);
      electedMs.push(next.lead!.at - killedAt);
      resumedMs.push((await everyShardRan(`every shard to run a fire under the leader after term ${term}`, term)) - killedAt);
      await victim.start();
      if (victim.lead !== undefined) throw new Error(`benchmark: ${victim.name} came back leading, not following ${next.name}`);
      // Steady again before the next kill: a whole fire on every shard after the restart.
      await everyShardRan(`every shard to run a fire after ${victim.name} came back`, term, Date.now());
    }

    const keyOf = (run: Run): string => `${run.job}/${run.fireTime}/${run.shard}`;
    const ends = new Map<string, number>();
    for (const run of runs) if (run.event === "end") ends.set(keyOf(run), (ends.get(keyOf(run)) ?? 0) + 1);
    const doubled = [...ends.entries()]
      .filter(([, count]) => count > 1)
      .map(([key]) => {
        const story = runs.filter((r) => keyOf(r) === key).map((r) => `${r.event} of attempt ${r.attempt} on ${r.agent} in term ${r.term} at ${new Date(r.at).toISOString()}`);
        return `${key}: ${story.join("; ")}`;
      });
    return { electedMs, resumedMs, doubledFires: doubled.length, doubled, firesRun: ends.size, leaderTtlSeconds: LEADER_TTL_SECONDS };
  } finally {
    await Promise.all(loads.map((load) => load.stop()));
    await Promise.all(replicas.map((replica) => replica.stop()));
    await etcd.stop();
  }
}

async function withAdmin<T>(address: string, use: (admin: AdminClient) => Promise<T>): Promise<T> {
  const admin = createClient(AdminService, address);
  try {
    return await use(admin);
  } finally {
    admin.close();
  }
}
