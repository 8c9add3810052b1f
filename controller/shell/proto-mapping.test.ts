import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { ExecutionUpdateSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { EXECUTION_LOG_LIMITS } from "../core/execution-log.js";
import type { ExecutionRecord } from "../store/store.js";
import { executionToProto, updateFromProto } from "./proto-mapping.js";

const record: ExecutionRecord = { id: "rollup:1000:0:1", job: "rollup", shard: 0, fireTime: 1000, attempt: 1, agent: "w-1", state: "running", cause: "schedule", parameter: "" };

describe("executionToProto", () => {
  it("gives the trace id of the trace context the execution runs under, and none without one", () => {
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    expect(executionToProto({ ...record, traceContext: { traceparent } }).traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(executionToProto(record).traceId).toBe("");
    expect(executionToProto({ ...record, traceContext: { traceparent: "garbage" } }).traceId).toBe("");
  });
});

describe("updateFromProto: an ExecutionUpdate's log", () => {
  const update = (log: { firstLine: bigint; keptFrom: bigint; lines: number }) =>
    create(ExecutionUpdateSchema, {
      executionId: "rollup/1000/0/1",
      state: ExecutionState.RUNNING,
      log: { firstLine: log.firstLine, keptFrom: log.keptFrom, lines: Array.from({ length: log.lines }, (_, i) => ({ text: `line ${i}` })) },
    });

  it("takes a log's lines, numbered from first_line", () => {
    expect(updateFromProto(update({ firstLine: 5n, keptFrom: 2n, lines: 2 }), "updates[0]").log).toMatchObject({ firstLine: 5, keptFrom: 2, lines: [{ text: "line 0" }, { text: "line 1" }] });
  });

  it("refuses a log no agent could send, naming the field: too many lines, numbers past 2^53, kept_from past its lines", () => {
    const refusal = (log: Parameters<typeof update>[0]) => {
      try {
        updateFromProto(update(log), "updates[0]");
      } catch (error) {
        return error instanceof ShardlineError ? `${error.code} ${error.message}` : String(error);
      }
      return "accepted";
    };
    expect(refusal({ firstLine: 0n, keptFrom: 0n, lines: EXECUTION_LOG_LIMITS.maxLinesPerChunk + 1 })).toMatch(/^invalid-argument updates\[0\]\.log\.lines: "\d+ lines" is not allowed; expected at most \d+ in one ExecutionLog$/);
    expect(refusal({ firstLine: 2n ** 53n, keptFrom: 0n, lines: 1 })).toMatch(/^invalid-argument updates\[0\]\.log\.first_line/);
    expect(refusal({ firstLine: 10n, keptFrom: 20n, lines: 2 })).toMatch(/^invalid-argument updates\[0\]\.log\.kept_from: "20" is not allowed; expected at most first_line \+ the number of lines \(12\)$/);
  });
});
