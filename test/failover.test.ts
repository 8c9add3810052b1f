import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import type { RunRecord } from "./harness/fire-evidence.js";
import { waitFor } from "./harness/processes.js";
import { RECORDING_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";

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

/** A controller and three agent processes, with a 6-shard job firing every second. */
async function cluster(env: ShardlineTestEnv<SqliteController>): Promise<void> {
  for (const id of ["agent-a", "agent-b", "agent-c"]) env.startAgent(id);
  await env.admin.applyJob({ manifest: JOB });
  await waitFor("six shards spread over three agents", async () => {
    const agents = (await env.admin.listAgents({})).agents;
    return agents.length === 3 && agents.every((a) => a.shards.length === 2) ? true : undefined;
  });
}

/** Waits until every shard has a succeeded run of a fire later than `after`. */
const fireAfter = (env: ShardlineTestEnv, after: number, what: string): Promise<number> => env.everyShardRan(what, { shards: 6, after });

/** Every (fire, shard) that two runs started, with both runs. */
function duplicates(runs: RunRecord[]): RunRecord[][] {
  const starts = new Map<string, RunRecord[]>();
  for (const run of runs.filter((r) => r.event === "start")) {
    const key = `${run.fireTime}/${run.shard}`;
    starts.set(key, [...(starts.get(key) ?? []), run]);
  }
  return [...starts.values()].filter((list) => list.length > 1);
}

describe("a sharded cron job on real processes", () => {
  let env: ShardlineTestEnv<SqliteController>;
  beforeEach(async () => {
    env = await ShardlineTestEnv.single({ name: "e2e", handlers: RECORDING_HANDLERS });
    await env.settingUp(() => cluster(env));
  });
  afterEach(async (context) => {
    if (context.task.result?.state === "fail") env.failed = true;
    await env.close();
  });

  it("moves a SIGKILLed agent's shards to the survivors after its lease, running no (fire, shard) twice at once", async () => {
    await fireAfter(env, 0, "a first fire on every shard");
    const before = await env.owners("sweep");
    const victimShards = [...before].filter(([, agent]) => agent === "agent-b").map(([shard]) => shard);
    expect(victimShards.length).toBe(2);

    const killedAt = Date.now();
    env.agents.get("agent-b")!.kill("SIGKILL");
    await fireAfter(env, killedAt + 1000, "every shard to run again after the kill");

    const after = await env.owners("sweep");
    for (const [shard, agent] of before) {
      if (agent === "agent-b") expect(["agent-a", "agent-c"]).toContain(after.get(shard));
      else expect(after.get(shard)).toBe(agent);
    }
    const runs = env.runs();
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
    await fireAfter(env, 0, "a first fire on every shard");
    const stoppedAt = Date.now();
    const leaving = env.agents.get("agent-c")!;
    leaving.kill("SIGTERM");
    const exit = await leaving.exited;
    expect(exit.code).toBe(0);
    await fireAfter(env, Date.now() + 2000, "three more fires after the agent left");

    const owners = await env.owners("sweep");
    expect([...owners.values()].filter((a) => a === "agent-c")).toEqual([]);
    // Every fire from a second before the SIGTERM to two seconds after it, once the controller
    // has recorded how each of its executions ended (agents record a run's end before they report it).
    const since = stoppedAt - 1000;
    const until = stoppedAt + 2000;
    const window = await waitFor("the fires around the SIGTERM to settle in the history", async () => {
      const executions = (await env.admin.listExecutions({ job: "sweep", limit: 1000 })).executions.filter(
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
    // Agents keep their shards through a restart shorter than their lease: one that lapses
    // meanwhile fences, claims nothing, and its shards are placed anew. On a loaded machine a
    // restart can take longer than the default 2 s, so the agents first get a 6 s lease from a
    // controller started with it; the restart under test then happens within that lease (and the
    // restarted controller waits as long for their claims).
    env.controller.extraArgs = ["--lease-ttl", "6000"];
    await env.controller.process!.stop();
    await env.controller.start();
    await env.agentsReady(3, "all three agents to reconnect to the controller with 6 s leases");
    await fireAfter(env, Date.now(), "a fire on every shard under 6 s leases");
    const owners = await env.owners("sweep");
    const history = (await env.admin.listExecutions({ job: "sweep", limit: 1000 })).executions.filter(
      (e) => e.state === ExecutionState.SUCCEEDED,
    );
    await env.controller.process!.stop();
    await env.controller.start();
    await env.agentsReady(3, "all three agents to reconnect");
    const restartedAt = Date.now();
    await fireAfter(env, restartedAt, "a fire on every shard after the restart");

    expect((await env.admin.listJobs({})).jobs.map((j) => j.name)).toEqual(["sweep"]);
    expect(await env.owners("sweep")).toEqual(owners);
    const kept = new Set((await env.admin.listExecutions({ job: "sweep", limit: 1000 })).executions.map((e) => e.id));
    for (const execution of history) expect(kept.has(execution.id)).toBe(true);
    const ends = env.runs().filter((r) => r.event === "end").map((r) => `${r.fireTime}/${r.shard}`);
    expect(new Set(ends).size).toBe(ends.length);
  });
});
