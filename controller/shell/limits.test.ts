import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import type { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { type ControllerLimits, type RunningController, startController } from "./controller.js";
import { rawAgent } from "./testing/raw-agent.js";

const manifest = (name: string) => `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec: {shards: 1, handler: work}\n`;

/** The gRPC code a failed call ended with. */
async function codeOf(call: Promise<unknown>): Promise<status | "ok"> {
  try {
    await call;
    return "ok";
  } catch (error) {
    return ((error as ShardlineError).cause as { code: status }).code;
  }
}

describe("the controller's limits", () => {
  let dir: string;
  let controller: RunningController;
  const start = async (limits: Partial<ControllerLimits>, tokenFile?: string) => {
    dir = await mkdtemp(join(tmpdir(), "shardline-limits-"));
    if (tokenFile !== undefined) await writeFile(join(dir, "tokens"), tokenFile);
    controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: silentLogger(),
      limits,
      ...(tokenFile === undefined ? {} : { tokenFile: join(dir, "tokens") }),
    });
  };
  afterEach(async () => {
    await controller.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses a caller past its admin calls per second with RESOURCE_EXHAUSTED, and not another caller", async () => {
    const alice = "alice-token-0123456789abcdef";
    const bob = "bob-token-0123456789abcdefgh";
    await start({ adminCallsPerSecond: 1 }, `${alice},alice,viewer\n${bob},bob,viewer\n`);
    const as = (token: string) => createClient(AdminService, controller.grpcAddress, { metadata: { authorization: `Bearer ${token}` } });
    const a = as(alice);
    const b = as(bob);
    // Eight calls at once against a burst of two and one more a second: most are refused.
    const results = await Promise.all(Array.from({ length: 8 }, () => a.listJobs({}).then(() => "ok" as const, (error: ShardlineError) => error)));
    const refused = results.filter((result): result is ShardlineError => result !== "ok");
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(results.filter((result) => result === "ok").length).toBeGreaterThanOrEqual(1);
    for (const error of refused) {
      expect((error.cause as { code: status }).code).toBe(status.RESOURCE_EXHAUSTED);
      expect(error.message).toMatch(/ListJobs: too many calls from alice; retry in \d+ ms/);
    }
    expect(await codeOf(b.listJobs({}))).toBe("ok");
    a.close();
    b.close();
  });

  it("refuses a job past --max-jobs, and still takes a change to one it holds", async () => {
    await start({ maxJobs: 2 });
    const admin = createClient(AdminService, controller.grpcAddress);
    await admin.applyJob({ manifest: manifest("one") });
    await admin.applyJob({ manifest: manifest("two") });
    const refused = await admin.applyJob({ manifest: manifest("three") }).catch((error: ShardlineError) => error);
    expect(((refused as ShardlineError).cause as { code: status }).code).toBe(status.RESOURCE_EXHAUSTED);
    expect((refused as ShardlineError).message).toContain("holds 2 jobs, its most (--max-jobs)");
    expect(await codeOf(admin.applyJob({ manifest: manifest("two").replace("shards: 1", "shards: 3") }))).toBe("ok");
    expect((await admin.listJobs({})).jobs.map((job) => job.name)).toEqual(["one", "two"]);
    admin.close();
  });

  it("refuses a manifest over 256 KiB naming it, and an admin request over 4 MiB before reading it", async () => {
    await start({});
    const admin = createClient(AdminService, controller.grpcAddress);
    const padded = manifest("big") + `# ${"x".repeat(256 * 1024)}\n`;
    const tooBig = await admin.applyJob({ manifest: padded }).catch((error: ShardlineError) => error);
    expect(((tooBig as ShardlineError).cause as { code: status }).code).toBe(status.INVALID_ARGUMENT);
    expect((tooBig as ShardlineError).message).toMatch(/^manifest: "\d+ bytes" is not allowed; expected at most 262144 bytes/);
    const huge = await admin.applyJob({ manifest: "x".repeat(5 * 1024 * 1024) }).catch((error: ShardlineError) => error);
    expect(((huge as ShardlineError).cause as { code: status }).code).toBe(status.RESOURCE_EXHAUSTED);
    expect((await admin.listJobs({})).jobs).toEqual([]);
    admin.close();
  });

  it("refuses an agent stream past --max-agents, and serves the ones it has", async () => {
    await start({ maxAgents: 1 });
    const first = rawAgent(controller.grpcAddress);
    first.stream.send({ kind: { case: "hello", value: { agentId: "first", handlers: ["work"], capacity: 1 } } });
    await first.next("welcome");
    const second = rawAgent(controller.grpcAddress);
    second.stream.send({ kind: { case: "hello", value: { agentId: "second", handlers: ["work"], capacity: 1 } } });
    const closed = await second.closedStatus();
    expect(closed.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(closed.details).toContain("at most 1 agent streams (--max-agents)");
    first.stream.send({ kind: { case: "heartbeat", value: { seq: 1n } } });
    expect((await first.next("heartbeatAck")).seq).toBe(1n);
    first.close();
    second.close();
  });
});
