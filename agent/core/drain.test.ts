import { describe, expect, it } from "vitest";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { Harness, kinds, run, sent, shard } from "./testing/agent-harness.js";

describe("Drain", () => {
  it("drains: says Goodbye, releases each shard as its runs end, then half-closes, and stops when the stream ends", () => {
    const h = new Harness();
    h.connect(shard(0), shard(1));
    h.dispatch(run("e", shard(1), 0));
    h.step({ kind: "start-due", executionId: "e" });
    const goodbye = sent(h.step({ kind: "drain", reason: "SIGTERM" }));
    // A heartbeat right after the Goodbye: its ack says the controller has read the Goodbye.
    expect(goodbye).toEqual([
      { kind: "goodbye", reason: "SIGTERM" },
      { kind: "heartbeat", seq: 1n },
      { kind: "release", assignments: [shard(0)] },
    ]);
    expect(kinds(h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 }))).toEqual([]);
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

  it("drains at once when it has no stream, nothing runs and no report waits", () => {
    const h = new Harness();
    h.step({ kind: "stream-opened" });
    h.step({ kind: "stream-closed" });
    expect(kinds(h.step({ kind: "drain", reason: "SIGTERM" }))).toEqual(["assignments-changed", "drained"]);
  });
});
