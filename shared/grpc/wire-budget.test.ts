import { create, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ConnectRequestSchema } from "../gen/shardline/v1/agent_service_pb.js";
import { ApplyJobRequestSchema } from "../gen/shardline/v1/admin_service_pb.js";
import { checkWireBudget, WireBudgetExceeded } from "./wire-budget.js";

const updates = (count: number, fields: Record<string, unknown> = {}) =>
  toBinary(
    ConnectRequestSchema,
    create(ConnectRequestSchema, { kind: { case: "executionUpdates", value: { updates: Array.from({ length: count }, () => fields) } } }),
  );

function refusal(run: () => void): WireBudgetExceeded {
  try {
    run();
  } catch (error) {
    if (error instanceof WireBudgetExceeded) return error;
    throw error;
  }
  throw new Error("no refusal");
}

describe("checkWireBudget", () => {
  it("passes messages within the budget, whatever they hold", () => {
    const real = updates(1000, { executionId: "billing-rollup/1796093572000/7/1", state: 3, startedAtUnixMs: 1n, finishedAtUnixMs: 2n, error: "boom" });
    expect(() => checkWireBudget(ConnectRequestSchema, real)).not.toThrow();
    expect(() => checkWireBudget(ApplyJobRequestSchema, toBinary(ApplyJobRequestSchema, create(ApplyJobRequestSchema, { manifest: "x".repeat(100_000) })))).not.toThrow();
    expect(() => checkWireBudget(ConnectRequestSchema, new Uint8Array())).not.toThrow();
  });

  it("refuses a repeated field past maxEntries with INVALID_ARGUMENT, naming it by its path", () => {
    const error = refusal(() => checkWireBudget(ConnectRequestSchema, updates(11), { maxFields: 1000, maxEntries: 10 }));
    expect([error.code, error.message]).toEqual([
      status.INVALID_ARGUMENT,
      'execution_updates.updates: "more than 10 entries" is not allowed; expected at most 10 in one message',
    ]);
    const held = toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { kind: { case: "hello", value: { held: Array.from({ length: 3 }, () => ({})) } } }));
    expect(refusal(() => checkWireBudget(ConnectRequestSchema, held, { maxFields: 1000, maxEntries: 2 })).message).toMatch(/^hello\.held: /);
  });

  it("counts the entries of each message on its own", () => {
    // Three held assignments and three handlers: no list of any one message is over three entries.
    const hello = toBinary(
      ConnectRequestSchema,
      create(ConnectRequestSchema, { kind: { case: "hello", value: { held: Array.from({ length: 3 }, (_, i) => ({ shard: { job: "j", shard: i + 1 } })), handlers: ["a", "b", "c"] } } }),
    );
    expect(() => checkWireBudget(ConnectRequestSchema, hello, { maxFields: 1000, maxEntries: 3 })).not.toThrow();
  });

  it("refuses a message past maxFields, nested and unknown fields counted, with RESOURCE_EXHAUSTED", () => {
    // One kind field, ten updates, and their two fields each: 31.
    const message = updates(10, { executionId: "a", state: 2 });
    expect(() => checkWireBudget(ConnectRequestSchema, message, { maxFields: 31, maxEntries: 100 })).not.toThrow();
    const error = refusal(() => checkWireBudget(ConnectRequestSchema, message, { maxFields: 30, maxEntries: 100 }));
    expect([error.code, error.message]).toEqual([
      status.RESOURCE_EXHAUSTED,
      "shardline.v1.ConnectRequest: more than 30 fields in one message, counting those of nested messages; a fixed limit (no flag raises it): send less in each message",
    ]);
    const unknown = Buffer.alloc(200, Buffer.from([0x78, 0x01]));
    expect(refusal(() => checkWireBudget(ConnectRequestSchema, unknown, { maxFields: 99, maxEntries: 100 })).code).toBe(status.RESOURCE_EXHAUSTED);
  });

  it("throws a plain error for bytes that are no message: a truncated one, or a nested one overrunning its length", () => {
    const tight = { maxFields: 10, maxEntries: 1 };
    expect(() => checkWireBudget(ConnectRequestSchema, Buffer.from([0x0a, 0x64, 0x01, 0x02]), tight)).toThrow(RangeError);
    // Hello (field 1) of length 2 holding agent_id (field 1) of length 5.
    expect(() => checkWireBudget(ConnectRequestSchema, Buffer.from([0x0a, 0x02, 0x0a, 0x05, 0x61, 0x61, 0x61, 0x61, 0x61]), tight)).toThrow(RangeError);
  });

  it("does not walk a message too short to be over the budget: every field takes two bytes at least", () => {
    // Malformed, but 4 bytes hold 2 fields at most: the decoder is left to refuse them.
    expect(() => checkWireBudget(ConnectRequestSchema, Buffer.from([0x0a, 0x64, 0x01, 0x02]), { maxFields: 2, maxEntries: 2 })).not.toThrow();
    expect(() => checkWireBudget(ConnectRequestSchema, Buffer.alloc(6, Buffer.from([0x78, 0x01])), { maxFields: 2, maxEntries: 2 })).toThrow(WireBudgetExceeded);
  });
});
