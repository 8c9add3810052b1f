import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionUpdateSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { AgentEffect } from "./events.js";
import { BEAT, Harness, hello, kinds, run, sent, shard, TTL } from "./testing/agent-harness.js";

/**
 * The agent's side of the protocol's edges (docs/protocol.md, issue 18 item 3), each as the
 * TypeScript agent's core takes it. The controller's side is in
 * controller/core/protocol-edges.test.ts.
 */

/** Moves the clock to `at` in heartbeat steps, acking every heartbeat at once: the lease holds. */
function acked(h: Harness, at: number): AgentEffect[] {
  const effects: AgentEffect[] = [];
  while (h.now < at) {
    const made = h.at(Math.min(at, h.now + BEAT));
    effects.push(...made);
    for (const message of sent(made)) {
      if (message.kind === "heartbeat") effects.push(...h.step({ kind: "heartbeat-ack", term: 1n, seq: message.seq, leaseTtlMs: 0 }));
    }
  }
  return effects;
}

function reports(effects: AgentEffect[]): [string, ExecutionState, string][] {
  return effects.flatMap((e) => (e.kind === "report" ? [[e.update.executionId, e.update.state, e.update.error] as [string, ExecutionState, string]] : []));
}

function running(executionId: string): Parameters<Harness["step"]>[0] {
  return { kind: "run-report", update: create(ExecutionUpdateSchema, { executionId, state: ExecutionState.RUNNING, startedAtUnixMs: 1n }) };
}

describe("a run dispatched ahead of its fire instant when the agent drains", () => {
  it("starts at its instant after the Goodbye, and its shard is released and the stream half-closed once it reports", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("ahead", shard(0)));
    const drain = h.step({ kind: "drain", reason: "SIGTERM" });
    // It keeps its shard, like a running one: no Release, no stop, no half-close yet. The
    // heartbeat right after the Goodbye is the one whose ack the half-close waits for.
    expect(sent(drain)).toEqual([
      { kind: "goodbye", reason: "SIGTERM" },
      { kind: "heartbeat", seq: 1n },
    ]);
    h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 });
    expect(kinds(drain)).not.toContain("stop-run");
    expect(kinds(drain)).not.toContain("half-close");
    h.now = 200;
    expect(kinds(h.step({ kind: "start-due", executionId: "ahead" }))).toEqual(["start-run"]);
    h.step(running("ahead"));
    expect(sent(h.step({ kind: "flush" })).map((m) => m.kind)).toEqual(["execution-updates"]);
    expect(kinds(h.report("ahead", ExecutionState.SUCCEEDED))).toEqual(["flush-soon", "send execution-updates", "send release", "assignments-changed", "half-close"]);
  });

  it("is stopped LOST, never started, when the drain grace ends before its instant: reported after the Goodbye, before its shard's Release and the half-close", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("ahead", shard(0)));
    h.step({ kind: "drain", reason: "SIGTERM" });
    const grace = acked(h, 10_000);
    expect(grace.filter((e) => e.kind === "stop-run")).toEqual([
      { kind: "stop-run", executionId: "ahead", state: ExecutionState.LOST, reason: "the agent is shutting down; the drain grace of 10000 ms passed" },
    ]);
    expect(kinds(grace)).not.toContain("start-run");
    expect(kinds(h.report("ahead", ExecutionState.LOST))).toEqual(["flush-soon", "send execution-updates", "send release", "assignments-changed", "half-close"]);
    // Its instant comes too late: nothing starts.
    expect(kinds(h.step({ kind: "start-due", executionId: "ahead" }))).toEqual([]);
  });

  it("runs a dispatch that crossed its Goodbye, keeping its shard until it reports, and refuses one that comes after the controller read the Goodbye", () => {
    const h = new Harness();
    h.connect(shard(0), shard(1));
    const goodbye = h.step({ kind: "drain", reason: "SIGTERM" });
    expect(sent(goodbye)).toEqual([
      { kind: "goodbye", reason: "SIGTERM" },
      { kind: "heartbeat", seq: 1n },
    ]);
    // Sent before the controller read the Goodbye, for a shard the agent holds at that pair: it
    // runs at its instant, as it would have had it come before the Goodbye.
    const crossed = h.dispatch(run("crossed", shard(0)));
    expect(kinds(crossed)).toEqual(["hold-run"]);
    // The controller has read the Goodbye: the idle shard goes back, the other waits for its run.
    expect(sent(h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 }))).toEqual([{ kind: "release", assignments: [shard(1)] }]);
    const late = h.dispatch(run("late", shard(0)));
    expect(reports(late)).toEqual([["late", ExecutionState.LOST, "the agent is shutting down"]]);
    h.now = 200;
    expect(kinds(h.step({ kind: "start-due", executionId: "crossed" }))).toEqual(["start-run"]);
    const done = h.report("crossed", ExecutionState.SUCCEEDED);
    expect(sent(done).map((m) => m.kind)).toEqual(["execution-updates", "release"]);
    expect(kinds(done)).toContain("half-close");
  });
});

