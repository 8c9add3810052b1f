import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { type CliProcess, ControllerProcess, freePort, requireBuiltCli, shardline, startAgent, waitFor } from "./harness/processes.js";

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "rollout-handlers.mjs");
const CLUSTERS = ["canary", "east", "west"] as const;

/** The job: 6 shards every second, spread over the clusters, rolled out canary, analysis, east, a pause, west. */
function manifest(parameter: string): string {
  return `apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: rollup}
spec:
  schedule: "* * * * * *"
  shards: 6
  handler: rollup
  parameter: "${parameter}"
  disconnectGraceSeconds: 0
  placement: {spreadBy: [cluster]}
  rollout:
    steps:
      - wave: {clusters: [canary]}
      - analysis: {minExecutions: 4, maxFailures: 1}
      - wave: {clusters: [east]}
      - pause: {}
      - wave: {clusters: [west]}
`;
}

interface ExecutionJson {
  id: string;
  shard: number;
  agent: string | null;
  state: string;
  revision: number;
  fireTime: string;
}

interface RolloutJson {
  phase: string;
  step: number;
  stableRevision: number;
  targetRevision: number;
  reason: string | null;
  endedAt: string | null;
  shardsByRevision: { revision: number; shards: number[] }[];
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("rollouts across three clusters, through the shardline binary", () => {
  it("a broken revision is aborted by its gate within the canary wave, and a good one reaches every cluster through the steps", async () => {
    requireBuiltCli();
    const dir = await mkdtemp(join(tmpdir(), "shardline-rollout-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const controller = new ControllerProcess(await freePort(), join(dir, "state.db"));
    await controller.start();
    cleanups.push(() => controller.process?.stop());
    const agents: CliProcess[] = CLUSTERS.map((cluster) => startAgent(controller.address, `${cluster}-1`, FIXTURE, {}, ["--label", `cluster=${cluster}`]));
    for (const agent of agents) cleanups.push(() => agent.stop());
    const env = { SHARDLINE_CONTROLLER: controller.address };
    const cli = async (...args: string[]) => shardline(args, env);
    const apply = async (parameter: string): Promise<void> => {
      const file = join(dir, `${parameter}.yaml`);
      await writeFile(file, manifest(parameter));
      const result = await cli("apply", "-f", file);
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
    };
    const executions = async (): Promise<ExecutionJson[]> => JSON.parse((await cli("get", "executions", "--job", "rollup", "--limit", "10000", "-o", "json")).stdout) as ExecutionJson[];
    const rollout = async (): Promise<RolloutJson> => JSON.parse((await cli("rollout", "status", "rollup", "-o", "json")).stdout) as RolloutJson;

    await waitFor("the three agents to connect", async () => ((JSON.parse((await cli("get", "agents", "-o", "json")).stdout) as unknown[]).length === 3 ? true : undefined));
    await apply("v1");
    const owners = await waitFor("two shards on each cluster's agent", async () => {
      const assignments = JSON.parse((await cli("get", "assignments", "--job", "rollup", "-o", "json")).stdout) as { shard: number; agent: string }[];
      const by = new Map(CLUSTERS.map((c) => [c, assignments.filter((a) => a.agent === `${c}-1`).map((a) => a.shard).sort((x, y) => x - y)]));
      return CLUSTERS.every((c) => by.get(c)!.length === 2) ? by : undefined;
    });

    // Revision 2 is broken: its canary runs fail, and the analysis aborts it.
    await apply("v2-broken");
    const watched = await cli("rollout", "status", "rollup", "--watch", "--timeout", "60");
    expect(watched.code).toBe(8);
    expect(watched.stderr).toMatch(/^shardline: job\/rollup rollout aborted: every shard runs revision 1 \(analysis at step 2: \d+ runs of revision 2 failed, more than maxFailures 1\)\n$/);
    const status = await cli("rollout", "status", "rollup");
    expect(status.code).toBe(0);
    expect(status.stdout).toContain("Phase:      aborted\n");
    expect(status.stdout).toContain("Revisions:  current 2, stable 1, target 2\n");
    expect(status.stdout).toMatch(/\nReason: {5}analysis at step 2: \d+ runs of revision 2 failed, more than maxFailures 1\n/);
    expect(status.stdout).toContain("> 2. analysis: at least 4 runs, at most 1 failed\n");
    const aborted = await rollout();
    // Every fire after the abort runs revision 1 on every shard.
    const abortedAt = Date.parse(aborted.endedAt!);
    await waitFor("a fire after the abort on every shard", async () => {
      const later = (await executions()).filter((e) => Date.parse(e.fireTime) > abortedAt + 1000 && e.state === "succeeded");
      return new Set(later.map((e) => e.shard)).size === 6 ? true : undefined;
    });
    const afterAbort = await executions();
    const ofRevision2 = afterAbort.filter((e) => e.revision === 2);
    expect(ofRevision2.length).toBeGreaterThanOrEqual(2);
    expect(new Set(ofRevision2.map((e) => e.agent))).toEqual(new Set(["canary-1"]));
    expect(ofRevision2.every((e) => e.state === "failed")).toBe(true);
    expect(afterAbort.filter((e) => Date.parse(e.fireTime) > abortedAt + 1000).every((e) => e.revision === 1)).toBe(true);

    // Revision 3 works: canary, the analysis, east, then it waits to be promoted.
    await apply("v3");
    const paused = await waitFor("the rollout of revision 3 to pause after east", async () => {
      const view = await rollout();
      return view.phase === "paused" ? view : undefined;
    }, 60_000);
    expect(paused).toMatchObject({ step: 4, stableRevision: 1, targetRevision: 3 });
    const onRevision3 = [...owners.get("canary")!, ...owners.get("east")!].sort((a, b) => a - b);
    expect(paused.shardsByRevision).toEqual([
      { revision: 1, shards: owners.get("west") },
      { revision: 3, shards: onRevision3 },
    ]);
    const pausedText = (await cli("rollout", "status", "rollup")).stdout;
    expect(pausedText).toContain("Phase:      paused\n");
    expect(pausedText).toContain("> 4. pause: until promoted\n");
    // East's shards run revision 3 from their next fire after the wave; west's do not, while paused.
    await waitFor("east to run revision 3", async () => ((await executions()).some((e) => e.revision === 3 && e.agent === "east-1" && e.state === "succeeded") ? true : undefined));
    const beforePromote = await executions();
    expect(beforePromote.some((e) => e.revision === 3 && e.agent === "west-1")).toBe(false);

    const promoted = await cli("rollout", "promote", "rollup");
    expect(promoted.code).toBe(0);
    expect(promoted.stdout).toBe("job/rollup rollout promoted; now completed: every shard runs revision 3\n");
    const done = await cli("rollout", "status", "rollup", "--watch", "--timeout", "60");
    expect(done.code).toBe(0);
    expect(done.stdout).toContain("Phase:      completed\n");
    await waitFor("revision 3 to run on west", async () => ((await executions()).some((e) => e.revision === 3 && e.agent === "west-1" && e.state === "succeeded") ? true : undefined));
    // No fire of a shard ran two revisions.
    const all = await executions();
    const byFire = new Map<string, Set<number>>();
    for (const e of all) byFire.set(`${e.fireTime}/${e.shard}`, (byFire.get(`${e.fireTime}/${e.shard}`) ?? new Set()).add(e.revision));
    expect([...byFire.values()].every((revisions) => revisions.size === 1)).toBe(true);

    const history = await cli("rollout", "history", "rollup");
    expect(history.code).toBe(0);
    expect(history.stdout.split("\n")[0]).toMatch(/^REVISION\s+APPLIED\s+BY\s+HASH\s+NOTE$/);
    expect(history.stdout.split("\n").slice(1, 4).map((line) => line.split(/\s+/)[0])).toEqual(["3", "2", "1"]);
    const table = (await cli("get", "executions", "--job", "rollup", "--limit", "3")).stdout;
    expect(table.split("\n")[0]).toContain("REVISION");
  }, 240_000);
});
