import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { DispatchSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { dispatchParts, DISPATCH_BUDGET_BYTES } from "./agent-sessions.js";
import { type RunningController, startController } from "./controller.js";
import { rawAgent } from "./testing/raw-agent.js";

const SHARDS = 200;
/** A pod template near the manifest's 32 KiB limit: 200 executions of it make about 6 MB. */
const MANIFEST = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: wide}
spec:
  shards: ${SHARDS}
  kubernetes:
    template:
      metadata: {annotations: {note: "${"n".repeat(30_000)}"}}
      spec:
        containers: [{name: main, image: "busybox:1.36"}]
`;

describe("dispatching many large executions to one agent", () => {
  let dir: string;
  let controller: RunningController;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "shardline-dispatch-"));
    controller = await startController({ listen: "127.0.0.1:0", http: "127.0.0.1:0", store: `sqlite:${join(dir, "state.db")}`, logger: silentLogger() });
  });

  afterEach(async () => {
    await controller.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("splits them into messages the agent accepts (under its 4 MiB limit), losing none", async () => {
    const admin = createClient(AdminService, controller.grpcAddress);
    await admin.applyJob({ manifest: MANIFEST });
    const agent = rawAgent(controller.grpcAddress);
    agent.stream.send({ kind: { case: "hello", value: { agentId: "wide-1", executors: ["kubernetes"], capacity: 1 } } });
    await agent.next("welcome");
    let held = 0;
    while (held < SHARDS) held += (await agent.next("assignmentUpdate")).add.length;

    const fired = await admin.triggerJob({ name: "wide" });
    const received: string[] = [];
    const sizes: number[] = [];
    while (received.length < SHARDS) {
      const dispatch = await agent.next("dispatch");
      sizes.push(toBinary(DispatchSchema, dispatch).length);
      for (const execution of dispatch.executions) received.push(execution.executionId);
    }

    expect(received.sort()).toEqual([...fired.executionIds].sort());
    expect(sizes.length).toBeGreaterThan(1);
    for (const size of sizes) expect(size).toBeLessThan(4 * 1024 * 1024);
    expect(agent.closed).toBeUndefined();
    agent.close();
    admin.close();
  });
});

describe("dispatchParts", () => {
  const execution = (parameter: string) =>
    ({ executionId: "x", job: "j", shard: 0, shardCount: 1, shardParameter: "", parameter, fireTime: 0, attempt: 1, handler: "h", timeoutMs: 0, traceContext: {} }) as const;

  it("keeps small executions in one message, and gives one larger than the budget a message of its own", () => {
    expect(dispatchParts([execution("a"), execution("b")]).map((part) => part.length)).toEqual([2]);
    const big = execution("x".repeat(DISPATCH_BUDGET_BYTES));
    expect(dispatchParts([execution("a"), big, execution("b")]).map((part) => part.map((e) => e.parameter.length))).toEqual([[1], [DISPATCH_BUDGET_BYTES], [1]]);
  });
});
