import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { dispatchParts } from "../../controller/shell/agent-sessions.js";
import { ConnectRequestSchema, ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { MESSAGE_BUDGET_BYTES } from "../../shared/grpc/message-parts.js";
import type * as FloorScenario from "../scenarios/floor.js";
import { updateBytes } from "../../agent/runtime/agent.js";
import { dispatchMessages, executionContext, fireTraceContext, roundRobinShards, succeeded, updateMessages } from "./messages.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The built scenario: its children are forked from the built .js files beside it. */
const BUILT = join(ROOT, "dist", "bench", "scenarios", "floor.js");

async function builtScenario(): Promise<typeof FloorScenario> {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npx tsc -p tsconfig.build.json\` first (npm test builds)`);
  return (await import(pathToFileURL(BUILT).href)) as typeof FloorScenario;
}

const fire = (shardCount: number) => ({ fireTime: 1_796_093_572_000, shardCount, traceContext: fireTraceContext() });

describe("the floor's messages", () => {
  it("spreads shards round robin: shard i to agent i mod agents, each shard once", () => {
    const owned = roundRobinShards(1000, 3);
    expect(owned.map((shards) => shards.length)).toEqual([334, 333, 333]);
    owned.forEach((shards, k) => expect(shards.every((shard) => shard % 3 === k)).toBe(true));
    expect(owned.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(roundRobinShards(2, 4)).toEqual([[0], [1], [], []]);
  });

  it("dispatches every field the controller fills for a no-op job's run, through the generated messages", () => {
    const [message] = dispatchMessages([executionContext(fire(1000), 7)]);
    const decoded = fromBinary(ConnectResponseSchema, message!.bytes);
    expect(decoded.term).toBe(1n);
    expect(decoded.kind.case).toBe("dispatch");
    const [context] = decoded.kind.case === "dispatch" ? decoded.kind.value.executions : [];
    expect(context).toMatchObject({
      executionId: "throughput/1796093572000/7/1",
      job: "throughput",
      shard: 7,
      shardCount: 1000,
      handler: "noop",
      fireTimeUnixMs: 1_796_093_572_000n,
      attempt: 1,
      timeoutMs: 0,
      disconnectGraceMs: 15_000,
      fencingToken: (1n << 32n) + 8n,
      revision: 1n,
      assignment: { shard: { job: "throughput", shard: 7 }, term: 1n, generation: 8n },
      daemon: false,
    });
    expect(Object.keys(context!.traceContext)).toEqual(["traceparent"]);
    expect(context!.traceContext.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });

  it("splits one agent's share of a fire as the controller's dispatchParts does", () => {
    const contexts = Array.from({ length: 2000 }, (_, shard) => executionContext(fire(2000), shard));
    const messages = dispatchMessages(contexts);
    const decoded = messages.map((m) => fromBinary(ConnectResponseSchema, m.bytes));
    const sizes = decoded.map((m) => (m.kind.case === "dispatch" ? m.kind.value.executions.length : 0));
    expect(sizes).toEqual(dispatchParts(contexts).map((part) => part.length));
    expect(sizes.length).toBeGreaterThan(1);
    expect(decoded.flatMap((m) => (m.kind.case === "dispatch" ? m.kind.value.executions.map((e) => e.executionId) : []))).toEqual(
      contexts.map((c) => c.executionId),
    );
  });

  it("answers with terminal updates carrying both times, in ExecutionUpdates messages within the agent's budget", () => {
    const updates = Array.from({ length: 8000 }, (_, shard) => succeeded(`throughput/1796093572000/${shard}/1`, 10, 11));
    const messages = updateMessages(updates);
    expect(messages.length).toBeGreaterThan(1);
    const sent = messages.flatMap((m) => {
      const decoded = fromBinary(ConnectRequestSchema, toBinary(ConnectRequestSchema, create(ConnectRequestSchema, m)));
      if (decoded.kind.case !== "executionUpdates") throw new Error(`not an ExecutionUpdates: ${decoded.kind.case}`);
      const part = decoded.kind.value.updates;
      expect(part.reduce((sum, u) => sum + updateBytes(u), 0)).toBeLessThanOrEqual(MESSAGE_BUDGET_BYTES);
      return part;
    });
    expect(sent.map((u) => u.executionId)).toEqual(updates.map((u) => u.executionId));
    expect(sent[0]).toMatchObject({ state: ExecutionState.SUCCEEDED, startedAtUnixMs: 10n, finishedAtUnixMs: 11n, error: "", result: "" });
  });
});

describe("transportFloor (built, real processes on loopback)", () => {
  it("echoes and counts every execution once, each agent its share, over whole fires", async () => {
    const { runTransportFloor } = await builtScenario();
    const run = await runTransportFloor({ agents: 3, processes: 2, executions: 4500, shardsPerTrigger: 1000 });
    // 4500 rounds up to five whole fires.
    expect(run.result.executions).toBe(5000);
    expect(run.echo).toMatchObject({ dispatched: 5000, completed: 5000, unsuccessful: 0, strays: 0, dispatchMessages: 15 });
    expect(run.agents.map((a) => a.received).sort()).toEqual([1665, 3335]);
    expect(run.agents.map((a) => a.echoed)).toEqual(run.agents.map((a) => a.received));
    expect(run.agents.reduce((sum, a) => sum + a.dispatchMessages, 0)).toBe(15);
    expect(run.agents.reduce((sum, a) => sum + a.updateMessages, 0)).toBe(run.echo.updateMessages);
    expect(Object.keys(run.result.cpuSecondsByName).sort()).toEqual(["echo controller", "floor agents"]);
  }, 120_000);

  it("refuses options that are not positive integers", async () => {
    const { transportFloor } = await builtScenario();
    await expect(transportFloor({ agents: 0, processes: 1, executions: 10, shardsPerTrigger: 10 })).rejects.toThrow(/agents is 0/);
  });
});
