import { describe, expect, it } from "vitest";
import type { ExecutionRecord } from "../store/store.js";
import { executionToProto } from "./proto-mapping.js";

const record: ExecutionRecord = { id: "rollup:1000:0:1", job: "rollup", shard: 0, fireTime: 1000, attempt: 1, agent: "w-1", state: "running", cause: "schedule", parameter: "" };

describe("executionToProto", () => {
  it("gives the trace id of the trace context the execution runs under, and none without one", () => {
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    expect(executionToProto({ ...record, traceContext: { traceparent } }).traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(executionToProto(record).traceId).toBe("");
    expect(executionToProto({ ...record, traceContext: { traceparent: "garbage" } }).traceId).toBe("");
  });
});
