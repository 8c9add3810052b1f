import { describe, expect, it } from "vitest";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { BEAT, Harness, kinds, run, sent, shard, TTL } from "./testing/agent-harness.js";

describe("Drain", () => {
  it("drains: says Goodbye, releases each shard once the controller has read it and the shard's runs have ended, then half-closes, and stops when the stream ends", () => {
    const h = new Harness();
    h.connect(shard(0), shard(1));
    h.dispatch(run("e", shard(1), 0));
    h.step({ kind: "start-due", executionId: "e" });
    const goodbye = sent(h.step({ kind: "drain", reason: "SIGTERM" }));
    // A heartbeat right after the Goodbye: its ack says the controller has read the Goodbye.
    // Until then nothing is released, not even the idle shard 0.
    expect(goodbye).toEqual([
      { kind: "goodbye", reason: "SIGTERM" },
      { kind: "heartbeat", seq: 1n },
    ]);
    const read = h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 });
    expect(sent(read)).toEqual([{ kind: "release", assignments: [shard(0)] }]);
    expect(kinds(read)).not.toContain("half-close");
    expect(kinds(h.report("e", ExecutionState.SUCCEEDED))).toEqual(["flush-soon", "send execution-updates", "send release", "assignments-changed", "half-close"]);
    expect(kinds(h.step({ kind: "stream-closed" }))).toEqual(["drained"]);
    expect(h.core.stopped).toBe(true);
    expect(h.core.nextDeadline()).toBeUndefined();
  });

  it("drains: after the grace, stops what still runs LOST, and without a controller leaves without a goodbye", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("e", shard(0), 0));
    h.step({ kind: "start-due", executionId: "e" });
    h.step({ kind: "stream-closed" });
    h.step({ kind: "drain", reason: "SIGTERM" });
    const effects = h.at(10_000);
    expect(effects.find((e) => e.kind === "stop-run")).toMatchObject({ executionId: "e", state: ExecutionState.LOST });
    expect(kinds(effects)).toContain("drained");
  });

  it("with its Hello out and no Welcome yet, waits for the Welcome and says Goodbye (the controller may have granted it shards meanwhile)", () => {
    const h = new Harness();
    h.step({ kind: "stream-opened" });
    expect(kinds(h.step({ kind: "drain", reason: "SIGTERM" }))).toEqual(["assignments-changed"]);
    const welcome = h.step({ kind: "welcome", term: 1n, sessionId: "s", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 250 });
    expect(sent(welcome).map((m) => m.kind)).toEqual(["goodbye", "heartbeat"]);
    // Shards the controller granted before it read the Goodbye go back once it has read it.
    expect(sent(h.step({ kind: "assignments", term: 1n, snapshot: true, add: [shard(0)], revoke: [] }))).toEqual([]);
    const read = h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 });
    expect(sent(read)).toEqual([{ kind: "release", assignments: [shard(0)] }]);
    expect(kinds(read)).toContain("half-close");
  });

  it("with its Hello out, leaves once the stream ends without a Welcome", () => {
    const h = new Harness();
    h.step({ kind: "stream-opened" });
    h.step({ kind: "drain", reason: "SIGTERM" });
    expect(kinds(h.step({ kind: "stream-closed" }))).toEqual(["drained"]);
  });

  it("drains at once when it has no stream, nothing runs and no report waits", () => {
    const h = new Harness();
    h.step({ kind: "stream-opened" });
    h.step({ kind: "stream-closed" });
    expect(kinds(h.step({ kind: "drain", reason: "SIGTERM" }))).toEqual(["assignments-changed", "drained"]);
  });
});
