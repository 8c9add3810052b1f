import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, testSpec, twoAgents } from "./testing/core-harness.js";

/** The default disconnect grace, and the margin the controller adds to it. */
const GRACE = DEFAULT_CORE_CONFIG.disconnectGraceMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

const MARGIN = DEFAULT_CORE_CONFIG.leaseMarginMs;
const LEASE = 2000;

describe("controller restart", () => {
  it("keeps jobs and lets reconnecting agents keep their shards and running executions", () => {
    const { h, a, b } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const running = [...a.dispatchedIds(), ...b.dispatchedIds()];
    for (const id of a.dispatchedIds()) h.report("a", id, "running");
    for (const id of b.dispatchedIds()) h.report("b", id, "running");
    const heldA = [...a.held.values()];
    const heldB = [...b.held.values()];

    h.advance(500);
    h.start();
    expect(h.core.listJobs().map((j) => j.record.name)).toEqual(["job"]);
    const a2 = h.connect("a", { held: heldA, executions: a.dispatchedIds().map((executionId) => ({ executionId, state: "running" })) });
    const b2 = h.connect("b", { held: heldB, executions: b.dispatchedIds().map((executionId) => ({ executionId, state: "running" })) });
    h.run(LEASE * 2);
    expect(a2.shardsOf("job")).toEqual(heldA.map((r) => r.shard).sort());
    expect(b2.shardsOf("job")).toEqual(heldB.map((r) => r.shard).sort());
    for (const id of running) expect(h.core.openExecution(id)?.state).toBe("running");
    expect(a2.dispatched.length + b2.dispatched.length).toBe(0);
  });

  it("gives the shards of an agent not back within one lease to the others, and places shards on it again when it returns fenced", () => {
    const { h, b } = twoAgents();
    const heldB = [...b.held.values()];
    h.start();
    const b2 = h.connect("b", { held: heldB });
    h.run(LEASE + DEFAULT_CORE_CONFIG.leaseMarginMs + 1, ["a"]);
    expect(h.core.listAssignments("job").map((x) => x.agent)).toEqual(["b", "b", "b", "b"]);
    // Its lease lapsed: a real agent fenced itself, forgot its shards, and claims none.
    const a2 = h.connect("a", { held: [] });
    h.run(LEASE);
    expect(a2.shardsOf("job")).toHaveLength(2);
    expect([...a2.shardsOf("job"), ...b2.shardsOf("job")].sort()).toEqual([0, 1, 2, 3]);
  });

  it("bounds the leases it grants by limitLeases, in the Welcome and in every ack", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    expect(a.welcome?.leaseTtlMs).toBe(LEASE);
    h.core.limitLeases(h.now + 700, h.now);
    const b = h.connect("b");
    expect(b.welcome?.leaseTtlMs).toBe(700);
    h.run(500);
    expect(a.ackTtls.at(-1)).toBe(200);
    expect(b.ackTtls.at(-1)).toBe(200);
    // The controller's view of each lease ends with the lease granted, plus the margin.
    expect(h.core.listAgents().map((agent) => agent.leaseExpiresAt)).toEqual([h.now + 200 + MARGIN, h.now + 200 + MARGIN]);
    h.core.limitLeases(undefined, h.now);
    const c = h.connect("c");
    h.run(500);
    expect(c.welcome?.leaseTtlMs).toBe(LEASE);
    expect(c.ackTtls.at(-1)).toBe(LEASE);
  });

  it("says how long its agents' leases, and its predecessor's, still run", () => {
    const { h } = twoAgents();
    expect(h.core.leasesEndWithin(h.now)).toBe(LEASE + MARGIN);
    h.advance(300);
    expect(h.core.leasesEndWithin(h.now)).toBe(LEASE + MARGIN - 300);
    h.durable.predecessorLeasesEndWithinMs = 1500;
    h.start();
    expect(h.core.leasesEndWithin(h.now)).toBe(1500 + MARGIN);
  });

  it("keeps a restored run for its agent when another agent releases the shard, and takes the agent's report when it returns", () => {
    const { h, a } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    for (const id of onA) h.report("a", id, "running");
    h.durable.predecessorLeasesEndWithinMs = 0;
    h.start();
    // b comes back first and gets every shard; a, back later, takes some of them, so b releases them.
    const b2 = h.connect("b", { held: [] });
    h.run(DEFAULT_CORE_CONFIG.leaseMarginMs + 1, ["a"]);
    expect(b2.shardsOf("job")).toEqual([0, 1, 2, 3]);
    const a2 = h.connect("a", { held: [], executions: onA.map((executionId) => ({ executionId, state: "running" as const })) });
    h.run(500);
    expect(a2.shardsOf("job").length).toBeGreaterThan(0);
    for (const id of onA) expect(h.execution(id)?.state).toBe("running");
    for (const id of onA) h.report("a", id, "succeeded");
    for (const id of onA) {
      expect(h.execution(id)?.state).toBe("succeeded");
      expect(h.execution(id.replace(/\/1$/, "/2"))).toBeUndefined();
    }
  });

  it("after a leader whose leases all ended (bounded by its leadership), gives unclaimed shards at once", () => {
    const { h } = twoAgents();
    h.durable.predecessorLeasesEndWithinMs = 0;
    h.start();
    const b2 = h.connect("b", { held: [] });
    h.run(DEFAULT_CORE_CONFIG.leaseMarginMs + 1, ["a"]);
    expect(b2.shardsOf("job")).toEqual([0, 1, 2, 3]);
  });

  it("sends a reconnecting agent the failover run of a run it no longer holds only after its snapshot, so it holds the shard the run names", () => {
    const { h, a } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const [gone] = a.dispatchedIds();
    h.report("a", gone!, "running");
    // a's stream drops and it comes back at once, without the run (its process lost it).
    h.crash("a");
    const again = h.connect("a", { held: [...a.held.values()] });
    expect(h.execution(gone!)?.state).toBe("lost");
    const rerun = gone!.replace(/\/1$/, "/2");
    expect(again.dispatchedIds()).toContain(rerun);
    expect(again.received.indexOf("snapshot")).toBeLessThan(again.received.indexOf("dispatch"));
    expect(again.received[0]).toBe("welcome");
  });

  it("re-runs the executions of an agent that does not come back after the restart", () => {
    const { h, a } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    h.start();
    const b2 = h.connect("b", { held: [] });
    h.run(LEASE + DEFAULT_CORE_CONFIG.leaseMarginMs + 500 + GRACE, ["a"]);
    for (const id of onA) {
      expect(h.execution(id)?.state).toBe("lost");
      expect(b2.dispatchedIds()).toContain(id.replace(/\/1$/, "/2"));
    }
  });

  it("runs the latest missed fire once after downtime and records the others as misfired (fire-once)", () => {
    const h = new CoreHarness();
    h.connect("a");
    h.apply(testSpec("job", { shards: 1 }));
    for (let i = 0; i < 3; i++) {
      h.run(1000);
      h.succeedAll("a");
    }
    const cursor = h.durable.cursors.get("job")!;
    h.now += 5000;
    h.start();
    const missed = h.executionsOf("job").filter((e) => e.fireTime > cursor);
    expect(missed.filter((e) => e.state === "misfired").map((e) => e.fireTime)).toEqual([1, 2, 3, 4].map((s) => cursor + s * 1000));
    expect(missed.filter((e) => e.state === "pending").map((e) => e.fireTime)).toEqual([cursor + 5000]);
    expect(h.durable.cursors.get("job")).toBe(cursor + 5000);
  });

  it("never fires the same instant twice across a restart", () => {
    const h = new CoreHarness();
    h.apply(testSpec("job", { shards: 1 }));
    const a = h.connect("a");
    h.run(LEASE + 3000);
    h.succeedAll("a");
    h.start();
    const a2 = h.connect("a", { held: [...a.held.values()] });
    h.run(3000);
    const ids = [...a.dispatchedIds(), ...a2.dispatchedIds()];
    expect(new Set(ids).size).toBe(ids.length);
    const fires = ids.map((id) => id.split("/")[1]);
    expect(new Set(fires).size).toBe(fires.length);
  });
});
