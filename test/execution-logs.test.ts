import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliProcess, ControllerProcess, type CliProcess as Agent, freePort, requireBuiltCli, shardline, startAgent, waitFor } from "./harness/processes.js";

const HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "logging-handlers.mjs");

function manifest(name: string, spec: string): string {
  return `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec:\n${spec}`;
}

describe("execution logs through the shardline binary", () => {
  let dir: string;
  let controller: ControllerProcess;
  let agent: Agent;
  let env: Record<string, string>;

  /** Triggers the job and waits for its shard 0's execution to reach `state`; returns its id. */
  async function runToEnd(job: string, state = "succeeded"): Promise<string> {
    expect((await shardline(["trigger", job], env)).code).toBe(0);
    return waitFor(`${job} to end ${state}`, async () => {
      const list = JSON.parse((await shardline(["get", "executions", "--job", job, "-o", "json"], env)).stdout) as { id: string; state: string }[];
      return list.find((e) => e.state === state)?.id;
    });
  }

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-logs-"));
    controller = new ControllerProcess(await freePort(), join(dir, "state.db"));
    await controller.start();
    env = { SHARDLINE_CONTROLLER: controller.address };
    // Bounded below what the jobs write, so the oldest lines are dropped.
    agent = startAgent(controller.address, "logger-1", HANDLERS, {}, ["--allow-script", "sh", "--log-max-lines", "10", "--log-max-bytes", "4096"]);
    const script = 'for i in $(seq 0 24); do echo "out $i"; done; echo "to stderr" >&2; exit 3';
    await writeFile(join(dir, "chatty.yaml"), manifest("chatty", "  shards: 1\n  handler: chatty\n"));
    await writeFile(join(dir, "script.yaml"), manifest("scripted", `  shards: 1\n  script: {command: sh, args: ["-c", ${JSON.stringify(script)}]}\n`));
    await writeFile(join(dir, "slow.yaml"), manifest("slow", `  shards: 1\n  handler: slow-logger\n  parameter: ${JSON.stringify(join(dir, "gate"))}\n`));
    for (const file of ["chatty.yaml", "script.yaml", "slow.yaml"]) expect((await shardline(["apply", "-f", join(dir, file)], env)).code).toBe(0);
  });

  afterAll(async () => {
    await agent?.stop();
    await controller?.process?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("prints a handler's ctx.log lines, the newest within the agent's --log-max-lines, saying how many were dropped", async () => {
    const id = await runToEnd("chatty");
    const logs = await shardline(["logs", id], env);
    expect(logs.code).toBe(0);
    const lines = logs.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("[20 earlier lines dropped]");
    expect(lines.slice(1)).toEqual(Array.from({ length: 10 }, (_, i) => `INFO line ${20 + i} {"shard":0,"i":${20 + i}}`));

    const last = await shardline(["logs", "chatty", "--shard", "0", "--last"], env);
    expect(last.code).toBe(0);
    expect(last.stdout).toBe(logs.stdout);
  });

  it("prints a failed script's stdout and stderr, bounded the same way", async () => {
    const id = await runToEnd("scripted", "failed");
    const logs = await shardline(["logs", id], env);
    expect(logs.code).toBe(0);
    const lines = logs.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("[16 earlier lines dropped]");
    // Ten lines kept: stdout's last nine and stderr's one (their order across the two pipes is the agent's reading).
    expect(lines.slice(1).sort()).toEqual([...Array.from({ length: 9 }, (_, i) => `out ${16 + i}`), "to stderr"].sort());
  });

  it("follows a running execution with -f, printing lines as they come, and ends when the execution does", async () => {
    expect((await shardline(["trigger", "slow"], env)).code).toBe(0);
    const id = await waitFor("slow to run", async () => {
      const list = JSON.parse((await shardline(["get", "executions", "--job", "slow", "-o", "json"], env)).stdout) as { id: string; state: string }[];
      return list.find((e) => e.state === "running")?.id;
    });
    const follower = new CliProcess("logs -f", ["logs", id, "-f"], env);
    try {
      // The run cannot end before the gate opens: ticks printed one after another came live.
      const ticks = (): number[] => [...follower.output.matchAll(/^INFO tick (\d+)$/gm)].map((m) => Number(m[1]));
      const first = await waitFor("the follower to print a tick", () => ticks().at(-1));
      await waitFor("the follower to print a later tick", () => ((ticks().at(-1) ?? 0) > first + 1 ? true : undefined));
      expect(follower.running).toBe(true);
      await writeFile(join(dir, "gate"), "");
      const exit = await waitFor("the follower to exit", () => follower.exited);
      expect(exit.code).toBe(0);
      expect(follower.output.trimEnd().split("\n").at(-1)).toBe("WARN the gate opened: done");
    } finally {
      await follower.stop();
    }
  });

  it("exits 3 for an unknown execution, naming it", async () => {
    const logs = await shardline(["logs", "chatty/1/0/1"], env);
    expect(logs.code).toBe(3);
    expect(logs.stderr).toMatch(/chatty\/1\/0\/1/);
  });
});
