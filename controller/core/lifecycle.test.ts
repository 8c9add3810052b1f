import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

function oneAgent(overrides: Parameters<typeof testSpec>[1] = {}) {
  const h = new CoreHarness();
  const a = h.connect("a");
  h.apply(testSpec("job", { schedule: undefined, shards: 2, ...overrides }));
  return { h, a };
}

describe("retries", () => {
  it("retries a failed execution after its backoff, doubling the wait, up to the limit", () => {
    const { h, a } = oneAgent({ retries: { limit: 2, backoffSeconds: 10 } });
    const [first] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.report("a", first!, "failed");
    const second = first!.replace(/\/1$/, "/2");
    expect(h.execution(second)).toMatchObject({ state: "pending", cause: "retry", notBefore: h.now + 10_000 });
    h.run(9_999);
    expect(a.dispatchedIds()).not.toContain(second);
    h.run(1);
    expect(a.dispatchedIds()).toContain(second);

    h.report("a", second, "failed");
    const third = first!.replace(/\/1$/, "/3");
    h.run(19_999);
    expect(a.dispatchedIds()).not.toContain(third);
    h.run(1);
    expect(a.dispatchedIds()).toContain(third);
    h.report("a", third, "failed");
    h.run(120_000);
    expect(h.execution(first!.replace(/\/1$/, "/4"))).toBeUndefined();
  });

  it("does not retry a success or a cancel", () => {
    const { h } = oneAgent({ retries: { limit: 3, backoffSeconds: 1 } });
    const ids = h.core.triggerJob("job", [], undefined, h.now).executionIds;
    h.flush();
    h.report("a", ids[0]!, "succeeded");
    h.report("a", ids[1]!, "cancelled");
    h.advance(60_000);
    expect(h.executionsOf("job").map((e) => e.attempt)).toEqual([1, 1]);
  });

  it("keeps a waiting retry across a controller restart", () => {
    const { h, a } = oneAgent({ retries: { limit: 1, backoffSeconds: 30 } });
    const [first] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.report("a", first!, "timed-out");
    h.start();
    const again = h.connect("a", { held: [...a.held.values()] });
    h.run(29_000);
    const retry = first!.replace(/\/1$/, "/2");
    expect(again.dispatchedIds()).not.toContain(retry);
    h.run(1_500);
    expect(again.dispatchedIds()).toContain(retry);
  });
});

describe("cancel", () => {
  it("cancels a waiting execution at once", () => {
    const h = new CoreHarness();
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    const [id] = h.core.triggerJob("job", [], undefined, h.now).executionIds;
    h.flush();
    expect(h.core.cancelExecution(id!, "", h.now)).toBe("cancelled");
    h.flush();
    expect(h.execution(id!)).toMatchObject({ state: "cancelled", error: "cancelled by an operator" });
  });

  it("asks the agent to abort a dispatched execution and records it when the agent confirms", () => {
    const { h, a } = oneAgent();
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.report("a", id!, "running");
    expect(h.core.cancelExecution(id!, "wrong parameter", h.now)).toBe("running");
    h.flush();
    expect(a.cancelled).toEqual([id]);
    h.report("a", id!, "cancelled");
    expect(h.execution(id!)?.state).toBe("cancelled");
  });

  it("never re-runs a cancelled execution whose agent is lost before confirming", () => {
    const { h } = oneAgent();
    h.connect("b");
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    const owner = h.core.openExecution(id!)!.agent;
    h.core.cancelExecution(id!, "", h.now);
    h.flush();
    h.crash(owner);
    h.run(3000, [owner]);
    expect(h.execution(id!)?.state).toBe("cancelled");
    expect(h.execution(id!.replace(/\/1$/, "/2"))).toBeUndefined();
  });

  it("refuses to cancel an execution that is not open", () => {
    const { h } = oneAgent();
    expect(() => h.core.cancelExecution("job/1/0/1", "", h.now)).toThrowError(/not pending or running/);
  });
});

