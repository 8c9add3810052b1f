import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, testSpec, twoAgents, oneAgent, ownerOf } from "./testing/core-harness.js";

const LEASE = 2000;

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
