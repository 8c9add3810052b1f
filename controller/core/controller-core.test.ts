import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

const MARGIN = DEFAULT_CORE_CONFIG.leaseMarginMs;
const LEASE = 2000;

/** Two agents sharing a manual-only 4-shard job, past the startup grace. */
function twoAgents(spec = testSpec("job", { schedule: undefined })) {
  const h = new CoreHarness();
  const a = h.connect("a");
  const b = h.connect("b");
  h.apply(spec);
  return { h, a, b };
}

function ownerOf(h: CoreHarness, job: string, shard: number): string | undefined {
  return h.core.listAssignments(job).find((x) => x.shard === shard)?.agent;
}

describe("assignment", () => {
  it("spreads a job's shards evenly over the agents", () => {
    const { a, b } = twoAgents();
    expect(a.shardsOf("job").length).toBe(2);
    expect(b.shardsOf("job").length).toBe(2);
    expect([...a.shardsOf("job"), ...b.shardsOf("job")].sort()).toEqual([0, 1, 2, 3]);
  });

  it("gives shards only to agents that declared the job's handler", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { handlers: ["other"] });
    const b = h.connect("b");
    h.apply(testSpec("job", { schedule: undefined }));
    expect(a.shardsOf("job")).toEqual([]);
    expect(b.shardsOf("job")).toEqual([0, 1, 2, 3]);
  });

  it("gives a script job only to agents that run scripts, and sends the command with each execution", () => {
    const h = new CoreHarness();
    const plain = h.connect("plain");
    const runner = h.connect("runner", { handlers: [], executors: ["script"] });
    const script = { command: "report", args: ["--daily"], env: { MODE: "full" }, killGraceSeconds: 5 };
    h.apply(testSpec("job", { schedule: undefined, shards: 2, handler: "", script }));
    expect(plain.shardsOf("job")).toEqual([]);
    expect(runner.shardsOf("job")).toEqual([0, 1]);
    h.core.triggerJob("job", [0], undefined, h.now);
    h.flush();
    expect(runner.dispatched[0]!.script).toEqual({ command: "report", args: ["--daily"], env: { MODE: "full" }, killGraceMs: 5000 });
  });

  it("moves at most its fair share to an agent that joins", () => {
    const { h, a, b } = twoAgents(testSpec("job", { schedule: undefined, shards: 6 }));
    const c = h.connect("c");
    expect(c.shardsOf("job").length).toBe(2);
    expect(a.shardsOf("job").length + b.shardsOf("job").length).toBe(4);
  });
});

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

describe("work that outlives an agent's process", () => {
  it("cancels what a returning agent still runs after the controller recorded it lost and ran it again", () => {
    const { h, a, b } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    for (const id of onA) h.report("a", id, "running");
    h.crash("a");
    h.run(LEASE + 1000, ["a"]);
    for (const id of onA) expect(h.execution(id)?.state).toBe("lost");
    expect(b.dispatchedIds()).toEqual(expect.arrayContaining(onA.map((id) => id.replace(/\/1$/, "/2"))));
    // Back, still running its first attempts (Kubernetes Jobs outlive the agent's process).
    const again = h.connect("a", { executions: onA.map((executionId) => ({ executionId, state: "running" as const })) });
    expect(again.cancelled.sort()).toEqual([...onA].sort());
    for (const id of onA) expect(h.execution(id)?.state).toBe("lost");
  });

  it("cancels nothing a returning agent runs within its lease", () => {
    const { h, a } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const running = a.dispatchedIds();
    for (const id of running) h.report("a", id, "running");
    const held = [...a.held.values()];
    h.crash("a");
    h.advance(300);
    expect(h.connect("a", { held, executions: running.map((executionId) => ({ executionId, state: "running" as const })) }).cancelled).toEqual([]);
  });
});