describe("disabled shards", () => {
  it("does not fire a disabled shard until it is enabled again", () => {
    const { h } = oneAgent({ schedule: "* * * * * *" });
    h.core.disableShard("job", 1, h.now);
    h.run(2000);
    expect(new Set(h.executionsOf("job").map((e) => e.shard))).toEqual(new Set([0]));
    h.core.enableShard("job", 1, h.now);
    h.succeedAll("a");
    h.run(1000);
    expect(new Set(h.executionsOf("job").map((e) => e.shard))).toEqual(new Set([0, 1]));
    expect(h.durable.jobs.get("job")?.disabledShards).toEqual([]);
  });

  it("refuses to trigger a disabled shard by name, and names a shard out of range", () => {
    const { h } = oneAgent();
    h.core.disableShard("job", 0, h.now);
    expect(() => h.core.triggerJob("job", [0], undefined, h.now)).toThrowError(/shard 0 of job job is disabled/);
    let error: unknown;
    try {
      h.core.disableShard("job", 7, h.now);
    } catch (e) {
      error = e;
    }
    expect((error as ShardlineError).message).toMatch(/^shard: 7 is not allowed; expected a shard number from 0 to 1/);
  });
});

describe("applying a manifest", () => {
  it("takes a changed schedule at once, and changes nothing when the spec is the same", () => {
    const h = new CoreHarness();
    h.apply(testSpec("job", { schedule: "0 0 * * * *" }));
    const base = Date.UTC(2026, 0, 1, 0, 0, 0);
    expect(h.core.getJob("job").nextFire).toBe(base + 3_600_000);
    h.apply(testSpec("job", { schedule: "*/10 * * * * *" }));
    expect(h.core.getJob("job").nextFire).toBe(base + 10_000);
    expect(h.core.getJob("job").record.revision).toBe(2);
    const same = h.core.applyJob("job", testSpec("job", { schedule: "*/10 * * * * *" }), "other text", h.now);
    expect(same.changed).toBe(false);
    expect(h.core.getJob("job").record.revision).toBe(2);
    h.advance(10_000);
    expect(h.executionsOf("job").map((e) => e.fireTime)).toContain(base + 10_000);
  });
});

describe("job view", () => {
  it("lists the next five scheduled fires", () => {
    const h = new CoreHarness();
    h.apply(testSpec("job", { schedule: "0 */15 * * * *" }));
    const base = Date.UTC(2026, 0, 1, 0, 0, 0);
    expect(h.core.getJob("job").upcoming).toEqual([1, 2, 3, 4, 5].map((i) => base + i * 15 * 60_000));
  });
});

describe("slots and priority", () => {
  it("starts no more executions on an agent than its slots, and the next when one frees", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { maxConcurrent: 1 });
    h.apply(testSpec("job", { schedule: undefined, shards: 2 }));
    const ids = h.core.triggerJob("job", [], undefined, h.now).executionIds;
    h.flush();
    expect(a.dispatchedIds()).toEqual([ids[0]]);
    expect(h.core.queuePositions()).toEqual(new Map([[ids[1], 1]]));
    h.report("a", ids[0]!, "succeeded");
    expect(a.dispatchedIds()).toEqual(ids);
    expect(h.core.queuePositions().size).toBe(0);
  });

  it("gives a freed slot to the highest-priority waiting execution, then first in, first out", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { maxConcurrent: 1 });
    h.apply(testSpec("busy", { schedule: undefined, shards: 1 }));
    h.apply(testSpec("low", { schedule: undefined, shards: 1, priority: 0 }));
    h.apply(testSpec("high", { schedule: undefined, shards: 1, priority: 10 }));
    const [busy] = h.core.triggerJob("busy", [], undefined, h.now).executionIds;
    h.flush();
    h.advance(1);
    const [low1] = h.core.triggerJob("low", [], undefined, h.now).executionIds;
    h.advance(1);
    const [high] = h.core.triggerJob("high", [], undefined, h.now).executionIds;
    h.flush();
    expect(h.core.queuePositions()).toEqual(new Map([[high, 1], [low1, 2]]));
    h.report("a", busy!, "succeeded");
    expect(a.dispatchedIds()).toEqual([busy, high]);
    h.report("a", high!, "succeeded");
    expect(a.dispatchedIds()).toEqual([busy, high, low1]);
  });

  it("shows each agent's slots and how many run on it", () => {
    const h = new CoreHarness();
    h.connect("a", { maxConcurrent: 3 });
    h.apply(testSpec("job", { schedule: undefined, shards: 2 }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    expect(h.core.listAgents().map((x) => [x.id, x.maxConcurrent, x.running])).toEqual([["a", 3, 2]]);
  });
});