describe("the end of a drain", () => {
  it("with no shard and nothing running, says Goodbye and half-closes as soon as the controller has read it", () => {
    const h = new Harness();
    h.connect();
    expect(kinds(h.step({ kind: "drain", reason: "SIGTERM" }))).toEqual(["assignments-changed", "send goodbye", "send heartbeat"]);
    expect(kinds(h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 }))).toEqual(["half-close"]);
  });

  it("hands back a shard added after its Goodbye (an add that crossed it) once the controller has read the Goodbye, and answers a revoke of one it released with a Release", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("going", shard(0), 0));
    h.step({ kind: "start-due", executionId: "going" });
    h.step({ kind: "drain", reason: "SIGTERM" });
    // A dispatch for it may follow the add: it is held until the controller has read the Goodbye.
    expect(sent(h.step({ kind: "assignments", term: 1n, snapshot: false, add: [shard(1)], revoke: [] }))).toEqual([]);
    expect(h.core.shards()).toEqual([
      { ...shard(0), revoking: true },
      { ...shard(1), revoking: true },
    ]);
    // The controller's answer to the Goodbye revokes both; then it acks the heartbeat sent after
    // the Goodbye: shard 0 waits for its run, shard 1 goes back.
    expect(sent(h.step({ kind: "assignments", term: 1n, snapshot: false, add: [], revoke: [shard(0), shard(1)] }))).toEqual([]);
    expect(sent(h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 }))).toEqual([{ kind: "release", assignments: [shard(1)] }]);
    expect(h.core.shards()).toEqual([{ ...shard(0), revoking: true }]);
    // A revoke of a shard it no longer holds is answered at once.
    expect(sent(h.step({ kind: "assignments", term: 1n, snapshot: false, add: [], revoke: [shard(1)] }))).toEqual([{ kind: "release", assignments: [shard(1)] }]);
  });

  // The stream is ordered and the controller acks a heartbeat only after it has handled what came
  // before it: the ack of a heartbeat sent after the Goodbye comes after the controller's answer
  // to the Goodbye and after anything it sent before reading it.
  it("waits for the ack of a heartbeat sent after its Goodbye before it half-closes", () => {
    const h = new Harness();
    h.connect(shard(0));
    const drain = h.step({ kind: "drain", reason: "SIGTERM" });
    expect(sent(drain)).toEqual([
      { kind: "goodbye", reason: "SIGTERM" },
      { kind: "heartbeat", seq: 1n },
    ]);
    expect(kinds(drain)).not.toContain("half-close");
    // An add the controller sent before it read the Goodbye still finds a stream that takes a Release.
    expect(sent(h.step({ kind: "assignments", term: 1n, snapshot: false, add: [shard(1)], revoke: [] }))).toEqual([]);
    const read = h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 });
    expect(sent(read)).toEqual([{ kind: "release", assignments: [shard(0), shard(1)] }]);
    expect(kinds(read)).toContain("half-close");
  });
});

