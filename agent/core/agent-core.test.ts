import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionUpdateSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { BEAT, Harness, hello, kinds, run, sent, shard, TTL } from "./testing/agent-harness.js";

describe("AgentCore", () => {
  it("holds a lease from the Hello's send time once welcomed, and renews it from each heartbeat's send time", () => {
    const h = new Harness();
    h.now = 100;
    h.connect(shard(0));
    h.now = 300;
    expect(h.core.leaseValid(100 + TTL - 1)).toBe(true);
    expect(h.core.leaseValid(100 + TTL)).toBe(false);
    const beats = sent(h.at(100 + BEAT));
    expect(beats).toEqual([{ kind: "heartbeat", seq: 1n }]);
    h.now = 900;
    h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 });
    expect(h.core.leaseValid(100 + BEAT + TTL - 1)).toBe(true);
    expect(h.core.leaseValid(100 + BEAT + TTL)).toBe(false);
  });

  it("honours an ack's shorter lease, and ignores an ack of a heartbeat it never sent", () => {
    const h = new Harness();
    h.connect();
    h.at(BEAT);
    h.step({ kind: "heartbeat-ack", term: 1n, seq: 7n, leaseTtlMs: 0 });
    expect(h.core.leaseValid(TTL)).toBe(false);
    h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 800 });
    expect(h.core.leaseValid(BEAT + 799)).toBe(true);
    expect(h.core.leaseValid(TTL - 1)).toBe(true);
  });

  it("fences when its lease lapses: stops every run LOST, forgets its shards, and closes the stream for a new connection", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("e1", shard(0), 0));
    h.step({ kind: "start-due", executionId: "e1" });
    // No ack ever comes: the heartbeats go unanswered and the Hello's lease runs out.
    const effects = h.at(TTL);
    expect(kinds(effects)).toEqual(["send heartbeat", "send heartbeat", "send heartbeat", "stop-run", "assignments-changed", "fenced", "close-stream"]);
    expect(effects.find((e) => e.kind === "stop-run")).toMatchObject({ executionId: "e1", state: ExecutionState.LOST });
    expect(effects.find((e) => e.kind === "close-stream")).toMatchObject({ code: "unavailable", unresponsive: true, newConnection: true });
    expect(h.core.fenced).toBe(true);
    expect(h.core.shards()).toEqual([]);
    h.step({ kind: "stream-closed" });
    h.report("e1", ExecutionState.LOST);
    // A fenced agent claims no shard, and lists the lost run's report.
    const next = hello(h.step({ kind: "stream-opened" }));
    expect(next.held).toEqual([]);
    expect(next.executions.map((u) => [u.executionId, u.state])).toEqual([["e1", ExecutionState.LOST]]);
    expect(kinds(h.step({ kind: "welcome", term: 1n, sessionId: "s2", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 0 }))).toEqual(["unfenced", "welcomed"]);
    expect(h.core.fenced).toBe(false);
  });

  it("fences at a run's start instant when the lease lapsed before its deadline was stepped, and starts nothing", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("late", shard(0)));
    h.now = TTL + 5;
    const effects = h.step({ kind: "start-due", executionId: "late" });
    expect(kinds(effects)).not.toContain("start-run");
    expect(kinds(effects)).toContain("fenced");
    expect(effects.find((e) => e.kind === "stop-run")).toMatchObject({ executionId: "late", state: ExecutionState.LOST });
  });

  it("lists a run dispatched ahead and not started yet as PENDING in the next Hello, and a started one as RUNNING", () => {
    const h = new Harness();
    h.connect(shard(0), shard(1));
    expect(kinds(h.dispatch(run("ahead", shard(0)), run("now", shard(1), 0)))).toEqual(["hold-run", "hold-run"]);
    h.step({ kind: "start-due", executionId: "now" });
    h.step({ kind: "run-report", update: create(ExecutionUpdateSchema, { executionId: "now", state: ExecutionState.RUNNING, startedAtUnixMs: 7n }) });
    h.step({ kind: "stream-closed" });
    const next = hello(h.step({ kind: "stream-opened" }));
    expect(next.held.map((a) => a.shard)).toEqual([0, 1]);
    expect(next.executions.map((u) => [u.executionId, u.state])).toEqual([
      ["ahead", ExecutionState.PENDING],
      ["now", ExecutionState.RUNNING],
    ]);
  });

  it("refuses a dispatch for a shard it does not hold, of another generation, being revoked, or once its Goodbye was read, reporting it LOST", () => {
    const h = new Harness();
    h.connect(shard(0), shard(1));
    // A run still going keeps the revoked shard held, and not to be run on.
    h.dispatch(run("keeps", shard(1)));
    h.step({ kind: "assignments", term: 1n, snapshot: false, add: [], revoke: [shard(1)] });
    const effects = h.dispatch(run("a", shard(5)), run("b", shard(0, 2n)), run("c", shard(1)), run("d", undefined));
    const reports = effects.flatMap((e) => (e.kind === "report" ? [[e.update.executionId, e.update.state, e.update.error]] : []));
    expect(reports).toEqual([
      ["a", ExecutionState.LOST, "the agent does not hold job/5 at (1, 1)"],
      ["b", ExecutionState.LOST, "the agent holds job/0 at (1, 1), not job/0 at (1, 2)"],
      ["c", ExecutionState.LOST, "the agent is releasing job/1 at (1, 1)"],
      ["d", ExecutionState.LOST, "the dispatch names no assignment"],
    ]);
    // Once the controller has read its Goodbye (the ack of the heartbeat after it), a leaving
    // agent takes no new work.
    h.step({ kind: "drain", reason: "SIGTERM" });
    h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 });
    const refused = h.dispatch(run("e", shard(0)));
    expect(refused.find((e) => e.kind === "report")).toMatchObject({ update: { executionId: "e", error: "the agent is shutting down" } });
  });

  it("fails a run it has no executor for, and ignores a second dispatch of a run it holds", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("held", shard(0)));
    expect(kinds(h.dispatch(run("held", shard(0))))).toEqual([]);
    const effects = h.dispatch({ ...run("x", shard(0)), unrunnable: "no http" });
    expect(effects.find((e) => e.kind === "report")).toMatchObject({ update: { executionId: "x", state: ExecutionState.FAILED, error: "no http" } });
  });

  it("releases a revoked shard once its last run has reported, sending that report first", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("e1", shard(0), 0));
    h.step({ kind: "start-due", executionId: "e1" });
    expect(sent(h.step({ kind: "assignments", term: 1n, snapshot: false, add: [], revoke: [shard(0)] }))).toEqual([]);
    const effects = h.report("e1", ExecutionState.SUCCEEDED);
    expect(sent(effects).map((m) => m.kind)).toEqual(["execution-updates", "release"]);
    expect(h.core.shards()).toEqual([]);
    // A revoke of a shard it no longer holds is answered with a release at once.
    expect(sent(h.step({ kind: "assignments", term: 1n, snapshot: false, add: [], revoke: [shard(3)] })).map((m) => m.kind)).toEqual(["release"]);
  });

  it("stops the runs of a shard a snapshot leaves out, and sends no release for it", () => {
    const h = new Harness();
    h.connect(shard(0), shard(1));
    h.dispatch(run("e0", shard(0)));
    const effects = h.step({ kind: "assignments", term: 1n, snapshot: true, add: [shard(1)], revoke: [] });
    expect(effects.find((e) => e.kind === "stop-run")).toMatchObject({ executionId: "e0", state: ExecutionState.LOST });
    expect(sent(h.report("e0", ExecutionState.LOST)).map((m) => m.kind)).toEqual([]);
  });

  it("confirms reports by the ack of the heartbeat sent after them, and lists unconfirmed ones in the next Hello", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("a", shard(0), 0), run("b", shard(0), 0));
    h.report("a", ExecutionState.SUCCEEDED);
    expect(sent(h.step({ kind: "flush" })).map((m) => m.kind)).toEqual(["execution-updates"]);
    h.at(BEAT);
    h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 });
    h.report("b", ExecutionState.FAILED);
    h.step({ kind: "flush" });
    h.step({ kind: "stream-closed" });
    const next = hello(h.step({ kind: "stream-opened" }));
    expect(next.executions.map((u) => u.executionId)).toEqual(["b"]);
  });

  it("gives up on a stream that brings no Welcome in time, and on one that brings no ack for a whole lease", () => {
    const h = new Harness();
    h.step({ kind: "stream-opened" });
    expect(h.at(5_000).find((e) => e.kind === "close-stream")).toMatchObject({ reason: "no Welcome within 5000 ms", unresponsive: true });
    h.step({ kind: "stream-closed" });
    h.step({ kind: "stream-opened" });
    h.step({ kind: "welcome", term: 1n, sessionId: "s", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 0 });
    // Acks come for the Hello's lease only; heartbeats are acked with a longer lease than the stall check allows.
    const effects = h.at(h.now + TTL + BEAT);
    expect(effects.some((e) => e.kind === "close-stream")).toBe(true);
  });

  it("ignores messages of an older term, and closes a stream whose Welcome comes from one", () => {
    const h = new Harness();
    h.step({ kind: "stream-opened" });
    h.step({ kind: "welcome", term: 2n, sessionId: "s", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 0 });
    h.step({ kind: "assignments", term: 1n, snapshot: true, add: [shard(0)], revoke: [] });
    expect(h.core.shards()).toEqual([]);
    h.step({ kind: "stream-closed" });
    h.step({ kind: "stream-opened" });
    const effects = h.step({ kind: "welcome", term: 1n, sessionId: "s", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 0 });
    expect(effects.find((e) => e.kind === "close-stream")).toMatchObject({ code: "failed-precondition" });
    expect(h.core.welcomed).toBe(false);
  });

  it("cancels a held run, and ignores a cancel of one it does not hold", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("e", shard(0)));
    const effects = h.step({ kind: "cancel", term: 1n, executionIds: ["e", "other"], reason: "" });
    expect(effects).toEqual([{ kind: "stop-run", executionId: "e", state: ExecutionState.CANCELLED, reason: "cancelled" }]);
  });

  it("reconnects after a backoff that grows until a Welcome resets it, to the next replica after a stream that got no Welcome", () => {
    const h = new Harness();
    expect(h.step({ kind: "start" })).toEqual([{ kind: "open-stream", address: "a:1" }]);
    h.step({ kind: "stream-opened" });
    h.step({ kind: "stream-closed" });
    // Full jitter: half of the first ceiling (100 ms), then of 200 ms; another replica each time.
    expect(h.core.nextDeadline()).toBe(50);
    expect(h.at(50)).toEqual([{ kind: "open-stream", address: "b:1" }]);
    h.step({ kind: "stream-opened" });
    h.step({ kind: "stream-closed" });
    expect(h.core.nextDeadline()).toBe(150);
    expect(h.at(150)).toEqual([{ kind: "open-stream", address: "a:1" }]);
    h.step({ kind: "stream-opened" });
    h.step({ kind: "welcome", term: 1n, sessionId: "s", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 0 });
    // A welcomed stream the controller ended keeps the address: that controller may be restarting.
    h.now = 200;
    h.step({ kind: "stream-closed" });
    expect(h.core.address).toBe("a:1");
    expect(h.core.nextDeadline()).toBe(250);
  });

  it("follows a Redirect to the leader at once, without waiting out a grown backoff", () => {
    const h = new Harness();
    h.step({ kind: "start" });
    h.step({ kind: "stream-opened" });
    h.step({ kind: "stream-closed" });
    h.at(50);
    h.step({ kind: "stream-opened" });
    expect(h.step({ kind: "redirect", term: 1n, leaderAddress: "leader:1" })).toEqual([{ kind: "redirected", leaderAddress: "leader:1" }]);
    expect(h.core.redirecting).toBe(true);
    h.step({ kind: "stream-closed" });
    expect(h.core.nextDeadline()).toBe(100);
    expect(h.at(100)).toEqual([{ kind: "open-stream", address: "leader:1" }]);
  });
});
