import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { CoreHarness, testSpec, twoAgents, ownerOf } from "./testing/core-harness.js";
import { DEFAULT_CORE_CONFIG } from "./config.js";

const LEASE = 2000;

describe("leases and failover", () => {
  it("keeps a crashed agent's shards fenced until its lease expires, then moves them and re-runs its executions", () => {
    const { h, a, b } = twoAgents();
    const fired = h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    expect(onA.length).toBe(2);
    for (const id of onA) h.report("a", id, "running");
    const aShards = a.shardsOf("job");

    h.crash("a");
    h.run(LEASE - 600, ["a"]);
    for (const shard of aShards) expect(ownerOf(h, "job", shard)).toBe("a");
    expect(b.dispatched.length).toBe(2);

    h.run(1000, ["a"]);
    for (const shard of aShards) expect(ownerOf(h, "job", shard)).toBe("b");
    for (const id of onA) {
      expect(h.execution(id)?.state).toBe("lost");
      const [job, fire, shard] = id.split("/");
      const rerun = `${job}/${fire}/${shard}/2`;
      expect(b.dispatchedIds()).toContain(rerun);
      expect(h.execution(rerun)?.cause).toBe("failover");
    }
    expect(fired.executionIds.length).toBe(4);
  });

  it("moves a lost agent's shards as soon as its stream closes with failover: fast", () => {
    const { h, a, b } = twoAgents(testSpec("job", { schedule: undefined, failover: "fast" }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    h.crash("a");
    expect(b.shardsOf("job")).toEqual([0, 1, 2, 3]);
    for (const id of onA) expect(b.dispatchedIds()).toContain(id.replace(/\/1$/, "/2"));
  });

  it("never re-runs a lost execution with failover: off", () => {
    const { h, a, b } = twoAgents(testSpec("job", { schedule: undefined, failover: "off" }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    h.crash("a");
    h.run(LEASE + 500, ["a"]);
    expect(b.shardsOf("job")).toEqual([0, 1, 2, 3]);
    for (const id of onA) expect(h.execution(id)?.state).toBe("lost");
    expect(b.dispatched.length).toBe(2);
  });

  it("expires the lease of an agent whose stream stays open but sends no heartbeat, and closes its stream", () => {
    const { h, a, b } = twoAgents();
    h.run(LEASE + 100, ["a"]);
    expect(a.closedReason).toMatch(/lease expired/);
    expect(b.shardsOf("job")).toEqual([0, 1, 2, 3]);
    expect(h.core.listAgents().map((x) => x.id)).toEqual(["b"]);
  });

  it("keeps one lease timer per agent however often it reconnects", () => {
    const { h, a } = twoAgents();
    const before = h.core.pendingTimers;
    for (let i = 0; i < 20; i++) {
      h.crash("a");
      h.advance(100);
      h.connect("a", { held: [...a.held.values()] });
      h.run(500);
    }
    expect(h.core.pendingTimers).toBe(before);
  });

  it("lets an agent that reconnects within its lease keep its shards and running executions", () => {
    const { h, a } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const running = a.dispatchedIds();
    for (const id of running) h.report("a", id, "running");
    const held = [...a.held.values()];
    h.crash("a");
    h.advance(300);
    const again = h.connect("a", { held, executions: running.map((executionId) => ({ executionId, state: "running" })) });
    expect(again.shardsOf("job")).toEqual(held.map((r) => r.shard).sort());
    h.run(LEASE * 2);
    for (const id of running) expect(h.core.openExecution(id)?.state).toBe("running");
    h.report("a", running[0]!, "succeeded");
    expect(h.execution(running[0]!)?.state).toBe("succeeded");
  });
});

describe("graceful leave", () => {
  it("moves a leaving agent's shards as soon as it releases them, with no fire missed", () => {
    const { h, a, b } = twoAgents(testSpec("job", { schedule: "* * * * * *" }));
    for (let i = 0; i < 3; i++) {
      h.run(1000);
      h.succeedAll("a");
      h.succeedAll("b");
    }
    h.core.goodbye(a.session, "SIGTERM", h.now);
    h.flush();
    expect(a.held.size).toBe(0);
    expect(b.shardsOf("job")).toEqual([0, 1, 2, 3]);
    for (let i = 0; i < 3; i++) {
      h.run(1000);
      h.succeedAll("b");
    }
    const all = h.executionsOf("job");
    expect(all.filter((e) => e.state === "misfired" || e.state === "lost")).toEqual([]);
    const fires = new Set(all.map((e) => e.fireTime));
    for (const fire of fires) expect(all.filter((e) => e.fireTime === fire && e.state === "succeeded").length).toBe(4);
  });

  it("keeps fires made while a shard is being handed back and runs them on the new owner", () => {
    const { h, a, b } = twoAgents(testSpec("job", { schedule: "* * * * * *", shards: 2 }));
    h.run(1000);
    const busy = a.dispatched.at(-1)!;
    h.report("a", busy.executionId, "running");
    h.core.goodbye(a.session, "SIGTERM", h.now);
    h.flush();
    h.run(1000);
    expect(a.held.has(`job/${busy.shard}`)).toBe(true);
    h.report("a", busy.executionId, "succeeded");
    expect(a.held.has(`job/${busy.shard}`)).toBe(false);
    const waiting = b.dispatched.filter((e) => e.shard === busy.shard && e.fireTime > busy.fireTime);
    expect(waiting.length).toBe(1);
    expect(h.execution(waiting[0]!.executionId)?.state).toBe("pending");
  });
});

describe("hello", () => {
  it("refuses a hello with a bad agent id, naming the field and what is allowed", () => {
    const h = new CoreHarness();
    expect(() =>
      h.core.hello("s1", { agentId: "Bad Id!", labels: {}, capacity: 1, handlers: [], executors: [], maxConcurrent: 0, version: "", held: [], executions: [] }, h.now),
    ).toThrowError(/hello\.agent_id: "Bad Id!" is not allowed; expected 1-253 characters/);
  });

  it("refuses messages on a stream that has not said hello", () => {
    const h = new CoreHarness();
    let error: unknown;
    try {
      h.core.heartbeat("nobody", 1, h.now);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as ShardlineError).code).toBe("failed-precondition");
  });

  it("replaces the stream of an agent that connects again while its old stream looks alive", () => {
    const { h, a } = twoAgents();
    const again = h.connect("a", { held: [...a.held.values()] });
    expect(a.closedReason).toMatch(/replaced/);
    expect(again.shardsOf("job").length).toBe(2);
  });
});

describe("a controller that could not run", () => {
  const STALL = 5_000;

  it("lets no lease lapse for the time it could not run, and keeps every shard where it was", () => {
    const { h, a, b } = twoAgents();
    const before = h.core.listAssignments("job");
    // The controller wakes STALL ms later: the heartbeats of that time are still unread.
    h.now += STALL;
    h.core.noteStall(STALL, h.now);
    h.flush();
    h.run(500);
    expect(h.core.listAssignments("job")).toEqual(before);
    expect(h.events.filter((e) => e.type === "agent.lease-expired")).toEqual([]);
    expect(h.events.filter((e) => e.type === "controller.stalled").map((e) => [e.message, e.stall])).toEqual([
      ["the controller could not run for 5000 ms; 2 agent leases extended by as much", { ms: STALL, leasesExtended: 2 }],
    ]);
    expect([a.closedReason, b.closedReason]).toEqual([undefined, undefined]);
  });

  it("without being told, expires the leases its own stall outlasted (what noteStall prevents)", () => {
    const { h } = twoAgents();
    h.now += STALL;
    h.core.tick(h.now);
    h.flush();
    expect(h.events.filter((e) => e.type === "agent.lease-expired")).toHaveLength(2);
  });

  it("does not bring back a lease that had lapsed before the stall began", () => {
    const { h } = twoAgents();
    h.crash("b");
    h.run(LEASE + DEFAULT_CORE_CONFIG.leaseMarginMs + 10);
    expect(h.core.listAgents().map((x) => x.id)).toEqual(["a"]);
    h.now += STALL;
    h.core.noteStall(STALL, h.now);
    h.flush();
    expect(h.core.listAgents().map((x) => x.id)).toEqual(["a"]);
  });

  it("holds a replaced process's shards for the time it could not run, too", () => {
    const h = new CoreHarness();
    h.connect("w-1", { instanceId: "11111111-1111-4111-8111-111111111111" });
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    h.crash("w-1");
    const restarted = h.connect("w-1", { instanceId: "22222222-2222-4222-8222-222222222222" });
    h.now += 1_000;
    h.core.noteStall(1_000, h.now);
    h.flush();
    h.run(LEASE + DEFAULT_CORE_CONFIG.leaseMarginMs - 1_000);
    expect(restarted.held.size).toBe(0);
    h.run(1_000);
    expect(restarted.shardsOf("job")).toEqual([0]);
  });
});

describe("an agent that said goodbye", () => {
  it("is sent no new run, even on a restarted controller that gives it back its shards during the startup grace", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    const held = [...a.held.values()];
    // The controller restarts while the agent drains: it reconnects, claims its shard and says goodbye again.
    h.start();
    const again = h.connect("a", { held });
    h.core.goodbye(again.session, "SIGTERM", h.now);
    h.flush();
    expect(again.shardsOf("job")).toEqual([0]);
    const { executionIds } = h.core.triggerJob("job", [0], undefined, h.now);
    h.flush();
    expect(again.dispatched).toEqual([]);
    expect(h.core.waitingReason(executionIds[0]!)).toBe("shard 0: its owner a is leaving (it said goodbye): the shard moves to another agent");
  });
});
