import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { type RunningController, startController } from "./controller.js";
import { rawAgent } from "./testing/raw-agent.js";

const MANIFEST = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: rollup}
spec:
  shards: 2
  handler: work
`;

describe("controller over real gRPC", () => {
  let dir: string;
  let controller: RunningController;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "shardline-controller-"));
    controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: silentLogger(),
    });
  });

  afterEach(async () => {
    await controller.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("welcomes an agent, assigns it shards, dispatches a trigger and records the outcome", async () => {
    const admin = createClient(AdminService, controller.grpcAddress);
    const applied = await admin.applyJob({ manifest: MANIFEST });
    expect(applied.changed).toBe(true);
    expect((await admin.applyJob({ manifest: MANIFEST })).changed).toBe(false);

    const agent = rawAgent(controller.grpcAddress);
    agent.stream.send({ kind: { case: "hello", value: { agentId: "py-1", handlers: ["work"], capacity: 1 } } });
    const welcome = await agent.next("welcome");
    expect(welcome.leaseTtlMs).toBe(2000);
    const snapshot = await agent.next("assignmentUpdate");
    expect(snapshot.snapshot).toBe(true);
    const update = snapshot.add.length === 2 ? snapshot : await agent.next("assignmentUpdate");
    expect(update.add.map((a) => a.shard?.shard).sort()).toEqual([0, 1]);

    agent.stream.send({ kind: { case: "heartbeat", value: { seq: 1n } } });
    expect((await agent.next("heartbeatAck")).seq).toBe(1n);

    const fired = await admin.triggerJob({ name: "rollup", shards: [1] });
    const dispatch = await agent.next("dispatch");
    expect(dispatch.executions.map((e) => e.executionId)).toEqual(fired.executionIds);
    const [execution] = dispatch.executions;
    expect(execution!.shardCount).toBe(2);
    agent.stream.send({
      kind: {
        case: "executionUpdates",
        value: { updates: [{ executionId: execution!.executionId, state: ExecutionState.SUCCEEDED, result: "42", finishedAtUnixMs: 1n }] },
      },
    });
    agent.stream.send({ kind: { case: "heartbeat", value: { seq: 2n } } });
    await agent.next("heartbeatAck");
    const listed = await admin.listExecutions({ job: "rollup" });
    expect(listed.executions.map((e) => [e.id, e.state, e.agent, e.result])).toEqual([
      [execution!.executionId, ExecutionState.SUCCEEDED, "py-1", "42"],
    ]);
    const agents = await admin.listAgents({});
    expect(agents.agents.map((a) => [a.id, a.shards.length])).toEqual([["py-1", 2]]);
    agent.close();
    admin.close();
  });

  it("ends a stream whose first message is not a hello with FAILED_PRECONDITION", async () => {
    const agent = rawAgent(controller.grpcAddress);
    agent.stream.send({ kind: { case: "heartbeat", value: { seq: 1n } } });
    const closed = await agent.closedStatus();
    expect(closed.code).toBe(status.FAILED_PRECONDITION);
    expect(closed.details).toMatch(/first message must be a hello/);
    agent.close();
  });

  it("refuses a malformed hello with INVALID_ARGUMENT naming the field, and keeps serving others", async () => {
    const bad = rawAgent(controller.grpcAddress);
    bad.stream.send({ kind: { case: "hello", value: { agentId: "NOT VALID", handlers: ["work"] } } });
    const closed = await bad.closedStatus();
    expect(closed.code).toBe(status.INVALID_ARGUMENT);
    expect(closed.details).toMatch(/^hello\.agent_id:/);
    const good = rawAgent(controller.grpcAddress);
    good.stream.send({ kind: { case: "hello", value: { agentId: "good", handlers: ["work"] } } });
    await good.next("welcome");
    bad.close();
    good.close();
  });

  it("answers a bad manifest with INVALID_ARGUMENT naming the field, and applies nothing", async () => {
    const admin = createClient(AdminService, controller.grpcAddress);
    const error = await admin.applyJob({ manifest: MANIFEST.replace("shards: 2", "shards: 0") }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as ShardlineError).code).toBe("invalid-argument");
    expect((error as ShardlineError).message).toMatch(/spec\.shards/);
    expect((await admin.listJobs({})).jobs).toEqual([]);
    admin.close();
  });

  it("keeps jobs and history across a restart, under a higher term", async () => {
    const admin = createClient(AdminService, controller.grpcAddress);
    await admin.applyJob({ manifest: MANIFEST });
    const fired = await admin.triggerJob({ name: "rollup" });
    admin.close();
    const term = controller.term;
    await controller.stop();
    controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: silentLogger(),
    });
    expect(controller.term).toBe(term + 1);
    const again = createClient(AdminService, controller.grpcAddress);
    expect((await again.listJobs({})).jobs.map((j) => j.name)).toEqual(["rollup"]);
    const ids = (await again.listExecutions({ job: "rollup" })).executions.map((e) => e.id).sort();
    expect(ids).toEqual([...fired.executionIds].sort());
    again.close();
  });

  it("serves /healthz and /readyz", async () => {
    expect((await fetch(`http://${controller.httpAddress}/healthz`)).status).toBe(200);
    expect((await fetch(`http://${controller.httpAddress}/readyz`)).status).toBe(200);
  });
});
