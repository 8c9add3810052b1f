import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionUpdateSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { AgentEffect } from "./events.js";
import { BEAT, Harness, hello, run, shard, TTL } from "./testing/agent-harness.js";

const GRACE = 10_000;

/** The runs a batch of effects stops, with the state asked for. */
function stops(effects: AgentEffect[]): [string, ExecutionState][] {
  return effects.flatMap((e) => (e.kind === "stop-run" ? [[e.executionId, e.state] as [string, ExecutionState]] : []));
}

/** An agent holding shards 0 and 1, running `graced` (with a grace) on 0 and `strict` (without) on 1, and `waiting` not started. */
function runningBoth(): Harness {
  const h = new Harness();
  h.connect(shard(0), shard(1));
  h.dispatch(run("graced", shard(0), 0, GRACE), run("strict", shard(1), 0, 0), run("waiting", shard(0), TTL * 10, GRACE));
  h.step({ kind: "start-due", executionId: "graced" });
  h.step({ kind: "start-due", executionId: "strict" });
  h.report("graced", ExecutionState.RUNNING);
  h.report("strict", ExecutionState.RUNNING);
  return h;
}

const welcome = { kind: "welcome", term: 1n, sessionId: "s2", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 0 } as const;

describe("the fence and the disconnect grace", () => {
  it("at a lapse stops what has no grace or has not started, and lets a started run with a grace go on", () => {
    const h = runningBoth();
    // No ack ever comes: the Hello's lease runs out at TTL.
    const effects = h.at(TTL);
    expect(h.core.fenced).toBe(true);
    expect(stops(effects)).toEqual([
      ["strict", ExecutionState.LOST],
      ["waiting", ExecutionState.LOST],
    ]);
    expect(h.core.runIds()).toContain("graced");
    // Nothing new starts while fenced.
    expect(h.core.shards()).toEqual([]);
  });

  it("keeps a run that went on when a controller welcomes it within the grace, and lists it in the Hello as running", () => {
    const h = runningBoth();
    h.at(TTL);
    h.step({ kind: "stream-closed" });
    h.report("strict", ExecutionState.LOST);
    h.report("waiting", ExecutionState.LOST);
    // The controller is back after 5 s: the agent reconnects and is welcomed.
    h.at(TTL + 5_000);
    const next = hello(h.step({ kind: "stream-opened" }));
    expect(next.executions.map((u) => [u.executionId, u.state])).toEqual([
      ["graced", ExecutionState.RUNNING],
      ["strict", ExecutionState.LOST],
      ["waiting", ExecutionState.LOST],
    ]);
    h.step(welcome);
    expect(h.core.fenced).toBe(false);
    // Past where the grace would have ended: nothing stops it.
    expect(stops(h.at(TTL + GRACE + 1_000))).toEqual([]);
    expect(h.core.runIds()).toEqual(["graced"]);
  });

  it("aborts a run that went on when its grace ends with no controller answering, counted from the lapse", () => {
    const h = runningBoth();
    h.at(TTL);
    h.step({ kind: "stream-closed" });
    expect(stops(h.at(TTL + GRACE - 1))).toEqual([]);
    const effects = h.at(TTL + GRACE);
    expect(stops(effects)).toEqual([["graced", ExecutionState.LOST]]);
    expect(effects.find((e) => e.kind === "stop-run")).toMatchObject({ reason: expect.stringMatching(/no controller answered within the disconnect grace of 10 s$/) });
  });

  it("aborts at once a run whose grace ended while the process was frozen", () => {
    const h = runningBoth();
    // Frozen from before the lapse until after the grace: the first tick sees both.
    h.now = TTL + GRACE + 500;
    const effects = h.step({ kind: "tick" });
    expect(stops(effects)).toEqual([
      ["strict", ExecutionState.LOST],
      ["waiting", ExecutionState.LOST],
      ["graced", ExecutionState.LOST],
    ]);
  });

  it("reports an outcome that settles after the lapse and past the grace as lost, and one within the grace as it is", () => {
    const h = runningBoth();
    h.at(TTL);
    // Within the grace: the controller holds the fire for it, so its outcome counts.
    h.now = TTL + 1_000;
    h.report("graced", ExecutionState.SUCCEEDED);
    const next = hello(h.step({ kind: "stream-opened" }));
    expect(next.executions.find((u) => u.executionId === "graced")?.state).toBe(ExecutionState.SUCCEEDED);

    // A frozen handler settles (succeeded) before the fence timer runs, past its grace: lost.
    const late = new Harness();
    late.connect(shard(0));
    late.dispatch(run("late", shard(0), 0, GRACE));
    late.step({ kind: "start-due", executionId: "late" });
    late.now = TTL + GRACE + 1;
    late.step({ kind: "run-report", update: create(ExecutionUpdateSchema, { executionId: "late", state: ExecutionState.SUCCEEDED, result: "done" }) });
    late.step({ kind: "stream-closed" });
    const reported = hello(late.step({ kind: "stream-opened" })).executions.find((u) => u.executionId === "late");
    expect(reported).toMatchObject({ state: ExecutionState.LOST, result: "", error: expect.stringMatching(/^finished \(SUCCEEDED\) after the agent's lease lapsed/) });
  });

  it("retries within half a lease while it has a lease or a run to keep, and backs off further once it has neither", () => {
    // random() is 0.5 in the harness, so each wait is half its ceiling; maxMs is 5 s.
    const h = runningBoth();
    for (let i = 0; i < 8; i++) {
      h.step({ kind: "stream-closed" });
      expect(h.core.nextDeadline()! - h.now).toBeLessThanOrEqual(TTL / 2);
      h.step({ kind: "stream-opened" });
    }
    // Nothing to keep: no lease, no run.
    const idle = new Harness();
    idle.step({ kind: "start" });
    let longest = 0;
    for (let i = 0; i < 8; i++) {
      idle.step({ kind: "stream-opened" });
      idle.step({ kind: "stream-closed" });
      longest = Math.max(longest, idle.core.nextDeadline()! - idle.now);
    }
    expect(longest).toBe(2_500);
  });
});
