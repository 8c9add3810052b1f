import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import type { RunRecord } from "./harness/fire-evidence.js";
import { adminClient, shardline, waitFor } from "./harness/processes.js";
import type { ControllerReplica, ControllerReplicaSet } from "./harness/replicas.js";
import { RECORDING_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";

// Three controller processes on one real etcd, three agent processes given all three addresses,
// and a 6-shard job firing every second. The leader is SIGKILLed, then the next one is stopped
// with SIGTERM; every fire must still run once and only once.

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

describe("HA controllers on etcd", () => {
  let env: ShardlineTestEnv<ControllerReplicaSet>;
  let replicas: readonly ControllerReplica[];

  beforeAll(async () => {
    env = await ShardlineTestEnv.replicas(3, { name: "ha-test", handlers: RECORDING_HANDLERS });
    replicas = env.controller.replicas;
  }, 60_000);

  afterEach(({ task }) => {
    if (task.result?.state === "fail") env.failed = true;
  });
  afterAll(async () => {
    await env?.close();
  });

  const runs = (): RunRecord[] => env.runs();
  const leader = (term: number): Promise<ControllerReplica> => env.controller.leaderIn(term);

  /** Waits until every shard has finished a run of a fire later than `after`; resolves when. */
  const everyShardRanAfter = (after: number, what: string): Promise<number> => env.everyShardRan(what, { shards: SHARDS.length, after });

  it("survives a SIGKILLed leader and a stopped one: agents and the CLI follow the leader, and every fire runs exactly once", async () => {
    const first = await leader(1);
    const followers = replicas.filter((r) => r !== first);

    // The CLI, given a follower, is sent on to the leader.
    const manifest = join(env.dir, "sweep.yaml");
    writeFileSync(manifest, JOB);
    const applied = await shardline(["apply", "-f", manifest, "--controller", followers[0]!.address]);
    // No agent runs yet: the apply says so, and succeeds.
    expect(applied.stderr).toMatch(/^warning: job\/sweep: no connected agent can run it now: no agent is connected; its fires wait \(spec\.misfire: [a-z-]+\)\n$/);
    expect(applied.code).toBe(0);

    for (const id of ["agent-a", "agent-b", "agent-c"]) env.startAgent(id);
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
    const starts = new Map<string, RunRecord[]>();
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
    paused!.process!.freeze();
    const next = await leader(term + 1);
    const resumedAt = await everyShardRanAfter(Date.now(), "every shard to run under the leader that replaced the paused one");
    paused!.process!.thaw();
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
