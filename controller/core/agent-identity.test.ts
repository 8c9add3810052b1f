import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

const FIRST = "11111111-1111-4111-8111-111111111111";
const SECOND = "22222222-2222-4222-8222-222222222222";
const LEASE_AND_MARGIN = DEFAULT_CORE_CONFIG.leaseTtlMs + DEFAULT_CORE_CONFIG.leaseMarginMs;
/** The default disconnect grace, and the margin the controller adds to it. */
const GRACE = DEFAULT_CORE_CONFIG.disconnectGraceMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

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

  it("welcomes a restarted process at once, but gives it its predecessor's shards only once that one's lease has expired", () => {
    const { h } = heldId();
    const before = h.core.listAssignments("job");
    h.crash("w-1");
    const restarted = h.connect("w-1", { instanceId: SECOND, peer: "10.0.0.1:5001" });
    expect(restarted.welcomed).toBe(true);
    // The old process may be alive behind a partition, still running them: not sent, not moved.
    expect(restarted.held.size).toBe(0);
    expect(h.core.listAssignments("job")).toEqual(before);
    expect(h.events.filter((e) => e.type === "agent.replaced").map((e) => e.message)).toEqual([
      expect.stringMatching(/^agent w-1: a new process \(instance 22222222\.\.\. from 10\.0\.0\.1:5001\) replaces one that lost its stream \(instance 11111111\.\.\.\); its 2 shards and 0 runs stay that one's until its lease expires at .+Z$/),
    ]);
    h.core.triggerJob("job", [0], undefined, h.now);
    h.flush();
    expect(restarted.dispatched).toEqual([]);

    h.run(LEASE_AND_MARGIN);
    expect(restarted.shardsOf("job")).toEqual([0, 1]);
    const after = h.core.listAssignments("job");
    expect(after.every((a, i) => a.agent === "w-1" && a.generation > before[i]!.generation)).toBe(true);
    expect(restarted.dispatched.map((c) => c.shard)).toEqual([0]);
    expect(h.core.listAgents()[0]).toMatchObject({ instanceId: SECOND, refusedHellos: 0 });
  });

  it("adopts the runs a restarted process reports (its Kubernetes Jobs), and takes the others for lost only once the old lease and its disconnect grace are over", () => {
    const { h, holder } = heldId();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const [kept, gone] = holder.dispatched.map((c) => c.executionId);
    h.report("w-1", kept!, "running");
    h.report("w-1", gone!, "running");
    h.crash("w-1");
    const restarted = h.connect("w-1", { instanceId: SECOND, executions: [{ executionId: kept!, state: "running" }] });
    expect(h.core.openExecution(kept!)).toMatchObject({ state: "running", agent: "w-1" });
    expect(h.core.openExecution(gone!)).toMatchObject({ state: "running", agent: "w-1" });

    h.report("w-1", kept!, "succeeded");
    expect(h.execution(kept!)).toMatchObject({ state: "succeeded", attempt: 1 });
    // The old process may go on running it for its disconnect grace after its lease.
    h.run(LEASE_AND_MARGIN);
    expect(h.execution(gone!)).toMatchObject({ state: "unknown" });
    expect(restarted.dispatched).toEqual([]);
    h.run(GRACE);
    expect(h.execution(gone!)).toMatchObject({ state: "lost" });
    expect(h.execution(gone!)!.error).toMatch(
      /^agent w-1's previous process \(instance 11111111\.\.\.\) lost its stream and its lease expired before the run finished, and no word came from it within the disconnect grace of 15 s$/,
    );
    // Run again, on the new process, now that the old one has surely stopped.
    expect(restarted.dispatched.map((c) => c.executionId)).toEqual([gone!.replace(/\/1$/, "/2")]);
  });

  it("keeps in a restarted process's snapshot the shard of a run it reports, which an agent would otherwise stop, and still fences it until the old lease is over", () => {
    const { h, holder } = heldId();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const [kept, gone] = holder.dispatched;
    h.report("w-1", kept!.executionId, "running");
    h.report("w-1", gone!.executionId, "running");
    const before = h.core.listAssignments("job");
    const claimed = before.filter((a) => a.shard === kept!.shard).map((a) => ({ job: a.job, shard: a.shard, term: a.term, generation: a.generation }));
    h.crash("w-1");
    // The new process found the Kubernetes Job of one run: it claims that run's shard and reports it running.
    const restarted = h.connect("w-1", { instanceId: SECOND, held: claimed, executions: [{ executionId: kept!.executionId, state: "running" }] });

    // An agent stops the runs of a shard its snapshot leaves out (a Kubernetes Job deleted, run again
    // as attempt 2): the shard of the run it reported is in it, at the pair the run was dispatched under.
    expect([...restarted.held.values()]).toEqual(claimed);
    expect(restarted.revoked.size).toBe(0);
    expect(restarted.cancelled).toEqual([]);
    // Fenced all the same while the old process may be alive: nothing new on it, nothing moved.
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    expect(restarted.dispatched).toEqual([]);
    expect(h.core.listAssignments("job")).toEqual(before);

    h.report("w-1", kept!.executionId, "succeeded");
    expect(h.execution(kept!.executionId)).toMatchObject({ state: "succeeded", attempt: 1 });
    h.run(LEASE_AND_MARGIN);
    expect(restarted.shardsOf("job")).toEqual([0, 1]);
    expect(h.core.listAssignments("job").every((a, i) => a.generation > before[i]!.generation)).toBe(true);
    expect(h.execution(gone!.executionId)).toMatchObject({ state: "unknown" });
  });

  it("moves a replaced process's shard of a deleted job only once that process's lease has expired, whatever the new one releases", () => {
    const { h } = heldId();
    const refs = h.core.listAssignments("job").map((a) => ({ job: a.job, shard: a.shard, term: a.term, generation: a.generation }));
    h.crash("w-1");
    const restarted = h.connect("w-1", { instanceId: SECOND });
    h.core.deleteJob("job", h.now);
    h.flush();
    // The new process never held them: a release of them, even with the right pair, changes nothing.
    h.core.release(restarted.session, refs, h.now);
    h.flush();
    expect(restarted.revoked.size).toBe(0);
    expect(h.events.filter((e) => e.type === "shard.release-ignored")).toHaveLength(1);
    // Applied again, the job finds its shards still held, being given back, by the old process.
    h.apply(testSpec("job", { schedule: undefined, shards: 2 }));
    h.connect("w-2", { instanceId: FIRST.replace(/1/g, "3") });
    expect(h.core.listAssignments("job").map((a) => [a.agent, a.revoking])).toEqual([
      ["w-1", true],
      ["w-1", true],
    ]);
    h.run(LEASE_AND_MARGIN);
    const placed = h.core.listAssignments("job");
    expect(placed.map((a) => a.revoking)).toEqual([false, false]);
    expect(placed.every((a) => a.generation > refs[0]!.generation)).toBe(true);
  });

  it("says why a shard waits while a replaced process's lease runs", () => {
    const { h } = heldId();
    h.crash("w-1");
    h.connect("w-1", { instanceId: SECOND });
    const { executionIds } = h.core.triggerJob("job", [1], undefined, h.now);
    h.flush();
    expect(h.core.waitingReason(executionIds[0]!)).toMatch(/^shard 1: fenced until the lease of w-1's previous process, which lost its stream, expires at .+Z$/);
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
