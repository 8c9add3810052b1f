import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AdminClient, adminClient, type CliProcess, ControllerProcess, freePort, requireBuiltCli, startAgent, waitFor } from "./harness/processes.js";

const HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "recording-handlers.mjs");
const JOB = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: consumer}
spec:
  daemon: true
  shards: 4
  handler: consume
  retries: {backoffSeconds: 1}
`;

interface Run {
  event: "start" | "end";
  shard: number;
  agent: string;
  fireTime: number;
  at: number;
}

describe("a daemon job on real processes", () => {
  let dir: string;
  let record: string;
  let controller: ControllerProcess;
  let admin: AdminClient;
  const agents = new Map<string, CliProcess>();

  const runs = (): Run[] =>
    readFileSync(record, "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as Run);
  /** Runs started and not ended, by shard. */
  const live = (): Map<number, Run[]> => {
    const open = new Map<string, Run>();
    for (const run of runs()) {
      const key = `${run.shard}/${run.fireTime}`;
      if (run.event === "start") open.set(key, run);
      else open.delete(key);
    }
    const byShard = new Map<number, Run[]>();
    for (const run of open.values()) byShard.set(run.shard, [...(byShard.get(run.shard) ?? []), run]);
    return byShard;
  };

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-daemon-"));
    record = join(dir, "runs.jsonl");
    writeFileSync(record, "");
    controller = new ControllerProcess(await freePort(), join(dir, "state.db"));
    await controller.start();
    admin = adminClient(controller.address);
    for (const id of ["agent-a", "agent-b"]) agents.set(id, startAgent(controller.address, id, HANDLERS, { SHARDLINE_TEST_RECORD: record }));
    await admin.applyJob({ manifest: JOB });
  });

  afterAll(async () => {
    admin?.close();
    await Promise.all([...agents.values()].map((a) => a.stop()));
    await controller?.process?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps exactly one run per shard, and moves a leaving agent's runs without overlap", async () => {
    await waitFor("one live run on each of the four shards, two per agent", async () => {
      const now = live();
      const counts = [...now.values()].map((list) => list.length);
      const perAgent = new Map<string, number>();
      for (const list of now.values()) for (const run of list) perAgent.set(run.agent, (perAgent.get(run.agent) ?? 0) + 1);
      return now.size === 4 && counts.every((c) => c === 1) && perAgent.get("agent-a") === 2 && perAgent.get("agent-b") === 2 ? true : undefined;
    });
    const leaving = agents.get("agent-b")!;
    leaving.kill("SIGTERM");
    expect((await leaving.exited).code).toBe(0);
    await waitFor("agent-a to run all four shards", async () => {
      const now = live();
      return now.size === 4 && [...now.values()].every((list) => list.length === 1 && list[0]!.agent === "agent-a") ? true : undefined;
    });
    // Per shard, no run started before the previous one ended.
    const byShard = new Map<number, Run[]>();
    for (const run of runs()) byShard.set(run.shard, [...(byShard.get(run.shard) ?? []), run]);
    for (const events of byShard.values()) {
      let running = 0;
      for (const event of events.sort((x, y) => x.at - y.at || (x.event === "end" ? -1 : 1))) {
        running += event.event === "start" ? 1 : -1;
        expect(running).toBeLessThanOrEqual(1);
      }
    }
  });
});
