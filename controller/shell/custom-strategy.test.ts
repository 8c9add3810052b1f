import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentService } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { type RunningController, startController } from "./controller.js";

const EXAMPLE = "examples/strategies/by-region.mjs";

function manifest(strategy: string): string {
  return `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: regional}
spec:
  shards: 4
  shardParameters: {"0": eu, "1": us, "2": ap, "3": eu}
  handler: work
  strategy: ${strategy}
`;
}

/** An agent speaking the proto by hand: it says hello and heartbeats, and holds what it is given. */
function rawAgent(address: string, agentId: string) {
  const client = createClient(AgentService, address);
  const stream = client.connect();
  let welcomed = false;
  stream.onMessage((m) => {
    if (m.kind.case === "welcome") welcomed = true;
  });
  stream.send({ kind: { case: "hello", value: { agentId, handlers: ["work"], capacity: 1 } } });
  const heartbeats = setInterval(() => stream.send({ kind: { case: "heartbeat", value: { seq: 1n } } }), 200);
  return {
    welcomed: () => welcomed,
    close: () => {
      clearInterval(heartbeats);
      client.close();
    },
  };
}

describe("custom strategies on a controller over real gRPC", () => {
  let dir: string;
  let controller: RunningController | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "shardline-custom-strategy-"));
  });

  afterEach(async () => {
    await controller?.stop();
    controller = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  const start = (strategies: { name: string; modulePath: string }[]) =>
    startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: silentLogger(),
      strategies,
    });

  it("places a job's shards across two agents exactly as the loaded strategy says", async () => {
    controller = await start([{ name: "by-region", modulePath: EXAMPLE }]);
    const eu = rawAgent(controller.grpcAddress, "worker-eu");
    const us = rawAgent(controller.grpcAddress, "worker-us");
    await expect.poll(() => eu.welcomed() && us.welcomed()).toBe(true);
    const admin = createClient(AdminService, controller.grpcAddress);
    await admin.applyJob({ manifest: manifest("custom:by-region") });

    const placement = async () =>
      Object.fromEntries((await admin.listAssignments({ job: "regional" })).assignments.filter((a) => !a.revoking).map((a) => [a.shard, a.agent]));
    // eu shards 0 and 3 and us shard 1 go home; ap has no agent, so 2 goes round robin. Three to
    // one: no built-in strategy would place two equal agents' shards this way.
    await expect.poll(placement).toEqual({ 0: "worker-eu", 1: "worker-us", 2: "worker-eu", 3: "worker-eu" });
    const byRegion = ((await import(join(process.cwd(), EXAMPLE))) as { default: (input: unknown) => Map<number, string> }).default;
    const agents = [
      { id: "worker-eu", capacity: 1, load: 0 },
      { id: "worker-us", capacity: 1, load: 0 },
    ];
    expect(await placement()).toEqual(Object.fromEntries(byRegion({ job: "regional", shardCount: 4, agents, previous: new Map() })));
    admin.close();
    eu.close();
    us.close();
  });

  it("refuses custom:NAME for a strategy that is not loaded with INVALID_ARGUMENT, and applies nothing", async () => {
    controller = await start([{ name: "by-region", modulePath: EXAMPLE }]);
    const admin = createClient(AdminService, controller.grpcAddress);
    const error = await admin.applyJob({ manifest: manifest("custom:by-zone") }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as ShardlineError).code).toBe("invalid-argument");
    expect((error as ShardlineError).message).toBe(
      'spec.strategy: "custom:by-zone" is not allowed; expected sticky, balanced, odd-even, round-robin, or custom:NAME for a loaded strategy (loaded: by-region)',
    );
    expect((await admin.listJobs({})).jobs).toEqual([]);
    admin.close();
  });

  it("does not start when a strategy module fails validation, and says which flag and what is wrong", async () => {
    const module = join(dir, "lopsided.mjs");
    await writeFile(module, `export default ({ shardCount, agents }) => new Map(agents.length === 0 ? [] : [[shardCount, agents[0].id]]);\n`);
    const error = await start([{ name: "lopsided", modulePath: module }]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as ShardlineError).code).toBe("invalid-argument");
    expect((error as ShardlineError).message).toMatch(
      new RegExp(`^--strategy lopsided=${module}: ${module} placed shard 1, which the job does not have \\(its shards are the numbers 0 to 0\\)`),
    );
  });
});
