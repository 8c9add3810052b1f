import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

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

describe("a fire's executions share its fields", () => {
  // The Dispatch encoder compares a fire's fields by identity and encodes them once for a run of
  // executions that share them (controller/shell/dispatch-encoding.ts): a carrier or an executor
  // object made per execution would have it encode the fire again for every execution.
  it("gives every execution of an untraced fire one trace carrier and one executor object", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { capacity: 100, handlers: [], executors: ["script"] });
    h.apply(testSpec("job", { shards: 8, handler: "", script: { command: "report", args: ["x"], env: {}, killGraceSeconds: 10 } }));
    h.run(1000);
    expect(a.dispatched.length).toBe(8);
    const [first, ...rest] = a.dispatched;
    expect(first!.script).toBeDefined();
    for (const context of rest) {
      expect(context.traceContext).toBe(first!.traceContext);
      expect(context.script).toBe(first!.script);
    }
  });

  it("gives the next fire of the same spec the same executor object", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { capacity: 100, handlers: [], executors: ["script"] });
    h.apply(testSpec("job", { shards: 2, overlap: "allow", handler: "", script: { command: "report", args: [], env: {}, killGraceSeconds: 10 } }));
    h.run(2000);
    expect(new Set(a.dispatched.map((c) => c.fireTime)).size).toBe(2);
    expect(new Set(a.dispatched.map((c) => c.script)).size).toBe(1);
  });
});