describe("a snapshot against what the agent holds", () => {
  it("takes the snapshot's pair for a held shard, older or newer, and lets the shard's runs go on", () => {
    const h = new Harness();
    h.connect(shard(0, 5n));
    h.dispatch(run("going", shard(0, 5n), 0));
    h.step({ kind: "start-due", executionId: "going" });
    const older = h.step({ kind: "assignments", term: 1n, snapshot: true, add: [shard(0, 4n)], revoke: [] });
    expect(kinds(older)).not.toContain("stop-run");
    expect(h.core.shards()).toEqual([{ ...shard(0, 4n), revoking: false }]);
    // Dispatches name the controller's pair: the snapshot's.
    expect(kinds(h.dispatch(run("next", shard(0, 4n))))).toEqual(["hold-run"]);
    h.step({ kind: "assignments", term: 1n, snapshot: true, add: [shard(0, 7n)], revoke: [] });
    expect(h.core.shards()).toEqual([{ ...shard(0, 7n), revoking: false }]);
    expect(h.core.runIds()).toEqual(["going", "next"]);
  });

  it("gives back a shard being revoked when a snapshot lists it and does not revoke it again: it is not released when its run ends", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("going", shard(0), 0));
    h.step({ kind: "start-due", executionId: "going" });
    h.step({ kind: "assignments", term: 1n, snapshot: false, add: [], revoke: [shard(0)] });
    expect(h.core.shards()).toEqual([{ ...shard(0), revoking: true }]);
    h.step({ kind: "assignments", term: 1n, snapshot: true, add: [shard(0)], revoke: [] });
    expect(h.core.shards()).toEqual([{ ...shard(0), revoking: false }]);
    expect(kinds(h.report("going", ExecutionState.SUCCEEDED))).toEqual(["flush-soon"]);
    expect(h.core.shards()).toEqual([{ ...shard(0), revoking: false }]);
    expect(kinds(h.dispatch(run("next", shard(0))))).toEqual(["hold-run"]);
  });

  it("keeps a shard revoking when the snapshot that lists it revokes it too, as the controller sends it while it still takes the shard back", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("going", shard(0), 0));
    h.step({ kind: "start-due", executionId: "going" });
    h.step({ kind: "assignments", term: 1n, snapshot: false, add: [], revoke: [shard(0)] });
    h.step({ kind: "assignments", term: 1n, snapshot: true, add: [shard(0)], revoke: [shard(0)] });
    expect(h.core.shards()).toEqual([{ ...shard(0), revoking: true }]);
    expect(sent(h.report("going", ExecutionState.SUCCEEDED)).map((m) => m.kind)).toEqual(["execution-updates", "release"]);
  });
});

describe("a revoke while a run waits for its fire instant", () => {
  it("keeps the shard for the waiting run, starts the run at its instant, and releases the shard after its report", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("ahead", shard(0)));
    const revoke = h.step({ kind: "assignments", term: 1n, snapshot: false, add: [], revoke: [shard(0)] });
    expect(sent(revoke)).toEqual([]);
    expect(kinds(revoke)).not.toContain("stop-run");
    expect(kinds(h.step({ kind: "start-due", executionId: "ahead" }))).toEqual(["start-run"]);
    expect(sent(h.report("ahead", ExecutionState.SUCCEEDED)).map((m) => m.kind)).toEqual(["execution-updates", "release"]);
    expect(h.core.shards()).toEqual([]);
  });
});

