import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import type { ShardingStrategy } from "./sharding/strategy.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

/** Every shard on the agent that sorts first: valid, and unlike any built-in layout. */
const allOnFirst: ShardingStrategy = ({ shardCount, agents }) => {
  const first = agents.map((agent) => agent.id).sort()[0];
  return new Map(first === undefined ? [] : Array.from({ length: shardCount }, (_, shard) => [shard, first] as const));
};

/** Fine with one agent; throws once there are more, as a user's bug might. */
const failsOnTwo: ShardingStrategy = (input) => {
  if (input.agents.length > 1) throw new Error("no region table for two agents");
  return allOnFirst(input);
};

function harness(strategies: Record<string, ShardingStrategy>): CoreHarness {
  return new CoreHarness({ ...DEFAULT_CORE_CONFIG, customStrategies: new Map(Object.entries(strategies)) });
}

function strategyFailures(h: CoreHarness): string[] {
  return h.events.filter((e) => e.type === "job.strategy-failed").map((e) => e.message);
}

describe("custom strategies in the core", () => {
  it("places shards as a loaded strategy says", () => {
    const h = harness({ first: allOnFirst });
    const a = h.connect("a");
    const b = h.connect("b");
    h.apply(testSpec("job", { schedule: undefined, strategy: "custom:first" }));
    expect(a.shardsOf("job")).toEqual([0, 1, 2, 3]);
    expect(b.shardsOf("job")).toEqual([]);
    expect(strategyFailures(h)).toEqual([]);
  });

  it("falls back to sticky with a job.strategy-failed event when the strategy throws, and keeps running", () => {
    const h = harness({ flaky: failsOnTwo });
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, strategy: "custom:flaky" }));
    expect(a.shardsOf("job")).toEqual([0, 1, 2, 3]);
    expect(strategyFailures(h)).toEqual([]);

    const b = h.connect("b");
    h.run(1000);
    expect(a.shardsOf("job").length).toBe(2);
    expect(b.shardsOf("job").length).toBe(2);
    expect(strategyFailures(h)[0]).toBe("job: strategy custom:flaky threw: no region table for two agents; placing its shards with sticky instead");
    expect(h.events.find((e) => e.type === "job.strategy-failed")?.job).toBe("job");

    const fired = h.core.triggerJob("job", [0, 3], undefined, h.now);
    h.flush();
    expect(fired.executionIds).toHaveLength(2);
  });

  it("falls back to sticky when the strategy places a shard on an agent it was not given", () => {
    const h = harness({ stray: ({ shardCount }) => new Map(Array.from({ length: shardCount }, (_, shard) => [shard, "elsewhere"] as const)) });
    const a = h.connect("a");
    const b = h.connect("b");
    h.apply(testSpec("job", { schedule: undefined, strategy: "custom:stray" }));
    expect([a.shardsOf("job").length, b.shardsOf("job").length]).toEqual([2, 2]);
    expect(strategyFailures(h)[0]).toMatch(/^job: the strategy put shard 0 on "elsewhere", not an eligible agent; placing its shards with sticky instead$/);
  });

  it("falls back to sticky when the named strategy is not loaded on this controller", () => {
    const h = harness({});
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, strategy: "custom:gone" }));
    expect(a.shardsOf("job")).toEqual([0, 1, 2, 3]);
    expect(strategyFailures(h)[0]).toMatch(/strategy custom:gone is not loaded on this controller/);
  });
});
