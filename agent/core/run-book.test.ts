import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionUpdateSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { NO_SHARD, RunBook } from "./run-book.js";

describe("RunBook", () => {
  it("lists a run waiting for its fire instant as PENDING and a running one with its RUNNING report, for a Hello", () => {
    const book = new RunBook();
    book.hold("waits", "job", 0);
    const running = book.hold("runs", "job", 1);
    running.started = true;
    running.running = create(ExecutionUpdateSchema, { executionId: "runs", state: ExecutionState.RUNNING, startedAtUnixMs: 5n });
    expect(book.forHello().map((u) => [u.executionId, u.state, u.startedAtUnixMs])).toEqual([
      ["waits", ExecutionState.PENDING, 0n],
      ["runs", ExecutionState.RUNNING, 5n],
    ]);
  });

  it("counts the runs of a shard, waiting ones too, and a completion hook's on none", () => {
    const book = new RunBook();
    book.hold("a", "job", 0);
    book.hold("b", "job", 0).started = true;
    book.hold("hook", "job", NO_SHARD);
    expect(book.countOn({ job: "job", shard: 0 })).toBe(2);
    expect(book.end("a")?.executionId).toBe("a");
    expect(book.countOn({ job: "job", shard: 0 })).toBe(1);
    expect(book.end("a")).toBeUndefined();
    expect(book.ids()).toEqual(["b", "hook"]);
  });
});
