import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, ownerOf, testSpec } from "./testing/core-harness.js";

/**
 * The controller's side of the protocol's edges (docs/protocol.md, issue 18 item 3): what it
 * does with an agent that is leaving, with a stream that ends however it ends, with a run that
 * fails before it started, and what every Cancel says. The agent's side is in
 * agent/core/protocol-edges.test.ts.
 */

const LEASE = DEFAULT_CORE_CONFIG.leaseTtlMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

/** The id of the attempt after `id` of the same fire and shard. */
function nextAttempt(id: string): string {
  const [job, fire, shard, attempt] = id.split("/");
  return `${job}/${fire}/${shard}/${Number(attempt) + 1}`;
}

describe("an agent that is leaving", () => {
  it("sends the re-run of a run it lost at its drain grace to the shard's next owner, never back to it", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    const b = h.connect("b");
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.report("a", id!, "running");
    // The agent releases what it was asked to give back only when the test says so.
    h.autoRelease = false;
    h.core.goodbye(a.session, "SIGTERM", h.now);
    h.flush();

    // Its drain grace ends: the run is reported LOST, then the shard released.
    h.report("a", id!, "lost");
    const rerun = nextAttempt(id!);
    expect(h.execution(rerun)).toMatchObject({ state: "pending", cause: "failover" });
    expect(a.dispatchedIds()).toEqual([id]);
    h.releaseRevoked("a");
    expect(ownerOf(h, "job", 0)).toBe("b");
    expect(b.dispatchedIds()).toEqual([rerun]);
    expect(a.dispatchedIds()).toEqual([id]);
  });

  it("keeps the retry of a run that failed on it for the shard's next owner, also where a restarted controller gave it back its shard", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1, retries: { limit: 1, backoffSeconds: 1 } }));
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.report("a", id!, "running");
    const held = [...a.held.values()];

    // The controller restarts while the agent drains: within the startup grace it gives the
    // claimed shard back and revokes nothing, so only the Goodbye keeps work from the agent.
    h.start();
    const again = h.connect("a", { held, executions: [{ executionId: id!, state: "running" }] });
    h.core.goodbye(again.session, "SIGTERM", h.now);
    h.flush();
    expect(again.shardsOf("job")).toEqual([0]);
    expect(again.revoked.size).toBe(0);

    h.report("a", id!, "failed");
    const retry = nextAttempt(id!);
    h.run(1_500);
    expect(h.execution(retry)).toMatchObject({ state: "pending", cause: "retry" });
    expect(again.dispatched).toEqual([]);
    expect(h.core.waitingReason(retry)).toBe("shard 0: its owner a is leaving (it said goodbye): the shard moves to another agent");
  });

  it("with no shard and no run, is forgotten as soon as its stream ends after its Goodbye", () => {
    const h = new CoreHarness();
    h.connect("b");
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    const a = h.connect("a");
    expect(a.held.size).toBe(0);
    h.core.goodbye(a.session, "SIGTERM", h.now);
    h.core.streamClosed(a.session, h.now);
    h.flush();
    expect(h.events.filter((e) => e.agent === "a").map((e) => e.type)).toEqual(["agent.joined", "agent.draining", "agent.left"]);
    expect(h.core.listAgents().map((x) => x.id)).toEqual(["b"]);
  });

  it("keeps a shard fenced until its lease expires when its stream ends before it released the shard (an add that crossed its Goodbye)", () => {
    const h = new CoreHarness();
    const b = h.connect("b");
    const a = h.connect("a");
    h.autoRelease = false;
    // The controller gives `a` a shard; `a` says Goodbye before reading that add, and half-closes
    // at once, as an agent that waits for nothing after its Goodbye does.
    h.apply(testSpec("job", { schedule: undefined, shards: 2 }));
    const given = a.shardsOf("job");
    expect(given).toHaveLength(1);
    h.core.goodbye(a.session, "SIGTERM", h.now);
    h.core.streamClosed(a.session, h.now);
    h.flush();
    expect(h.events.some((e) => e.type === "agent.lost" && e.agent === "a")).toBe(true);
    h.run(LEASE - 100, ["a"]);
    expect(ownerOf(h, "job", given[0]!)).toBe("a");
    h.run(200, ["a"]);
    expect(ownerOf(h, "job", given[0]!)).toBe("b");
    expect(b.shardsOf("job")).toEqual([0, 1]);
  });
});

describe("a stream's end", () => {
  it("is the same to the controller however the agent ended it: a cancel carries no status, and one without everything released is a lost stream", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    const b = h.connect("b");
    // An agent that gives up on its stream (a fence, a stall, a deposed leader's Welcome) can
    // only cancel the call; the controller's core learns that the stream ended, nothing more.
    h.core.streamClosed(a.session, h.now);
    h.flush();
    expect(h.events.filter((e) => e.agent === "a" && e.type.startsWith("agent.")).map((e) => e.type)).toEqual(["agent.joined", "agent.lost"]);
    h.run(LEASE - 100, ["a"]);
    expect(ownerOf(h, "job", 0)).toBe("a");
    h.run(200, ["a"]);
    expect(b.shardsOf("job")).toEqual([0]);
  });
});

describe("reports and cancels", () => {
  it("takes a FAILED with no RUNNING before it (a run the agent had no handler for): failed, with no start time, and retried as spec.retries says", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1, retries: { limit: 1, backoffSeconds: 1 } }));
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.core.executionUpdates(a.session, [{ executionId: id!, state: "failed", finishedAt: h.now, error: 'no handler named "work" on this agent' }], h.now);
    h.flush();
    expect(h.execution(id!)).toMatchObject({ state: "failed", error: 'no handler named "work" on this agent' });
    expect(h.execution(id!)?.startedAt).toBeUndefined();
    h.run(1_000);
    expect(a.dispatchedIds()).toEqual([id, nextAttempt(id!)]);
  });

  it("names a reason in every Cancel it sends: an operator's cancel without one says so", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    const sent: { reason: string }[] = [];
    const receive = a.receive.bind(a);
    a.receive = (command) => {
      if (command.kind === "cancel") sent.push({ reason: command.reason });
      receive(command);
    };
    h.core.cancelExecution(id!, "", h.now);
    h.flush();
    expect(sent).toEqual([{ reason: "cancelled by an operator" }]);
    expect(a.cancelled).toEqual([id]);
  });
});
