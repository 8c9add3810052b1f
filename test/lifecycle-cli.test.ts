import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControllerProcess, type CliProcess, freePort, requireBuiltCli, shardline, startAgent, waitFor } from "./harness/processes.js";

const HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "recording-handlers.mjs");

function manifest(name: string, spec: string): string {
  return `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec:\n${spec}`;
}

describe("job lifecycle through the shardline binary", () => {
  let dir: string;
  let controller: ControllerProcess;
  let agent: CliProcess;
  let env: Record<string, string>;
  const json = async (args: string[]) => JSON.parse((await shardline([...args, "-o", "json"], env)).stdout) as Record<string, unknown>[];

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-lifecycle-"));
    controller = new ControllerProcess(await freePort(), join(dir, "state.db"));
    await controller.start();
    env = { SHARDLINE_CONTROLLER: controller.address };
    agent = startAgent(controller.address, "worker-1", HANDLERS, { SHARDLINE_TEST_RECORD: join(dir, "runs.jsonl") });
    await writeFile(join(dir, "flaky.yaml"), manifest("flaky", "  shards: 1\n  handler: flaky\n  retries: {limit: 2, backoffSeconds: 1}\n"));
    await writeFile(join(dir, "orphan.yaml"), manifest("orphan", "  shards: 2\n  handler: nobody-runs-this\n"));
    await writeFile(join(dir, "sweep.yaml"), manifest("sweep", '  schedule: "* * * * * *"\n  shards: 3\n  handler: work\n'));
    await writeFile(join(dir, "broken.yaml"), manifest("broken", "  shards: 2\n  handler: broken\n"));
    await writeFile(join(dir, "rollup.yaml"), manifest("rollup", "  shards: 3\n  handler: work\n  onFireComplete: {handler: done}\n"));
    for (const file of ["flaky.yaml", "orphan.yaml", "sweep.yaml", "broken.yaml", "rollup.yaml"]) expect((await shardline(["apply", "-f", join(dir, file)], env)).code).toBe(0);
  });

  afterAll(async () => {
    await agent?.stop();
    await controller?.process?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("retries a failed execution after its backoff and records both attempts", async () => {
    expect((await shardline(["trigger", "flaky"], env)).code).toBe(0);
    const runs = await waitFor("the retry to succeed", async () => {
      const list = await json(["get", "executions", "--job", "flaky"]);
      return list.some((e) => e.state === "succeeded") ? list : undefined;
    });
    expect(runs.map((e) => [e.attempt, e.state, e.cause])).toEqual([
      [2, "succeeded", "retry"],
      [1, "failed", "trigger"],
    ]);
    expect(runs[1]!.error).toMatch(/attempt 1 .* failed on purpose/);
  });

  it("runs spec.onFireComplete once, after every shard of the fire finished, with their outcomes", async () => {
    expect((await shardline(["run", "rollup", "--wait"], env)).code).toBe(0);
    const hook = await waitFor("the completion hook to succeed", async () => {
      const list = await json(["get", "executions", "--job", "rollup"]);
      return list.find((e) => e.fireComplete === true && e.state === "succeeded");
    });
    expect(hook).toMatchObject({ shard: null, attempt: 1, cause: "fire-complete", agent: "worker-1", result: "3 of 3 shards succeeded" });
    expect(hook.id).toMatch(/^rollup\/\d+\/complete\/1$/);

    const runs = (await readFile(join(dir, "runs.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { event: string; job: string; shard?: number; at: number; fireOutcome?: unknown[] })
      .filter((run) => run.job === "rollup");
    const completions = runs.filter((run) => run.event === "complete");
    expect(completions).toHaveLength(1);
    expect(completions[0]!.fireOutcome).toEqual([0, 1, 2].map((shard) => expect.objectContaining({ shard, state: "succeeded" }) as unknown));
    const ends = runs.filter((run) => run.event === "end");
    expect(ends).toHaveLength(3);
    for (const end of ends) expect(end.at).toBeLessThanOrEqual(completions[0]!.at);
    expect((await shardline(["get", "executions", "--job", "rollup"], env)).stdout).toMatch(/ complete +1 +1 +worker-1 +succeeded /);
  });

  it("cancels a pending execution, and refuses to cancel it twice", async () => {
    const triggered = await shardline(["trigger", "orphan", "--shards", "1"], env);
    expect(triggered.code).toBe(0);
    const [pending] = await json(["get", "executions", "--job", "orphan", "--state", "pending"]);
    const id = pending!.id as string;
    expect(await shardline(["cancel", id, "--reason", "not needed"], env)).toMatchObject({ code: 0, stdout: `execution/${id} cancelled\n` });
    const cancelled = JSON.parse((await shardline(["get", "executions", id, "-o", "json"], env)).stdout) as Record<string, unknown>;
    expect(cancelled).toMatchObject({ state: "cancelled", error: "not needed" });
    const again = await shardline(["cancel", id], env);
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/already finished: cancelled/);
  });

  it("stops firing a disabled shard and fires it again once enabled", async () => {
    expect(await shardline(["disable", "sweep", "2"], env)).toMatchObject({ code: 0, stdout: "shard/sweep/2 disabled\n" });
    const disabledAt = Date.now();
    await waitFor("two fires after disabling", async () => {
      const fires = new Set((await json(["get", "executions", "--job", "sweep", "--since", new Date(disabledAt + 1000).toISOString()])).map((e) => e.fireTime));
      return fires.size >= 2 ? true : undefined;
    });
    const shard2 = await json(["get", "executions", "--job", "sweep", "--shard", "2", "--since", new Date(disabledAt + 1000).toISOString()]);
    expect(shard2).toEqual([]);
    expect((await shardline(["enable", "sweep", "2"], env)).code).toBe(0);
    const enabledAt = Date.now();
    await waitFor("shard 2 to fire again", async () => {
      const runs = await json(["get", "executions", "--job", "sweep", "--shard", "2", "--since", new Date(enabledAt).toISOString()]);
      return runs.length > 0 ? true : undefined;
    });
  });

  it("describes a job with its next fires, assignment and recent executions", async () => {
    const text = await shardline(["describe", "job", "sweep"], env);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^Name: +sweep$/m);
    expect(text.stdout).toMatch(/^Next fires: +\S+/m);
    expect(text.stdout).toMatch(/^Assignments:\n +JOB +SHARD +AGENT/m);
    const described = JSON.parse((await shardline(["describe", "job", "sweep", "-o", "json"], env)).stdout) as {
      job: { upcomingFires: string[]; disabledShards: number[] };
      assignments: unknown[];
      executions: unknown[];
    };
    expect(described.job.upcomingFires).toHaveLength(5);
    expect(described.job.disabledShards).toEqual([]);
    expect(described.assignments).toHaveLength(3);
    expect(described.executions.length).toBeGreaterThan(0);
  });

  it("runs a job once and waits for it: exit 0 when every shard succeeds (after its retry)", async () => {
    const result = await shardline(["run", "flaky", "--wait", "-o", "json"], env);
    expect(result.code).toBe(0);
    const final = JSON.parse(result.stdout) as Record<string, unknown>[];
    expect(final.map((e) => [e.shard, e.attempt, e.state])).toEqual([[0, 2, "succeeded"]]);
  });

  it("exits 6 naming the shards that did not succeed", async () => {
    const result = await shardline(["run", "broken", "--wait"], env);
    expect(result.code).toBe(6);
    expect(result.stderr).toBe("shardline: job/broken run finished: 2 of 2 executions did not succeed (shard 0 failed, shard 1 failed)\n");
  });

  it("shows a run waiting for an agent as pending with its place in line, and gives up waiting at --timeout", async () => {
    const result = await shardline(["run", "orphan", "--shards", "0", "--wait", "--timeout", "0.5"], env);
    expect(result.code).toBe(6);
    expect(result.stderr).toMatch(/did not finish within --timeout 0.5 s/);
    const waiting = await json(["get", "executions", "--job", "orphan", "--state", "pending"]);
    expect(waiting.map((e) => e.queuePosition)).toEqual([1]);
    const table = await shardline(["get", "executions", "--job", "orphan", "--state", "pending"], env);
    expect(table.stdout).toMatch(/pending #1/);
  });

  it("says why a job no agent can run waits: on apply, on its shards, its pending runs and the job", async () => {
    const why = 'no connected agent declares handler "nobody-runs-this"';
    const applied = await shardline(["apply", "-f", join(dir, "orphan.yaml")], env);
    expect(applied).toMatchObject({ code: 0, stdout: "job/orphan unchanged\n" });
    expect(applied.stderr).toBe(`warning: job/orphan: no connected agent can run it now: ${why}; its fires wait (spec.misfire: fire-once)\n`);

    const assignments = await shardline(["get", "assignments", "orphan"], env);
    expect(assignments.stdout.split("\n")).toEqual(
      expect.arrayContaining([expect.stringMatching(/^JOB +SHARD +AGENT +GENERATION +REASON$/), expect.stringMatching(new RegExp(`^orphan +1 +<none> +<none> +${why}$`))]),
    );

    expect((await shardline(["trigger", "orphan", "--shards", "1"], env)).code).toBe(0);
    const [pending] = await json(["get", "executions", "--job", "orphan", "--state", "pending", "--shard", "1"]);
    expect(pending!.waitingReason).toBe(`shard 1: no owner (${why})`);
    const wide = await shardline(["get", "executions", "--job", "orphan", "--state", "pending", "--shard", "1", "-o", "wide"], env);
    expect(wide.stdout).toMatch(/WAITING\s+TRACE\n/);
    expect(wide.stdout).toContain(`shard 1: no owner (${why})`);

    const described = await shardline(["describe", "job", "orphan"], env);
    expect(described.stdout).toMatch(new RegExp(`^Waiting: +none of its 2 shards has an owner: ${why}$`, "m"));
    expect(described.stdout).toMatch(new RegExp(`^ +orphan +0 +<none> +<none> +${why}$`, "m"));
  });

  it("names the flag when --since is not a time", async () => {
    const result = await shardline(["get", "executions", "--since", "yesterday"], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^shardline: --since: "yesterday" is not allowed/);
  });
});