describe("deleting a job and applying it again", () => {
  it("fires after the deleted job's last fire, so no execution id is made twice", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: "*/10 * * * * *", shards: 1 }));
    h.run(10_000 - DEFAULT_CORE_CONFIG.dispatchAheadMs);
    const first = a.dispatchedIds();
    expect(first).toHaveLength(1);
    // Deleted and applied again before the instant of the fire it already dispatched ahead.
    h.core.deleteJob("job", h.now);
    h.apply(testSpec("job", { schedule: "*/10 * * * * *", shards: 1 }));
    expect(a.cancelled).toEqual(first);
    h.report("a", first[0]!, "cancelled");
    h.run(20_000);
    const again = a.dispatchedIds().slice(1);
    expect(again.length).toBeGreaterThan(0);
    for (const id of again) expect(first).not.toContain(id);
    // The same holds across a restart: the deleted job's cursor stayed in the store.
    h.core.deleteJob("job", h.now);
    const last = h.core.take().persist.cursors;
    expect(last).toBeUndefined();
    h.start();
    h.apply(testSpec("job", { schedule: "*/10 * * * * *", shards: 1 }));
    expect(h.core.getJob("job").nextFire).toBeGreaterThan(Math.max(...again.map((id) => Number(id.split("/")[1]))));
  });

  it("keeps a shard its disconnected owner still holds fenced for it, until its lease expires", () => {
    const { h, a, b } = twoAgents();
    const aShards = a.shardsOf("job");
    h.crash("a");
    h.core.deleteJob("job", h.now);
    h.apply(testSpec("job", { schedule: undefined }));
    h.run(LEASE - 600, ["a"]);
    expect(b.shardsOf("job")).toEqual(b.shardsOf("job").filter((s) => !aShards.includes(s)));
    for (const shard of aShards) expect(ownerOf(h, "job", shard)).toBe("a");
    h.run(1000, ["a"]);
    expect(b.shardsOf("job")).toEqual([0, 1, 2, 3]);
  });
});

