import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Agent } from "../../agent/index.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { DispatchSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { MESSAGE_BUDGET_BYTES } from "../../shared/grpc/message-parts.js";
import { ADMIN_MAX_RECEIVE_BYTES } from "../../cli/commands/admin.js";
import { dispatchParts } from "./agent-sessions.js";
import { type RunningController, startController } from "./controller.js";
import { waitFor } from "../../test/harness/processes.js";
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

describe("large batches on the Connect stream", () => {
  let dir: string;
  let controller: RunningController;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "shardline-message-size-"));
    controller = await startController({ listen: "127.0.0.1:0", http: "127.0.0.1:0", store: `sqlite:${join(dir, "state.db")}`, logger: silentLogger() });
  });

  afterEach(async () => {
    await controller.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("splits a dispatch of many large executions into messages the agent accepts (under its 4 MiB limit), losing none", async () => {
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

  it("splits many large results reported in one turn into messages the controller accepts (under its 4 MiB limit)", async () => {
    const shards = 1_100;
    // Every run waits until all have started, then all end together: one turn of 1,100 reports of 4 KB.
    let started = 0;
    let releaseAll!: () => void;
    const allStarted = new Promise<void>((resolve) => (releaseAll = resolve));
    const agent = new Agent({
      controller: controller.grpcAddress,
      id: "results-1",
      handlers: {
        big: async () => {
          if (++started === shards) releaseAll();
          await allStarted;
          return "r".repeat(4_000);
        },
      },
    });
    // A listing of 1,100 runs with 4 KB results is itself over the default 4 MiB.
    const admin = createClient(AdminService, controller.grpcAddress, { maxReceiveMessageBytes: ADMIN_MAX_RECEIVE_BYTES });
    try {
      await admin.applyJob({ manifest: `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: results}\nspec: {shards: ${shards}, handler: big}\n` });
      agent.start();
      await waitFor("the agent to hold every shard", async () => ((await admin.listAssignments({ job: "results" })).assignments.length === shards ? true : undefined));
      const fired = await admin.triggerJob({ name: "results" });
      const done = await waitFor("every run to succeed", async () => {
        const executions = (await admin.listExecutions({ job: "results", limit: 10_000 })).executions.filter((e) => fired.executionIds.includes(e.id));
        return executions.length === shards && executions.every((e) => e.state === ExecutionState.SUCCEEDED) ? executions : undefined;
      }, 30_000);
      expect(done.every((e) => e.result.length === 4_000)).toBe(true);
    } finally {
      await agent.stop();
      admin.close();
    }
  });
});

describe("dispatchParts", () => {
  const execution = (parameter: string) =>
    ({ executionId: "x", job: "j", shard: 0, shardCount: 1, shardParameter: "", parameter, fireTime: 0, attempt: 1, revision: 1, handler: "h", timeoutMs: 0, disconnectGraceMs: 0, fencingToken: 0n, traceContext: {} }) as const;

  it("keeps small executions in one message, and gives one larger than the budget a message of its own", () => {
    expect(dispatchParts([execution("a"), execution("b")]).map((part) => part.length)).toEqual([2]);
    const big = execution("x".repeat(MESSAGE_BUDGET_BYTES));
    expect(dispatchParts([execution("a"), big, execution("b")]).map((part) => part.map((e) => e.parameter.length))).toEqual([[1], [MESSAGE_BUDGET_BYTES], [1]]);
  });
});
