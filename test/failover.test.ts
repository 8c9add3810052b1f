import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import {
  type AdminClient,
  adminClient,
  type CliProcess,
  ControllerProcess,
  freePort,
  requireBuiltCli,
  startAgent,
  waitFor,
} from "./harness/processes.js";

const HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "recording-handlers.mjs");
// catch-up keeps every late fire (up to 10 a shard): on a loaded test machine the agents can fall
// a second behind, and fire-once would then rightly coalesce fires, which would hide whether a
// drain or a failover lost one. With catch-up, any fire not run is a real loss.
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
  job: string;
  shard: number;
  fireTime: number;
  attempt: number;
  agent: string;
  at: number;
}

/** A controller and three agent processes, with a 6-shard job firing every second. */
class Cluster {
  dir = "";
  record = "";
  controller!: ControllerProcess;
  agents = new Map<string, CliProcess>();
  admin!: AdminClient;

  async start(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), "shardline-e2e-"));
    this.record = join(this.dir, "runs.jsonl");
    writeFileSync(this.record, "");
    this.controller = new ControllerProcess(await freePort(), join(this.dir, "state.db"));
    await this.controller.start();
    this.admin = adminClient(this.controller.address);
    for (const id of ["agent-a", "agent-b", "agent-c"]) this.startAgent(id);
    await this.admin.applyJob({ manifest: JOB });
    await waitFor("six shards spread over three agents", async () => {
      const agents = (await this.admin.listAgents({})).agents;
      return agents.length === 3 && agents.every((a) => a.shards.length === 2) ? true : undefined;
    });
  }

  startAgent(id: string): CliProcess {
    const agent = startAgent(this.controller.address, id, HANDLERS, { SHARDLINE_TEST_RECORD: this.record });
    this.agents.set(id, agent);
    return agent;
  }

  async owners(): Promise<Map<number, string>> {
    const assignments = (await this.admin.listAssignments({ job: "sweep" })).assignments;
    return new Map(assignments.map((a) => [a.shard, a.agent]));
  }

  runs(): Run[] {
    return readFileSync(this.record, "utf8")
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as Run);
  }

  /** Waits until every shard has a succeeded run of a fire later than `after`. */
  async waitForFireAfter(after: number, what: string): Promise<void> {
    await waitFor(what, async () => {
      const done = new Set(this.runs().filter((r) => r.event === "end" && r.fireTime > after).map((r) => r.shard));
      return done.size === 6 ? true : undefined;
    });
  }

  async stop(): Promise<void> {
    this.admin?.close();
    await Promise.all([...this.agents.values()].map((a) => a.stop()));
    await this.controller?.process?.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  debug(): string {
    return [this.controller.process?.output ?? "", ...[...this.agents.values()].map((a) => `--- ${a.name}\n${a.output}`)].join("\n");
  }
}

/** Every (fire, shard) that two runs started, with both runs. */
function duplicates(runs: Run[]): Run[][] {
  const starts = new Map<string, Run[]>();
  for (const run of runs.filter((r) => r.event === "start")) {
    const key = `${run.fireTime}/${run.shard}`;
    starts.set(key, [...(starts.get(key) ?? []), run]);
  }
  return [...starts.values()].filter((list) => list.length > 1);
}