describe("the lease at its edges", () => {
  it("starts nothing on a Welcome that comes after the lease it would start has lapsed: it fences at once and closes the stream", () => {
    const h = new Harness();
    h.step({ kind: "stream-opened" });
    // The Hello went out at 0; the Welcome comes after one lease.
    h.now = TTL + 100;
    const late = h.step({ kind: "welcome", term: 1n, sessionId: "s", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 250 });
    expect(kinds(late)).toEqual(expect.arrayContaining(["fenced", "close-stream"]));
    expect(late.find((e) => e.kind === "close-stream")).toMatchObject({ code: "unavailable", newConnection: true });
    expect(h.core.leaseValid(h.now)).toBe(false);
    // Nothing read on the stream it closed counts: no shard taken, no run held or refused.
    expect(kinds(h.step({ kind: "assignments", term: 1n, snapshot: true, add: [shard(0)], revoke: [] }))).toEqual([]);
    expect(kinds(h.dispatch(run("e", shard(0), 0)))).toEqual([]);
    expect(h.core.shards()).toEqual([]);
    expect(h.core.runIds()).toEqual([]);
  });

  it("stays fenced through a Welcome that comes after the lease it would start has lapsed", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.at(TTL);
    expect(h.core.fenced).toBe(true);
    h.step({ kind: "stream-closed" });
    h.now = TTL + 100;
    h.step({ kind: "stream-opened" });
    h.now = TTL + 100 + TTL + 1;
    const late = h.step({ kind: "welcome", term: 1n, sessionId: "s2", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 250 });
    expect(kinds(late)).not.toContain("unfenced");
    expect(h.core.fenced).toBe(true);
    // The controller counts that lease valid and would dispatch on the stream: it is closed.
    expect(late.find((e) => e.kind === "close-stream")).toMatchObject({ code: "unavailable", newConnection: true });
  });

  it("renews the lease with an ack that comes after the lease's deadline but before the fence was stepped, when its heartbeat is recent enough", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("going", shard(0), 0));
    h.step({ kind: "start-due", executionId: "going" });
    // Heartbeats 1-3 go out at 500, 1000 and 1500; their acks are held up.
    expect(sent(h.at(1_500)).map((m) => (m.kind === "heartbeat" ? m.seq : m.kind))).toEqual([1n, 2n, 3n]);
    // The process freezes and wakes past the lease (2000), reading heartbeat 3's ack before its timer runs.
    h.now = TTL + 100;
    const ack = h.step({ kind: "heartbeat-ack", term: 1n, seq: 3n, leaseTtlMs: 0 });
    expect(kinds(ack)).not.toContain("fenced");
    expect(h.core.leaseValid(h.now)).toBe(true);
    expect(kinds(h.step({ kind: "tick" }))).not.toContain("fenced");
    expect(h.core.runIds()).toEqual(["going"]);
  });

  it("renews nothing with an ack too old to: the agent fences at its next step", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.at(1_500);
    h.now = 2_600;
    // Heartbeat 1 left at 500: its lease ran to 2500.
    h.step({ kind: "heartbeat-ack", term: 1n, seq: 1n, leaseTtlMs: 0 });
    expect(h.core.leaseValid(h.now)).toBe(false);
    expect(kinds(h.step({ kind: "tick" }))).toEqual(expect.arrayContaining(["fenced", "close-stream"]));
  });

  it("ignores an ack on the stream its fence closed: only a Welcome on a new stream ends the fence", () => {
    const h = new Harness();
    h.connect(shard(0));
    expect(kinds(h.at(TTL))).toContain("fenced");
    expect(kinds(h.step({ kind: "heartbeat-ack", term: 1n, seq: 3n, leaseTtlMs: 0 }))).toEqual([]);
    expect(h.core.fenced).toBe(true);
    expect(h.core.leaseValid(h.now)).toBe(false);
    h.step({ kind: "stream-closed" });
    expect(hello(h.step({ kind: "stream-opened" })).held).toEqual([]);
    expect(kinds(h.step({ kind: "welcome", term: 1n, sessionId: "s2", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 250 }))).toContain("unfenced");
  });
});

describe("ending a stream from the agent's side", () => {
  it("decides its next connection from its own reason for closing, since the stream's end carries none: after a fence, another replica on a new connection", () => {
    const h = new Harness();
    h.step({ kind: "start" });
    h.step({ kind: "stream-opened" });
    h.step({ kind: "welcome", term: 1n, sessionId: "s", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 250 });
    const fence = h.at(TTL);
    expect(fence.find((e) => e.kind === "close-stream")).toMatchObject({ unresponsive: true, newConnection: true });
    h.step({ kind: "stream-closed" });
    const next = h.at(h.core.nextDeadline()!);
    expect(next).toEqual([{ kind: "open-stream", address: "b:1" }]);
  });
});

describe("runs the agent cannot run, and cancels", () => {
  it("reports a run it has no executor for FAILED at once, with no RUNNING before it, and holds nothing of it", () => {
    const h = new Harness();
    h.connect(shard(0));
    const effects = h.dispatch({ ...run("x", shard(0)), unrunnable: "this agent makes no HTTP calls; start it with --allow-http (allowHttp)" });
    expect(kinds(effects)).toEqual(["report", "flush-soon"]);
    expect(reports(effects)).toEqual([["x", ExecutionState.FAILED, "this agent makes no HTTP calls; start it with --allow-http (allowHttp)"]]);
    expect(h.core.runIds()).toEqual([]);
  });

  it("stops a cancelled run with the error \"cancelled\" when the Cancel gives no reason, and with the reason when it gives one", () => {
    const h = new Harness();
    h.connect(shard(0));
    h.dispatch(run("a", shard(0)), run("b", shard(0)));
    expect(h.step({ kind: "cancel", term: 1n, executionIds: ["a"], reason: "" })).toEqual([
      { kind: "stop-run", executionId: "a", state: ExecutionState.CANCELLED, reason: "cancelled" },
    ]);
    expect(h.step({ kind: "cancel", term: 1n, executionIds: ["b"], reason: "cancelled by an operator" })).toEqual([
      { kind: "stop-run", executionId: "b", state: ExecutionState.CANCELLED, reason: "cancelled by an operator" },
    ]);
  });
});
