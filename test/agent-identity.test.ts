import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { RunRecord } from "./harness/fire-evidence.js";
import { waitFor } from "./harness/processes.js";
import { CHAOS_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";
import type { TrackedProcess } from "./harness/tracked-process.js";

// Each run appends its start (with the process id of the agent that ran it) and its end to a file
// (CHAOS_HANDLERS): the agents' own record of what ran where, not the controller's.
const JOB = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: sweep}
spec:
  schedule: "* * * * * *"
  shards: 2
  handler: work
`;

/** An agent process under `--id worker-1`, with its stderr kept apart and its log lines parsed. */
class Worker {
  stderr = "";

  constructor(readonly process: TrackedProcess) {
    this.process.child.stderr!.on("data", (chunk: Buffer) => (this.stderr += chunk.toString()));
  }

  get pid(): number {
    return this.process.child.pid!;
  }

  /** Its JSON log lines. */
  lines(): { msg: string; [field: string]: unknown }[] {
    return this.stderr
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { msg: string });
  }

  /** The instance id it logged when a controller welcomed it. */
  instanceId(): Promise<string> {
    return waitFor(`${this.pid} to be welcomed`, async () => {
      if (!this.process.running) throw new Error(`the agent exited:\n${this.process.output}`);
      return this.lines().find((line) => line.msg === "connected")?.instanceId as string | undefined;
    });
  }
}

describe("one process per agent id, on real processes", () => {
  let env: ShardlineTestEnv<SqliteController>;

  beforeEach(async () => {
    env = await ShardlineTestEnv.single({ name: "identity", handlers: CHAOS_HANDLERS, agentEnv: { SHARDLINE_TEST_WORK_MS: "100" } });
  });
  afterEach(async (context) => {
    if (context.task.result?.state === "fail") env.failed = true;
    await env.close();
  });

  function worker(args: string[] = []): Worker {
    return new Worker(env.startAgent("worker-1", { args }));
  }

  function runs(): RunRecord[] {
    return env.runs();
  }

  /** Waits until the process `pid` has finished a run of every shard of a fire later than `after`. */
  async function firesRunBy(pid: number, after: number, what: string): Promise<void> {
    await waitFor(what, async () => {
      const shards = new Set(runs().filter((r) => r.event === "end" && r.pid === pid && r.fireTime > after).map((r) => r.shard));
      return shards.size === 2 ? true : undefined;
    });
  }

  /** Every execution (job, shard, fire, attempt) that was started more than once, with its starts. */
  function startedTwice(): RunRecord[][] {
    const starts = new Map<string, RunRecord[]>();
    for (const run of runs().filter((r) => r.event === "start")) {
      const key = `${run.job}/${run.shard}/${run.fireTime}/${run.attempt}`;
      starts.set(key, [...(starts.get(key) ?? []), run]);
    }
    return [...starts.values()].filter((list) => list.length > 1);
  }

  async function assignments() {
    return (await env.admin.listAssignments({ job: "sweep" })).assignments.map((a) => ({ shard: a.shard, agent: a.agent, term: a.term, generation: a.generation }));
  }

  async function holder() {
    return (await env.admin.listAgents({})).agents.find((agent) => agent.id === "worker-1");
  }

  it("refuses a second process under a held id (exit 4, the controller's message), leaves the holder its shards, and lets a new process take the id of a killed holder, running its shards once its lease lapses", async () => {
    const a = worker();
    const aInstance = await a.instanceId();
    await env.admin.applyJob({ manifest: JOB });
    await firesRunBy(a.pid, 0, "worker-1 (process A) to run both shards");
    const before = await assignments();
    expect(before.map((x) => x.agent)).toEqual(["worker-1", "worker-1"]);

    const b = worker();
    const exited = await b.process.exited;
    expect(exited.code, b.process.output).toBe(4);
    const refusal = b.stderr.split("\n").filter((line) => line.startsWith("shardline: "));
    expect(refusal).toHaveLength(1);
    expect(refusal[0]).toMatch(/^shardline: agent id "worker-1" is held by another process \(instance .*; its lease runs for another [\d.]+ s\. .*--wait-for-id/);
    expect(b.lines().some((line) => line.level === 50 && line.msg.startsWith('the controller refused this agent: agent id "worker-1" is held by another process'))).toBe(true);

    // The holder keeps its stream, its shards under the same assignments, and goes on running them.
    const refusedAt = Date.now();
    expect(a.process.running).toBe(true);
    await firesRunBy(a.pid, refusedAt, "process A to run both shards again after the refusal");
    expect(await assignments()).toEqual(before);
    expect(await holder()).toMatchObject({ instanceId: aInstance, refusedHellos: 1 });
    expect(runs().filter((r) => r.pid === b.pid)).toEqual([]);
    expect(startedTwice()).toEqual([]);

    // A dies without a word; a new process C under the same id takes it over at once, is given
    // A's shards once A's lease is over (A might be alive behind a partition until then), and
    // runs them, with new generations.
    a.process.kill("SIGKILL");
    await a.process.exited;
    const killedAt = Date.now();
    const c = worker();
    const cInstance = await c.instanceId();
    expect(cInstance).not.toBe(aInstance);
    await firesRunBy(c.pid, killedAt, "process C to run both shards");
    expect(c.process.running).toBe(true);
    const handed = await assignments();
    expect(handed.map((x) => x.agent)).toEqual(["worker-1", "worker-1"]);
    expect(handed.every((x, i) => x.generation > before[i]!.generation)).toBe(true);
    expect(await holder()).toMatchObject({ instanceId: cInstance });
    // A run A started and never finished may be run again, as a new attempt; no execution twice.
    expect(startedTwice()).toEqual([]);
  });

  it("with --wait-for-id, a second process waits for the id while the holder runs, and takes it once the holder stops", async () => {
    const a = worker();
    const aInstance = await a.instanceId();
    await env.admin.applyJob({ manifest: JOB });
    await firesRunBy(a.pid, 0, "worker-1 (process A) to run both shards");

    const b = worker(["--wait-for-id"]);
    const waiting = await waitFor("process B to say it waits for the id", async () =>
      b.lines().find((line) => line.level === 40 && line.msg.startsWith('waiting for agent id "worker-1": agent id "worker-1" is held by another process')),
    );
    expect(waiting.msg).toMatch(/; trying again with the reconnect backoff until it is free$/);
    expect(b.process.running).toBe(true);
    expect(await holder()).toMatchObject({ instanceId: aInstance });

    a.process.kill("SIGTERM");
    expect(await a.process.exited).toEqual({ code: 0, signal: null });
    const stoppedAt = Date.now();
    const bInstance = await b.instanceId();
    expect(bInstance).not.toBe(aInstance);
    await firesRunBy(b.pid, stoppedAt, "process B to run both shards once A stopped");
    expect(await holder()).toMatchObject({ instanceId: bInstance });
    expect(startedTwice()).toEqual([]);
  });
});