describe("fencing by term and generation", () => {
  it("stamps each dispatched execution with its assignment, and a move raises the generation", () => {
    const { h, a, b } = twoAgents();
    const before = new Map(h.core.listAssignments("job").map((x) => [x.shard, x.generation]));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    for (const context of [...a.dispatched, ...b.dispatched]) {
      expect(context.assignment?.generation).toBe(before.get(context.shard));
      expect(context.assignment?.term).toBe(h.core.term);
    }
    h.core.drainAgent("a", h.now);
    h.flush();
    const moved = a.shardsOf("job");
    h.releaseRevoked("a");
    for (const shard of moved) {
      const after = h.core.listAssignments("job").find((x) => x.shard === shard)!;
      expect(after.agent).toBe("b");
      expect(after.generation).toBeGreaterThan(before.get(shard)!);
    }
  });

  it("ignores a release that names an older generation", () => {
    const { h, a } = twoAgents();
    const [ref] = [...a.held.values()];
    h.core.release(a.session, [{ ...ref!, generation: ref!.generation - 1 }], h.now);
    h.flush();
    expect(ownerOf(h, "job", ref!.shard)).toBe("a");
  });

  it("runs a restarted controller under a higher term", () => {
    const h = new CoreHarness();
    const first = h.core.term;
    h.start();
    expect(h.core.term).toBe(first + 1);
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

describe("overlap and misfire", () => {
  function busyShard(overrides: Parameters<typeof testSpec>[1]) {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { shards: 1, ...overrides }));
    h.run(1000);
    const first = a.dispatched[0]!;
    h.report("a", first.executionId, "running");
    return { h, a, first };
  }

  it("holds the next fire of a busy shard and runs it when the earlier run ends (forbid, fire-once)", () => {
    const { h, a, first } = busyShard({});
    h.run(1000);
    expect(a.dispatched.length).toBe(1);
    const held = h.executionsOf("job").find((e) => e.fireTime > first.fireTime)!;
    expect(held.state).toBe("pending");
    h.report("a", first.executionId, "succeeded");
    expect(a.dispatchedIds()).toEqual([first.executionId, held.id]);
  });

  it("records further fires of a busy shard as misfired, saying why", () => {
    const { h } = busyShard({});
    h.run(3000);
    const misfired = h.executionsOf("job").filter((e) => e.state === "misfired");
    expect(misfired.length).toBe(2);
    expect(misfired[0]!.error).toMatch(/fire-once/);
  });

  it("records a busy shard's fire as misfired at once with misfire: skip", () => {
    const { h, a } = busyShard({ misfire: "skip" });
    h.run(1000);
    expect(a.dispatched.length).toBe(1);
    expect(h.executionsOf("job").filter((e) => e.state === "misfired").length).toBe(1);
  });

  it("runs fires of the same shard side by side with overlap: allow", () => {
    const { h, a } = busyShard({ overlap: "allow" });
    h.run(2000);
    expect(a.dispatched.length).toBe(3);
  });

  it("cancels the running execution when a new fire comes with overlap: replace", () => {
    const { h, a, first } = busyShard({ overlap: "replace" });
    h.run(1000);
    expect(a.cancelled).toEqual([first.executionId]);
    expect(a.dispatched.length).toBe(2);
  });
});

describe("dispatch ahead of the fire instant", () => {
  it("makes a scheduled fire dispatchAheadMs before its instant, which stays its fire time", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: "*/10 * * * * *", shards: 1 }));
    const instant = h.now + 10_000;
    h.run(10_000 - DEFAULT_CORE_CONFIG.dispatchAheadMs - 1);
    expect(a.dispatched).toEqual([]);
    h.run(1);
    expect(a.dispatched.map((c) => [c.executionId, c.fireTime])).toEqual([[`job/${instant}/0/1`, instant]]);
    expect(h.core.getJob("job").lastFire).toBe(instant);
  });

  it("tells each agent in its Welcome how far ahead it dispatches", () => {
    const h = new CoreHarness({ ...DEFAULT_CORE_CONFIG, dispatchAheadMs: 123 });
    const a = h.connect("a");
    expect(a.welcome?.dispatchAheadMs).toBe(123);
  });
});

describe("schedules in a named time zone", () => {
  function fireTimes(schedule: string, timeZone: string, from: string, days: number): string[] {
    const h = new CoreHarness();
    h.now = Date.parse(from);
    h.apply(testSpec("job", { shards: 1, schedule, timeZone, misfire: "catch-up", maxCatchUp: 10 }));
    h.advance(days * 24 * 3600 * 1000);
    return [...new Set(h.executionsOf("job").map((e) => e.fireTime))].sort().map((t) => new Date(t).toISOString());
  }

  it("fires 01:30 New York time once on the day the clocks fall back", () => {
    // 01:30 EDT is 05:30Z; the repeated 01:30 EST (06:30Z) on 1 November must not fire again.
    expect(fireTimes("0 30 1 * * *", "America/New_York", "2026-10-31T00:00:00Z", 3)).toEqual([
      "2026-10-31T05:30:00.000Z",
      "2026-11-01T05:30:00.000Z",
      "2026-11-02T06:30:00.000Z",
    ]);
  });

  it("follows Berlin's switch to summer time", () => {
    // 09:00 CET is 08:00Z; from 29 March, 09:00 CEST is 07:00Z.
    expect(fireTimes("0 0 9 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3)).toEqual([
      "2026-03-28T08:00:00.000Z",
      "2026-03-29T07:00:00.000Z",
      "2026-03-30T07:00:00.000Z",
    ]);
  });
});

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

  it("re-runs the executions of an agent that does not come back after the restart", () => {
    const { h, a } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    h.start();
    const b2 = h.connect("b", { held: [] });
    h.run(LEASE + DEFAULT_CORE_CONFIG.leaseMarginMs + 500, ["a"]);
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
