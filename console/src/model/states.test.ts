import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AgentSchema, AgentState, ExecutionSchema, ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { formatDuration, formatRelative, leaseText } from "./format.js";
import { latestFireOutcome } from "./job-outcome.js";
import { traceUrl } from "./trace-link.js";
import { agentStateName, executionStateName, executionStateOf, LEGEND, toneOf } from "./states.js";

describe("states, colours and words", () => {
  it("names every execution state in lower case as data-state and the URL do, none for no execution", () => {
    expect(executionStateName(ExecutionState.TIMED_OUT)).toBe("timed_out");
    expect(executionStateName(ExecutionState.SUCCEEDED)).toBe("succeeded");
    expect(executionStateName(undefined)).toBe("none");
    expect(executionStateName(ExecutionState.UNSPECIFIED)).toBe("none");
    // A state from a newer controller is shown as unknown, not as nothing.
    expect(executionStateName(42 as ExecutionState)).toBe("unknown");
    for (const state of [1, 2, 3, 4, 5, 6, 7, 8, 9] as ExecutionState[]) expect(executionStateOf(executionStateName(state))).toBe(state);
    expect(executionStateOf("none")).toBeUndefined();
  });

  it("colours succeeded green, failed red, running blue, pending and unknown amber, none grey, each in the legend", () => {
    expect(toneOf("succeeded")).toBe("ok");
    expect(toneOf("failed")).toBe("bad");
    expect(toneOf("timed_out")).toBe("bad");
    expect(toneOf("running")).toBe("busy");
    expect(toneOf("pending")).toBe("wait");
    expect(toneOf("unknown")).toBe("wait");
    expect(toneOf("none")).toBe("none");
    const tones = new Set(LEGEND.map((entry) => entry.tone));
    for (const name of ["pending", "running", "succeeded", "failed", "timed_out", "cancelled", "lost", "misfired", "unknown", "none"] as const) expect(tones.has(toneOf(name))).toBe(true);
  });

  it("names agent states as the agents page's data-state does", () => {
    expect(agentStateName(AgentState.READY)).toBe("connected");
    expect(agentStateName(AgentState.DRAINING)).toBe("draining");
    expect(agentStateName(AgentState.LOST)).toBe("lost");
  });

  it("shows a connected agent's lease as renewed and counts a lost one's down on the controller's clock", () => {
    expect(leaseText(create(AgentSchema, { state: AgentState.READY, leaseExpiresUnixMs: 1n }), 50_000)).toBe("renewed");
    const lost = create(AgentSchema, { state: AgentState.LOST, leaseExpiresUnixMs: 12_000n });
    expect(leaseText(lost, 10_000)).toBe("expires in 2 s");
    expect(leaseText(lost, 11_001)).toBe("expires in 1 s");
    expect(leaseText(lost, 12_000)).toBe("expired");
  });

  it("writes durations and relative times short", () => {
    expect(formatDuration(850)).toBe("850 ms");
    expect(formatDuration(4200)).toBe("4.2 s");
    expect(formatDuration(185_000)).toBe("3 min 5 s");
    expect(formatDuration(2 * 3600_000 + 600_000)).toBe("2 h 10 min");
    expect(formatRelative(15_000, 10_000)).toBe("in 5.0 s");
    expect(formatRelative(0, 10_000)).toBe("—");
    expect(formatRelative(10_000, 190_000)).toBe("3 min ago");
  });

  it("sums up a job's newest fire, worst state first", () => {
    const run = (fire: number, state: ExecutionState) => create(ExecutionSchema, { fireTimeUnixMs: BigInt(fire), state });
    const outcome = latestFireOutcome([run(2000, ExecutionState.SUCCEEDED), run(2000, ExecutionState.FAILED), run(2000, ExecutionState.SUCCEEDED), run(1000, ExecutionState.LOST)]);
    expect(outcome).toEqual({ state: "failed", fireTimeMs: 2000, text: "2/3 succeeded, 1 failed" });
    expect(latestFireOutcome([]).state).toBe("none");
  });

  it("links an execution to its trace when the controller has a template and the execution a trace id", () => {
    const id = "4bf92f3577b34da6a3ce929d0e0e4736";
    expect(traceUrl("http://jaeger:16686/trace/{traceId}", id)).toBe(`http://jaeger:16686/trace/${id}`);
    expect(traceUrl("https://tempo.example/explore?trace={traceId}&again={traceId}", id)).toBe(`https://tempo.example/explore?trace=${id}&again=${id}`);
    expect(traceUrl("", id)).toBeUndefined();
    expect(traceUrl(undefined, id)).toBeUndefined();
    expect(traceUrl("http://jaeger:16686/trace/{traceId}", "")).toBeUndefined();
    expect(traceUrl("http://jaeger:16686/search", id)).toBeUndefined();
  });
});
