import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionUpdateSchema, type ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { HELLO_SEQ, ReportBook } from "./report-book.js";

function report(executionId: string, state: ExecutionState): ExecutionUpdate {
  return create(ExecutionUpdateSchema, { executionId, state });
}

describe("ReportBook", () => {
  it("asks for a flush on the first report of a turn only", () => {
    const book = new ReportBook();
    expect(book.add(report("a", ExecutionState.RUNNING))).toBe(true);
    expect(book.add(report("b", ExecutionState.RUNNING))).toBe(false);
  });

  it("sends only the terminal report of a run that started and ended within one batch", () => {
    const book = new ReportBook();
    book.add(report("a", ExecutionState.RUNNING));
    book.add(report("b", ExecutionState.RUNNING));
    book.add(report("a", ExecutionState.SUCCEEDED));
    expect(book.takeBatch(1n).map((u) => [u.executionId, u.state])).toEqual([
      ["b", ExecutionState.RUNNING],
      ["a", ExecutionState.SUCCEEDED],
    ]);
    expect(book.pending).toBe(false);
  });

  it("confirms a terminal report by the ack of the heartbeat sent after it, not before", () => {
    const book = new ReportBook();
    book.add(report("a", ExecutionState.FAILED));
    book.takeBatch(3n);
    book.confirm(2n);
    expect(book.unconfirmedCount).toBe(1);
    book.confirm(3n);
    expect(book.unconfirmedCount).toBe(0);
  });

  it("keeps a report sent on a stream that ended unconfirmed, lists it in the next Hello, and the Welcome confirms it", () => {
    const book = new ReportBook();
    book.add(report("a", ExecutionState.LOST));
    book.takeBatch(1n);
    book.streamEnded();
    book.confirm(1n);
    expect(book.forHello().map((u) => u.executionId)).toEqual(["a"]);
    book.confirm(HELLO_SEQ);
    expect(book.unconfirmedCount).toBe(0);
  });

  it("confirms batches in the order sent, each by its own heartbeat's ack", () => {
    const book = new ReportBook();
    book.add(report("a", ExecutionState.SUCCEEDED));
    book.takeBatch(1n);
    book.add(report("b", ExecutionState.FAILED));
    book.takeBatch(1n);
    book.add(report("c", ExecutionState.SUCCEEDED));
    book.takeBatch(2n);
    book.confirm(1n);
    expect(book.forHello().map((u) => u.executionId)).toEqual(["c"]);
  });

  it("confirms a report that a newer one of its execution replaced only with the newer one's batch", () => {
    const book = new ReportBook();
    book.add(report("a", ExecutionState.SUCCEEDED));
    book.takeBatch(1n);
    const newer = report("a", ExecutionState.LOST);
    book.add(newer);
    book.confirm(1n);
    expect(book.unconfirmedCount).toBe(1);
    book.takeBatch(2n);
    book.confirm(2n);
    expect(book.unconfirmedCount).toBe(0);
  });

  it("never confirms a report that was not sent", () => {
    const book = new ReportBook();
    book.add(report("a", ExecutionState.SUCCEEDED));
    book.confirm(10n);
    expect(book.unconfirmedCount).toBe(1);
    book.dropOutbox();
    expect(book.pending).toBe(false);
    expect(book.unconfirmedCount).toBe(1);
  });
});
