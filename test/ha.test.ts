import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { EtcdServer } from "./harness/etcd.js";
import { adminClient, CliProcess, freePort, requireBuiltCli, shardline, startAgent, waitFor } from "./harness/processes.js";

// Three controller processes on one real etcd, three agent processes given all three addresses,
// and a 6-shard job firing every second. The leader is SIGKILLed, then the next one is stopped
// with SIGTERM; every fire must still run once and only once.

const HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "recording-handlers.mjs");
const SHARDS = [0, 1, 2, 3, 4, 5];
const JOB = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: sweep}
spec:
  schedule: "* * * * * *"
  shards: 6
  handler: work
  misfire: catch-up
  maxCatchUp: 10
`;

interface Run {
  event: "start" | "end";
  shard: number;
  fireTime: number;
  attempt: number;
  agent: string;
  at: number;
}

/** A controller replica on a fixed port, restartable on it. */
class Replica {
  process: CliProcess | undefined;
  constructor(
    readonly name: string,
    readonly port: number,
    readonly store: string,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.process = new CliProcess(this.name, ["controller", "--listen", this.address, "--http", "127.0.0.1:0", "--store", this.store]);
    await waitFor(`${this.name} to serve`, async () => {
      if (!this.process!.running) throw new Error(`${this.name} exited:\n${this.process!.output}`);
      return this.process!.output.includes("controller serving on") ? true : undefined;
    });
  }

  /** The term this replica leads in, once its log says it does. */
  leadingTerm(): number | undefined {
    const match = /leading \(term (\d+)\)/.exec(this.process?.output ?? "");
    return match === null ? undefined : Number(match[1]);
  }
}

describe("HA controllers on etcd", () => {
  let etcd: EtcdServer;
  let dir: string;
  let record: string;
  const replicas: Replica[] = [];
  const agents: CliProcess[] = [];

  beforeAll(async () => {
    requireBuiltCli();
    etcd = await EtcdServer.start();
    dir = await mkdtemp(join(tmpdir(), "shardline-ha-"));
    record = join(dir, "runs.jsonl");
    writeFileSync(record, "");
  }, 30_000);

  let failed = false;
  afterEach(({ task }) => {
    if (task.result?.state === "fail") failed = true;
  });
  afterAll(async () => {
    if (failed) {
      for (const process of [...replicas.map((r) => r.process), ...agents]) if (process) console.error(`--- ${process.name}\n${process.output}`);
    }
    await Promise.all(agents.map((agent) => agent.stop()));
    await Promise.all(replicas.map((replica) => replica.process?.stop()));
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const runs = (): Run[] =>
    readFileSync(record, "utf8")
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as Run);

  const leader = async (term: number): Promise<Replica> =>
    waitFor(`a replica to lead in term ${term}`, async () => replicas.find((r) => r.process?.running && r.leadingTerm() === term), 20_000);

  /** Waits until every shard has finished a run of a fire later than `after`; resolves when. */
  const everyShardRanAfter = (after: number, what: string): Promise<number> =>
    waitFor(what, async () => {
      const done = new Set(runs().filter((r) => r.event === "end" && r.fireTime > after).map((r) => r.shard));
      return done.size === SHARDS.length ? Date.now() : undefined;
    });

  it("survives a SIGKILLed leader and a stopped one: agents and the CLI follow the leader, and every fire runs exactly once", async () => {
    for (const name of ["ctl-1", "ctl-2", "ctl-3"]) replicas.push(new Replica(name, await freePort(), `${etcd.url}/ha-test`));
    await Promise.all(replicas.map((replica) => replica.start()));
    const first = await leader(1);
    const followers = replicas.filter((r) => r !== first);
    const all = replicas.map((r) => r.address).join(",");

    // The CLI, given a follower, is sent on to the leader.
    const manifest = join(dir, "sweep.yaml");
    writeFileSync(manifest, JOB);
    const applied = await shardline(["apply", "-f", manifest, "--controller", followers[0]!.address]);
    // No agent runs yet: the apply says so, and succeeds.
    expect(applied.stderr).toMatch(/^warning: job\/sweep: no connected agent can run it now: no agent is connected; its fires wait \(spec\.misfire: [a-z-]+\)\n$/);
    expect(applied.code).toBe(0);

    for (const id of ["agent-a", "agent-b", "agent-c"]) agents.push(startAgent(all, id, HANDLERS, { SHARDLINE_TEST_RECORD: record }));
    const started = Date.now();
    await everyShardRanAfter(started, "a fire on every shard through the first leader");

    // SIGKILL: the leader's etcd lease lapses, another replica wins term 2.
    const killedAt = Date.now();
    first.process!.kill("SIGKILL");
    const second = await leader(2);
    const electedAt = Date.now();
    const resumedAt = await everyShardRanAfter(electedAt, "every shard to run again under the second leader");
    console.log(`leader SIGKILL: new leader after ${electedAt - killedAt} ms; every shard ran a fire after it within ${resumedAt - killedAt} ms of the kill`);

    // The killed replica comes back as a follower; then the leader is stopped and resigns at once.
    await first.start();
    expect(first.leadingTerm()).toBeUndefined();
    const stoppedAt = Date.now();
    await second.process!.stop();
    const third = await leader(3);
    console.log(`leader SIGTERM: new leader after ${Date.now() - stoppedAt} ms`);
    const endedAt = await everyShardRanAfter(Date.now(), "every shard to run under the third leader");
    expect([first, ...followers]).toContain(third);

    // Every fire from the first leader's until the third's, settled in the history.
    const from = started + 1000;
    const until = endedAt - 3000;
    const admin = adminClient(third.address);
    try {
      const executions = await waitFor("the fires of the window to settle", async () => {
        const listed = (await admin.listExecutions({ job: "sweep", limit: 10_000 })).executions.filter(
          (e) => Number(e.fireTimeUnixMs) >= from && Number(e.fireTimeUnixMs) < until,
        );
        return listed.every((e) => e.state !== ExecutionState.PENDING && e.state !== ExecutionState.RUNNING) ? listed : undefined;
      });
      const fires = new Set(executions.map((e) => Number(e.fireTimeUnixMs)));
      expect(fires.size).toBeGreaterThanOrEqual(Math.floor((until - from) / 1000) - 1);
      for (const fire of fires) {
        for (const shard of SHARDS) {
          const attempts = executions.filter((e) => Number(e.fireTimeUnixMs) === fire && e.shard === shard).sort((a, b) => b.attempt - a.attempt);
          const last = attempts[0];
          const label = `fire ${fire} shard ${shard}: ${attempts.map((e) => `${ExecutionState[e.state]} ${e.error}`).join("; ")}`;
          expect(last, label).toBeDefined();
          // Succeeded, or misfired with a reason: accounted for, never silently gone.
          expect(last!.state === ExecutionState.SUCCEEDED || (last!.state === ExecutionState.MISFIRED && last!.error !== ""), label).toBe(true);
        }
      }
    } finally {
      admin.close();
    }

    // No (fire, shard) finished twice. A run started again only after its first attempt was
    // aborted (its agent fenced itself while no controller led), never beside it.
    const recorded = runs();
    const ends = recorded.filter((r) => r.event === "end").map((r) => `${r.fireTime}/${r.shard}`);
    const twice = ends.filter((key, i) => ends.indexOf(key) !== i);
    expect(twice.map((key) => recorded.filter((r) => `${r.fireTime}/${r.shard}` === key))).toEqual([]);
    const starts = new Map<string, Run[]>();
    for (const run of recorded.filter((r) => r.event === "start")) {
      const key = `${run.fireTime}/${run.shard}`;
      starts.set(key, [...(starts.get(key) ?? []), run]);
    }
    for (const list of starts.values()) {
      for (const earlier of list.slice(0, -1)) {
        const ended = recorded.some((r) => r.event === "end" && r.fireTime === earlier.fireTime && r.shard === earlier.shard && r.attempt === earlier.attempt);
        expect(ended, `attempt ${earlier.attempt} of ${earlier.fireTime}/${earlier.shard} ran to its end and was started again`).toBe(false);
      }
    }
  }, 120_000);

  // Continues with the replicas and agents of the test above.
  it("fences a leader paused past its etcd lease: another leads, and the paused one exits when it wakes without acting as leader", async () => {
    const paused = replicas.find((r) => r.process?.running && r.leadingTerm() !== undefined);
    expect(paused).toBeDefined();
    const term = paused!.leadingTerm()!;
    const recordedBefore = runs().length;
    paused!.process!.kill("SIGSTOP");
    const next = await leader(term + 1);
    const resumedAt = await everyShardRanAfter(Date.now(), "every shard to run under the leader that replaced the paused one");
    paused!.process!.kill("SIGCONT");
    const exit = await paused!.process!.exited;
    expect(exit.code).not.toBe(0);
    expect(paused!.process!.output).toContain("lost the leadership");
    expect(next.process!.running).toBe(true);
    await everyShardRanAfter(resumedAt + 2000, "fires to go on after the paused leader woke");

    const recorded = runs().slice(recordedBefore);
    const ends = recorded.filter((r) => r.event === "end").map((r) => `${r.fireTime}/${r.shard}`);
    expect(ends.filter((key, i) => ends.indexOf(key) !== i)).toEqual([]);
  }, 60_000);
});
