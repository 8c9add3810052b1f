import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

const FIRST = "11111111-1111-4111-8111-111111111111";
const SECOND = "22222222-2222-4222-8222-222222222222";
const LEASE_AND_MARGIN = DEFAULT_CORE_CONFIG.leaseTtlMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

/** Agent w-1 (process FIRST, from 10.0.0.1) owns every shard of a manual-only job. */
function heldId() {
  const h = new CoreHarness();
  const holder = h.connect("w-1", { instanceId: FIRST, peer: "10.0.0.1:5000" });
  h.apply(testSpec("job", { schedule: undefined, shards: 2 }));
  return { h, holder };
}

describe("one process per agent id", () => {
  it("refuses a second process under an id a connected process holds, naming the holder, and changes nothing of it", () => {
    const { h, holder } = heldId();
    const before = h.core.listAssignments("job");

    const second = h.connect("w-1", { instanceId: SECOND, peer: "10.0.0.2:6000" });

    expect(second.closedCode).toBe("already-exists");
    expect(second.closedReason).toMatch(/^agent id "w-1" is held by another process \(instance 11111111\.\.\., connected from 10\.0\.0\.1:5000\); its lease runs for another \d+\.\d s\./);
    expect(second.closedReason).toContain("give each its own --id, or start this one with --wait-for-id");
    expect(second.welcomed).toBe(false);
    expect(second.held.size).toBe(0);
    expect(holder.closedReason).toBeUndefined();
    expect(h.core.listAssignments("job")).toEqual(before);
    const [view] = h.core.listAgents();
    expect(view).toMatchObject({ id: "w-1", instanceId: FIRST, refusedHellos: 1, state: "ready" });
    expect(view!.lastRefusal).toMatch(/from 10\.0\.0\.2:6000 \(instance 22222222\.\.\.\)$/);
    expect(h.events.filter((e) => e.type === "agent.refused").map((e) => e.agent)).toEqual(["w-1"]);
  });

  it("runs nothing on the refused process, and the holder keeps running the job's fires", () => {
    const { h, holder } = heldId();
    const second = h.connect("w-1", { instanceId: SECOND });
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    expect(second.dispatched).toEqual([]);
    expect(holder.dispatched.map((c) => c.shard).sort()).toEqual([0, 1]);
    // Its later messages speak for nobody.
    expect(() => h.core.heartbeat(second.session, 1, h.now)).toThrow(ShardlineError);
  });

  it("lets the same process reconnect on a new stream, which replaces the old one", () => {
    const { h, holder } = heldId();
    const again = h.connect("w-1", { instanceId: FIRST, held: [...holder.held.values()] });
    expect(again.welcomed).toBe(true);
    expect(again.shardsOf("job")).toEqual([0, 1]);
    expect(holder.closedReason).toBe("replaced by a new stream of the same agent");
  });

  it("takes a Hello without an instance as the same process, as agents that predate the field are", () => {
    const { h, holder } = heldId();
    const again = h.connect("w-1", { held: [...holder.held.values()] });
    expect(again.welcomed).toBe(true);
    expect(holder.closedReason).toBeDefined();
  });

  it("makes a restarted process wait out its predecessor's lease, then gives it the id and the shards", () => {
    const { h } = heldId();
    h.crash("w-1");
    const early = h.connect("w-1", { instanceId: SECOND, peer: "10.0.0.1:5001" });
    expect(early.closedCode).toBe("unavailable");
    expect(early.closedReason).toMatch(/^agent id "w-1" is fenced: its previous process \(instance 11111111\.\.\.\) lost its stream, and its lease runs until .+Z \(another \d+\.\d s\); this process takes the id over then, retrying$/);
    expect(h.core.listAssignments("job").map((a) => a.agent)).toEqual(["w-1", "w-1"]);

    h.advance(LEASE_AND_MARGIN);
    const later = h.connect("w-1", { instanceId: SECOND, peer: "10.0.0.1:5001" });
    expect(later.closedCode).toBeUndefined();
    expect(later.welcomed).toBe(true);
    expect(later.shardsOf("job")).toEqual([0, 1]);
    expect(h.core.listAgents()[0]).toMatchObject({ instanceId: SECOND, refusedHellos: 0 });
  });

  it("gives the id to another process once the holder's lease expired while its stream stayed open", () => {
    const { h } = heldId();
    h.run(LEASE_AND_MARGIN + 500, ["w-1"]);
    const next = h.connect("w-1", { instanceId: SECOND });
    expect(next.welcomed).toBe(true);
  });

  it("refuses a malformed instance id, naming the field", () => {
    const h = new CoreHarness();
    expect(() =>
      h.core.hello("s", { agentId: "w-1", labels: {}, capacity: 1, handlers: [], executors: [], maxConcurrent: 0, version: "", held: [], executions: [], instanceId: "short" }, h.now),
    ).toThrow(/^hello\.instance_id: "short" is not allowed; expected empty, or 16-64 letters/);
  });
});