describe("a sharded cron job on real processes", () => {
  let cluster: Cluster;
  beforeAll(() => requireBuiltCli());
  beforeEach(async () => {
    cluster = new Cluster();
    await cluster.start();
  });
  afterEach(async (context) => {
    if (context.task.result?.state === "fail") console.error(cluster.debug());
    await cluster.stop();
  });

  it("moves a SIGKILLed agent's shards to the survivors after its lease, running no (fire, shard) twice at once", async () => {
    await cluster.waitForFireAfter(0, "a first fire on every shard");
    const before = await cluster.owners();
    const victimShards = [...before].filter(([, agent]) => agent === "agent-b").map(([shard]) => shard);
    expect(victimShards.length).toBe(2);

    const killedAt = Date.now();
    cluster.agents.get("agent-b")!.kill("SIGKILL");
    await cluster.waitForFireAfter(killedAt + 1000, "every shard to run again after the kill");

    const after = await cluster.owners();
    for (const [shard, agent] of before) {
      if (agent === "agent-b") expect(["agent-a", "agent-c"]).toContain(after.get(shard));
      else expect(after.get(shard)).toBe(agent);
    }
    const runs = cluster.runs();
    for (const shard of victimShards) {
      expect(runs.some((r) => r.event === "end" && r.shard === shard && r.agent !== "agent-b" && r.fireTime > killedAt)).toBe(true);
    }
    // A run the victim started and never finished may be run again (failover), but only after
    // the victim is gone; nothing ever finished twice.
    for (const pair of duplicates(runs)) {
      const [first, second] = pair.sort((x, y) => x.at - y.at);
      expect(first!.agent).toBe("agent-b");
      expect(second!.at).toBeGreaterThanOrEqual(killedAt);
    }
    const ends = runs.filter((r) => r.event === "end").map((r) => `${r.fireTime}/${r.shard}`);
    expect(new Set(ends).size).toBe(ends.length);
  });

  it("misses no fire when an agent is stopped with SIGTERM", async () => {
    await cluster.waitForFireAfter(0, "a first fire on every shard");
    const stoppedAt = Date.now();
    const leaving = cluster.agents.get("agent-c")!;
    leaving.kill("SIGTERM");
    const exit = await leaving.exited;
    expect(exit.code).toBe(0);
    await cluster.waitForFireAfter(Date.now() + 2000, "three more fires after the agent left");

    const owners = await cluster.owners();
    expect([...owners.values()].filter((a) => a === "agent-c")).toEqual([]);
    // Every fire from a second before the SIGTERM to two seconds after it, once the controller
    // has recorded how each of its executions ended (agents record a run's end before they report it).
    const since = stoppedAt - 1000;
    const until = stoppedAt + 2000;
    const window = await waitFor("the fires around the SIGTERM to settle in the history", async () => {
      const executions = (await cluster.admin.listExecutions({ job: "sweep", limit: 1000 })).executions.filter(
        (e) => Number(e.fireTimeUnixMs) >= since && Number(e.fireTimeUnixMs) < until,
      );
      const settled = executions.every((e) => e.state !== ExecutionState.PENDING && e.state !== ExecutionState.RUNNING);
      return settled && new Set(executions.map((e) => e.fireTimeUnixMs)).size >= 3 ? executions : undefined;
    });
    const missed = window.filter((e) => e.state === ExecutionState.MISFIRED || e.state === ExecutionState.LOST);
    expect(missed.map((e) => `${e.id} ${ExecutionState[e.state]} on ${e.agent || "no agent"}: ${e.error}`)).toEqual([]);
    for (const fire of new Set(window.map((e) => Number(e.fireTimeUnixMs)))) {
      const succeeded = window.filter((e) => Number(e.fireTimeUnixMs) === fire && e.state === ExecutionState.SUCCEEDED);
      expect(succeeded.map((e) => e.shard).sort()).toEqual([0, 1, 2, 3, 4, 5]);
    }
  });

  it("keeps jobs and history across a controller restart, and agents keep their shards", async () => {
    await cluster.waitForFireAfter(0, "a first fire on every shard");
    const owners = await cluster.owners();
    const history = (await cluster.admin.listExecutions({ job: "sweep", limit: 1000 })).executions.filter(
      (e) => e.state === ExecutionState.SUCCEEDED,
    );
    await cluster.controller.process!.stop();
    // The restarted controller gives shards only to the agents that claim them for one lease
    // after it starts; an agent whose reconnect backoff runs past that (a loaded machine) would
    // rightly lose its shards. A longer lease for this controller gives them the time to claim.
    cluster.controller.extraArgs = ["--lease-ttl", "6000"];
    await cluster.controller.start();
    await waitFor("all three agents to reconnect", async () => {
      const agents = (await cluster.admin.listAgents({})).agents;
      return agents.filter((a) => a.state === 1).length === 3 ? true : undefined;
    });
    const restartedAt = Date.now();
    await cluster.waitForFireAfter(restartedAt, "a fire on every shard after the restart");

    expect((await cluster.admin.listJobs({})).jobs.map((j) => j.name)).toEqual(["sweep"]);
    expect(await cluster.owners()).toEqual(owners);
    const kept = new Set((await cluster.admin.listExecutions({ job: "sweep", limit: 1000 })).executions.map((e) => e.id));
    for (const execution of history) expect(kept.has(execution.id)).toBe(true);
    const ends = cluster.runs().filter((r) => r.event === "end").map((r) => `${r.fireTime}/${r.shard}`);
    expect(new Set(ends).size).toBe(ends.length);
  });
});
