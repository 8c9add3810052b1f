import { describe, expect, it } from "vitest";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

const daemon = (overrides: Parameters<typeof testSpec>[1] = {}) =>
  testSpec("consumer", { schedule: undefined, daemon: true, shards: 2, retries: { limit: 0, backoffSeconds: 5 }, ...overrides });

function open(h: CoreHarness, agent: string): string[] {
  return h.agents
    .get(agent)!
    .dispatched.filter((c) => h.core.openExecution(c.executionId) !== undefined)
    .map((c) => c.executionId);
}

describe("daemon jobs", () => {
  it("runs one execution per shard for as long as an agent owns it", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(daemon());
    expect(a.dispatched.map((c) => [c.shard, c.daemon, h.core.openExecution(c.executionId)?.cause])).toEqual([
      [0, true, "daemon"],
      [1, true, "daemon"],
    ]);
    h.run(10_000);
    expect(a.dispatched).toHaveLength(2);
  });

  it("stops a shard's run when the shard moves, and the new owner starts its own", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(daemon());
    for (const c of a.dispatched) h.report("a", c.executionId, "running");
    const b = h.connect("b");
    expect(a.cancelled).toHaveLength(1);
    const moving = a.dispatched.find((c) => c.executionId === a.cancelled[0])!;
    expect(b.dispatched).toEqual([]);
    h.report("a", moving.executionId, "cancelled");
    expect(b.dispatched.map((c) => [c.shard, c.daemon])).toEqual([[moving.shard, true]]);
  });

  it("restarts a run that ends, after the job's backoff", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(daemon({ shards: 1 }));
    h.report("a", a.dispatched[0]!.executionId, "failed");
    h.run(4_500);
    expect(a.dispatched).toHaveLength(1);
    h.run(1_000);
    expect(a.dispatched).toHaveLength(2);
    expect(open(h, "a")).toEqual([a.dispatched[1]!.executionId]);
  });

  it("does not re-run a lost agent's daemon run as a failover; the next owner starts a fresh one", () => {
    const h = new CoreHarness();
    h.connect("a");
    h.apply(daemon({ shards: 1 }));
    const b = h.connect("b");
    h.crash("a");
    h.run(2_500, ["a"]);
    expect(b.dispatched.map((c) => [c.attempt, h.core.openExecution(c.executionId)?.cause])).toEqual([[1, "daemon"]]);
    expect(h.executionsOf("consumer").filter((e) => e.cause === "failover")).toEqual([]);
  });

  it("stops its runs while paused and starts them again on resume; it cannot be triggered", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(daemon());
    h.core.pauseJob("consumer", h.now);
    h.flush();
    expect(a.cancelled).toHaveLength(2);
    for (const id of a.cancelled) h.report("a", id, "cancelled");
    h.run(10_000);
    expect(a.dispatched).toHaveLength(2);
    h.core.resumeJob("consumer", h.now);
    h.flush();
    expect(a.dispatched).toHaveLength(4);
    expect(() => h.core.triggerJob("consumer", [], undefined, h.now)).toThrowError(/daemon job/);
  });
});
