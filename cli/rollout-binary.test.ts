import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliProcess, freePort, requireBuiltCli, shardline, startAgent, waitFor } from "../test/harness/processes.js";

/**
 * `shardline rollout` through the built binary, against a controller process that checks tokens
 * (alice is an admin, bob an operator) and an agent whose handler answers with the revision it
 * was given.
 */

const TOKENS = { alice: "alice-token-0123456789abcdef", bob: "bob-token-0123456789abcdef", agent: "agent-token-0123456789abcdef" };

/** A job of four shards whose changes go to half of them first, then wait to be promoted. */
function sweep(parameter: string): string {
  return `apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: sweep}
spec:
  shards: 4
  handler: work
  parameter: ${parameter}
  rollout: {steps: [{weight: 50}, {pause: {}}]}
`;
}

interface ExecutionJson {
  shard: number;
  state: string;
  revision: number | null;
  result: string | null;
}

describe("shardline rollout through the binary", () => {
  let dir: string;
  let controller: CliProcess;
  let agent: CliProcess;
  let alice: Record<string, string>;
  let bob: Record<string, string>;

  const apply = async (parameter: string) => {
    await writeFile(join(dir, `${parameter}.yaml`), sweep(parameter));
    const applied = await shardline(["apply", "-f", join(dir, `${parameter}.yaml`)], alice);
    expect(applied, applied.stderr).toMatchObject({ code: 0 });
  };

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-rollout-"));
    await writeFile(join(dir, "tokens"), `${TOKENS.alice},alice,admin\n${TOKENS.bob},bob,operator\n${TOKENS.agent},agents,agent\n`);
    await writeFile(join(dir, "handlers.mjs"), "export default { work: (ctx) => ({ revision: ctx.revision, parameter: ctx.parameter }) };\n");
    const address = `127.0.0.1:${await freePort()}`;
    const http = `127.0.0.1:${await freePort()}`;
    controller = new CliProcess("controller", ["controller", "--listen", address, "--http", http, "--store", `sqlite:${join(dir, "state.db")}`, "--token-file", join(dir, "tokens")]);
    alice = { SHARDLINE_CONTROLLER: address, SHARDLINE_TOKEN: TOKENS.alice };
    bob = { SHARDLINE_CONTROLLER: address, SHARDLINE_TOKEN: TOKENS.bob };
    await waitFor("the controller to answer", async () => {
      if (!controller.running) throw new Error(`controller exited:\n${controller.output}`);
      return (await shardline(["get", "jobs"], bob)).code === 0 ? true : undefined;
    });
    agent = startAgent(address, "worker-1", join(dir, "handlers.mjs"), { SHARDLINE_TOKEN: TOKENS.agent });
  });

  afterAll(async () => {
    await agent?.stop();
    await controller?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("rolls a change out to half the shards, shows it, and promotes it; each run's REVISION is the one its shard ran", async () => {
    await apply("v1");
    await apply("v2");
    const status = await shardline(["rollout", "status", "sweep"], bob);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^Phase: +paused$/m);
    expect(status.stdout).toMatch(/^Step: +2\/2: pause: until promoted$/m);
    expect(status.stdout).toMatch(/^Revisions: +current 2, stable 1, target 2$/m);
    expect(status.stdout).toMatch(/^Waiting: +paused until promoted \(shardline rollout promote\)$/m);
    expect(status.stdout).toMatch(/^> 2\. pause: until promoted$/m);
    const view = JSON.parse((await shardline(["rollout", "status", "sweep", "-o", "json"], bob)).stdout) as { shardsByRevision: { revision: number; shards: number[] }[] };
    expect(view.shardsByRevision.map((entry) => [entry.revision, entry.shards.length])).toEqual([
      [1, 2],
      [2, 2],
    ]);

    await waitFor("the agent to hold the job's shards", async () => {
      const { stdout } = await shardline(["get", "assignments", "sweep", "-o", "json"], bob);
      return (JSON.parse(stdout) as unknown[]).length === 4 ? true : undefined;
    });
    expect((await shardline(["trigger", "sweep"], bob)).code).toBe(0);
    const runs = await waitFor("the fire's four runs to succeed", async () => {
      const list = JSON.parse((await shardline(["get", "executions", "--job", "sweep", "-o", "json"], bob)).stdout) as ExecutionJson[];
      return list.length === 4 && list.every((e) => e.state === "succeeded") ? list : undefined;
    });
    const revisionOf = new Map(view.shardsByRevision.flatMap((entry) => entry.shards.map((shard) => [shard, entry.revision] as const)));
    for (const run of runs) {
      expect(run.revision).toBe(revisionOf.get(run.shard));
      // The handler saw the same revision, and ran that revision's parameter.
      expect(JSON.parse(run.result!)).toEqual({ revision: run.revision, parameter: `v${run.revision}` });
    }
    const table = (await shardline(["get", "executions", "--job", "sweep"], bob)).stdout.trimEnd().split("\n");
    expect(table[0]).toMatch(/^ID +JOB +SHARD +ATTEMPT +REVISION +AGENT +STATE/);
    const column = table[0]!.indexOf("REVISION");
    expect(table.slice(1).map((line) => line.slice(column).split(/ +/)[0]).sort()).toEqual(["1", "1", "2", "2"]);

    // A watch started before the promotion ends with it: 0.
    const watching = shardline(["rollout", "status", "sweep", "--watch", "--timeout", "30"], bob);
    const promoted = await shardline(["rollout", "promote", "sweep"], bob);
    expect(promoted).toEqual({ code: 0, stdout: "job/sweep rollout promoted; now completed: every shard runs revision 2\n", stderr: "" });
    const watched = await watching;
    expect(watched.code, watched.stderr).toBe(0);
    expect(watched.stdout.trimEnd().split("\n\n").at(-1)).toMatch(/^Job: +sweep\nPhase: +completed\n/);

    expect(await shardline(["rollout", "promote", "sweep"], bob)).toEqual({ code: 4, stdout: "", stderr: "shardline: job sweep has no rollout in progress: nothing to promote\n" });
  });

  it("ends a watch with 8 on an abort and 9 at its timeout; undo goes back at once; history says who did what", async () => {
    await apply("v3");
    const watching = shardline(["rollout", "status", "sweep", "--watch", "--timeout", "30", "-o", "json"], bob);
    expect(await shardline(["rollout", "abort", "sweep"], bob)).toEqual({
      code: 0,
      stdout: "job/sweep rollout aborted; now aborted: every shard runs revision 2 (aborted by bob)\n",
      stderr: "",
    });
    const watched = await watching;
    expect(watched.code).toBe(8);
    expect(watched.stderr).toBe("shardline: job/sweep rollout aborted: every shard runs revision 2 (aborted by bob)\n");
    expect(JSON.parse(watched.stdout.trimEnd().split("\n").at(-1)!)).toMatchObject({ job: "sweep", phase: "aborted", stableRevision: 2, targetRevision: 3, reason: "aborted by bob" });

    expect(await shardline(["rollout", "promote", "sweep", "--full"], bob)).toEqual({
      code: 4,
      stdout: "",
      stderr: "shardline: job sweep has no rollout in progress (the last one was aborted; rollout retry starts it again): nothing to promote\n",
    });
    expect((await shardline(["rollout", "retry", "sweep"], bob)).stdout).toBe("job/sweep rollout retried; now paused at step 2/2: pause: until promoted\n");
    const timedOut = await shardline(["rollout", "status", "sweep", "--watch", "--timeout", "1"], bob);
    expect(timedOut.code).toBe(9);
    expect(timedOut.stderr).toBe("shardline: job/sweep rollout did not end within --timeout 1 s, still paused at step 2/2: pause: until promoted; it goes on without us\n");

    expect(await shardline(["rollout", "undo", "sweep"], bob)).toEqual({
      code: 0,
      stdout: "job/sweep rolled back to revision 2: now revision 4, on every shard from its next fire\n",
      stderr: "",
    });
    const undone = await shardline(["rollout", "undo", "sweep", "--to-revision", "99"], bob);
    expect(undone.code).toBe(3);
    expect(undone.stderr).toMatch(/^shardline: revision 99 of job sweep not found: .*run "shardline rollout history sweep" to list them\n$/);
    expect(await shardline(["rollout", "status", "nope"], bob)).toEqual({ code: 3, stdout: "", stderr: 'shardline: job "nope" not found; run "shardline get jobs" to list the jobs\n' });
    // An operator may not apply, but may undo: undo only puts back what an admin applied before.
    expect((await shardline(["apply", "-f", join(dir, "v1.yaml")], bob)).code).toBe(7);

    const history = await shardline(["rollout", "history", "sweep"], bob);
    expect(history.code).toBe(0);
    const rows = history.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^REVISION +APPLIED +BY +HASH +NOTE$/);
    expect(rows.slice(1).map((row) => row.split(/ {3,}/))).toEqual([
      ["4", expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/), "bob", expect.stringMatching(/^[0-9a-f]{12}$/), "current, stable, undo of 2"],
      ["3", expect.any(String), "alice", expect.any(String)],
      ["2", expect.any(String), "alice", expect.any(String)],
      ["1", expect.any(String), "alice", expect.any(String)],
    ]);
    // The undo copies revision 2's spec: the same hash.
    expect(rows[1]!.split(/ {3,}/)[3]).toBe(rows[3]!.split(/ {3,}/)[3]);
    const json = JSON.parse((await shardline(["rollout", "history", "sweep", "-o", "json"], bob)).stdout) as { revision: number; manifest: string; undoOf: number | null }[];
    expect(json.map((r) => [r.revision, r.undoOf])).toEqual([
      [4, 2],
      [3, null],
      [2, null],
      [1, null],
    ]);
    expect(json[0]!.manifest).toBe(sweep("v2").trim());

    const described = await shardline(["describe", "job", "sweep"], bob);
    expect(described.stdout).toMatch(/^Rollout:\n {2}Phase: +completed\n {2}Step: +2\/2, every step done\n {2}Revisions: +current 4, stable 4, target 4\n/m);
  });
});
