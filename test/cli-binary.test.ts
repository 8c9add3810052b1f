import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControllerProcess, type CliProcess, freePort, requireBuiltCli, shardline, startAgent, waitFor } from "./harness/processes.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const MANIFEST = join(ROOT, "examples", "billing-rollup.yaml");
const HANDLERS = join(ROOT, "examples", "handlers.mjs");

describe("the shardline binary against a real controller", () => {
  let dir: string;
  let controller: ControllerProcess;
  let agent: CliProcess;
  let env: Record<string, string>;

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-cli-"));
    controller = new ControllerProcess(await freePort(), join(dir, "state.db"));
    await controller.start();
    env = { SHARDLINE_CONTROLLER: controller.address };
    agent = startAgent(controller.address, "worker-1", HANDLERS, {}, ["--label", "zone=eu-1"]);
  });

  afterAll(async () => {
    await agent?.stop();
    await controller?.process?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("applies a manifest once: created, then unchanged", async () => {
    expect(await shardline(["apply", "-f", MANIFEST], env)).toMatchObject({ code: 0, stdout: "job/billing-rollup created\n" });
    expect(await shardline(["apply", "-f", MANIFEST], env)).toMatchObject({ code: 0, stdout: "job/billing-rollup unchanged\n" });
  });

  it("prints agents, assignments and executions as the documented JSON", async () => {
    const agents = await waitFor("the agent to own the job's four shards", async () => {
      const { stdout } = await shardline(["get", "agents", "-o", "json"], env);
      const parsed = JSON.parse(stdout) as { id: string; labels: Record<string, string>; state: string; shards: { job: string; shard: number }[] }[];
      return parsed.length === 1 && parsed[0]!.shards.length === 4 ? parsed : undefined;
    });
    expect(agents[0]).toMatchObject({ id: "worker-1", labels: { zone: "eu-1" }, state: "ready" });
    expect(agents[0]!.shards).toEqual([0, 1, 2, 3].map((shard) => ({ job: "billing-rollup", shard })));

    const assignments = JSON.parse((await shardline(["get", "assignments", "-o", "json"], env)).stdout) as Record<string, unknown>[];
    expect(assignments.map((a) => [a.job, a.shard, a.agent, typeof a.generation])).toEqual(
      [0, 1, 2, 3].map((shard) => ["billing-rollup", shard, "worker-1", "number"]),
    );

    const triggered = await shardline(["trigger", "billing-rollup", "--shards", "2"], env);
    expect(triggered.code).toBe(0);
    const execution = await waitFor("the triggered execution to succeed", async () => {
      const { stdout } = await shardline(["get", "executions", "--job", "billing-rollup", "--state", "succeeded", "-o", "json"], env);
      return (JSON.parse(stdout) as Record<string, unknown>[])[0];
    });
    for (const key of ["id", "job", "shard", "fireTime", "agent", "attempt", "state", "startedAt", "finishedAt", "error"]) {
      expect(execution).toHaveProperty(key);
    }
    expect(execution).toMatchObject({ job: "billing-rollup", agent: "worker-1", state: "succeeded", error: null });
    expect(new Date(execution.fireTime as string).toISOString()).toBe(execution.fireTime);
  });

  it("exits 3 with one line for a job that does not exist", async () => {
    const result = await shardline(["trigger", "no-such-job"], env);
    expect(result.code).toBe(3);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stderr).toMatch(/no-such-job/);
  });

  it("exits 2 with one line naming the flag for bad input, and changes nothing", async () => {
    const result = await shardline(["get", "agents", "-o", "xml"], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^shardline: .*-o.*xml.*json/);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("exits 5 saying where it looked when the controller cannot be reached", async () => {
    const port = await freePort();
    const result = await shardline(["get", "jobs", "--controller", `127.0.0.1:${port}`]);
    expect(result.code).toBe(5);
    expect(result.stderr).toContain(`127.0.0.1:${port}`);
  });
});
