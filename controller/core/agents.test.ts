import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { CoreHarness, testSpec, twoAgents, ownerOf } from "./testing/core-harness.js";
import { DEFAULT_CORE_CONFIG } from "./config.js";

const LEASE = 2000;
/** The default disconnect grace, and the margin the controller adds to it. */
const GRACE = DEFAULT_CORE_CONFIG.disconnectGraceMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

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

    // Ownership moves at the lease; the runs may still be going on a: unknown, not run again.
    h.run(1000, ["a"]);
    for (const shard of aShards) expect(ownerOf(h, "job", shard)).toBe("b");
    for (const id of onA) expect(h.execution(id)?.state).toBe("unknown");
    expect(b.dispatched.length).toBe(2);
    expect(h.core.waitingReason(onA[0]!)).toMatch(/^agent a has been out of reach since .*the run may still be going there/);

    // Its disconnect grace over without a word from a: lost, and run again on b.
    h.run(GRACE, ["a"]);
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
    h.run(LEASE + 500 + GRACE, ["a"]);
    expect(b.shardsOf("job")).toEqual([0, 1, 2, 3]);
    for (const id of onA) expect(h.execution(id)?.state).toBe("lost");
    expect(b.dispatched.length).toBe(2);
  });

  it("with spec.disconnectGraceSeconds 0, records a lost agent's runs lost and runs them again as soon as its lease expires", () => {
    const { h, a, b } = twoAgents(testSpec("job", { schedule: undefined, disconnectGraceSeconds: 0 }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    expect(a.dispatched.map((d) => d.disconnectGraceMs)).toEqual([0, 0]);
    h.crash("a");
    h.run(LEASE + 500, ["a"]);
    for (const id of onA) expect(h.execution(id)?.state).toBe("lost");
    expect(b.dispatched.length).toBe(4);
  });

  it("waits out the grace a run was dispatched with, even when the job's grace is cut meanwhile", () => {
    const { h, a, b } = twoAgents(testSpec("job", { schedule: undefined, disconnectGraceSeconds: 60 }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    for (const id of onA) h.report("a", id, "running");
    expect(h.execution(onA[0]!)?.disconnectGraceMs).toBe(60_000);
    // The job's grace goes to 0; a, cut off, still goes on with the 60 s it was told.
    h.apply(testSpec("job", { schedule: undefined, disconnectGraceSeconds: 0 }));
    h.crash("a");
    h.run(LEASE + 500 + 30_000, ["a"]);
    for (const id of onA) expect(h.execution(id)?.state).toBe("unknown");
    h.run(30_000, ["a"]);
    for (const id of onA) expect(h.execution(id)?.state).toBe("lost");
    for (const id of onA) expect(b.dispatchedIds()).toContain(id.replace(/\/1$/, "/2"));
  });

  it("tells the agent each run's disconnect grace: the job's, else the controller's; none with failover: fast", () => {
    for (const [spec, grace] of [
      [{}, DEFAULT_CORE_CONFIG.disconnectGraceMs],
      [{ disconnectGraceSeconds: 60 }, 60_000],
      [{ failover: "fast" as const, disconnectGraceSeconds: 60 }, 0],
    ] as const) {
      const { h, a } = twoAgents(testSpec("job", { schedule: undefined, ...spec }));
      h.core.triggerJob("job", [], undefined, h.now);
      h.flush();
      expect(a.dispatched.map((d) => d.disconnectGraceMs)).toEqual([grace, grace]);
    }
  });

  it("keeps an unknown run's shard busy for its next owner under overlap: forbid, and takes the run back when its agent reports it within the grace", () => {
    const { h, a, b } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    for (const id of onA) h.report("a", id, "running");
    const aShards = a.shardsOf("job");
    // a is cut off: its stream stays open to nobody, and it sends no heartbeat.
    h.run(LEASE + 500, ["a"]);
    for (const shard of aShards) expect(ownerOf(h, "job", shard)).toBe("b");
    expect(b.dispatched.length).toBe(2);
    // A new fire: b's own shards start it, a's former ones wait for the unknown runs.
    const second = h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onAShards = second.executionIds.filter((id) => aShards.includes(Number(id.split("/")[2])));
    for (const id of onAShards) {
      expect(h.execution(id)?.state).toBe("pending");
      expect(h.core.waitingReason(id)).toMatch(/busy with its previous run, which may still be going on an agent out of reach until/);
    }
    // a comes back within its grace, still running them: they are running again, on a.
    h.connect("a", { executions: onA.map((id) => ({ executionId: id, state: "running" as const })) });
    for (const id of onA) expect(h.execution(id)).toMatchObject({ state: "running", agent: "a" });
    expect(h.events.filter((e) => e.type === "execution.reattached").map((e) => e.executionId)).toEqual(onA);
    // They finish: recorded once, as attempt 1, and the waiting fire goes to the shard's owner.
    for (const id of onA) h.report("a", id, "succeeded");
    for (const id of onA) expect(h.execution(id)?.state).toBe("succeeded");
    for (const id of onAShards) {
      const owner = ownerOf(h, "job", Number(id.split("/")[2]));
      expect(h.agents.get(owner!)!.dispatchedIds()).toContain(id);
    }
    expect(h.executionsOf("job").filter((e) => e.attempt > 1)).toEqual([]);
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

  it("extends an unknown run's disconnect grace by the time it could not run: the agent's report may be waiting unread", () => {
    const { h, a, b } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const [run] = a.dispatchedIds();
    h.report("a", run!, "running");
    h.crash("a");
    h.run(LEASE + 500, ["a"]);
    expect(h.execution(run!)?.state).toBe("unknown");
    // The controller stalls across the end of the grace; on waking, the grace runs on.
    h.now += GRACE;
    h.core.noteStall(GRACE, h.now);
    h.flush();
    expect(h.execution(run!)?.state).toBe("unknown");
    // a is back and reports it finished (it went on while a was cut off): succeeded, once.
    h.connect("a", { executions: [{ executionId: run!, state: "running" }] });
    h.report("a", run!, "succeeded");
    expect(h.execution(run!)?.state).toBe("succeeded");
    expect(b.dispatchedIds()).not.toContain(run!.replace(/\/1$/, "/2"));
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
