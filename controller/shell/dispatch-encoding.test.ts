import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { readDispatchResponse } from "../../shared/grpc/connect-response-decoding.js";
import type { ExecutionContext } from "../core/messages.js";
import { encodeDispatch, executionToProto } from "./dispatch-encoding.js";

/** Executions as the core makes them: runs of shards of a few fires, each fire's trace context and executor one object. */
const fires = fc.array(
  fc.record({
    job: fc.constantFrom<string>("a", "b.c", "ünïcode"),
    fireTime: fc.integer({ min: 0, max: 2 ** 42 }),
    attempt: fc.integer({ min: 1, max: 5 }),
    shardCount: fc.integer({ min: 1, max: 1000 }),
    parameter: fc.string({ maxLength: 20 }),
    revision: fc.integer({ min: 1, max: 50 }),
    timeoutMs: fc.integer({ min: 0, max: 100_000 }),
    disconnectGraceMs: fc.integer({ min: 0, max: 60_000 }),
    traceContext: fc.constantFrom<Record<string, string>>({}, { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "x=1" }),
    executor: fc.constantFrom<Pick<ExecutionContext, "handler" | "script" | "http" | "kubernetes">>(
      { handler: "noop" },
      { handler: "", script: { command: "/bin/true", args: ["-x", ""], env: { A: "1" }, killGraceMs: 5000 } },
      { handler: "", http: { method: "POST", url: "http://h/p", headers: { h: "v" }, body: "{}", connectTimeoutMs: 1000, readTimeoutMs: 2000 } },
      { handler: "", kubernetes: { podTemplateJson: '{"spec":{}}', backoffLimit: 1, ttlSecondsAfterFinished: 60, logContainer: "", startTimeoutSeconds: 300 } },
    ),
    daemon: fc.boolean(),
    fireOutcome: fc.option(fc.array(fc.record({ shard: fc.nat(9), state: fc.constantFrom("succeeded" as const, "failed" as const), executionId: fc.string(), error: fc.option(fc.string(), { nil: undefined }) }), { maxLength: 3 }), { nil: undefined }),
    shards: fc.array(
      fc.record({ shard: fc.nat(999), shardParameter: fc.string({ maxLength: 8 }), term: fc.integer({ min: 0, max: 2 ** 31 }), generation: fc.integer({ min: 0, max: 2 ** 31 }), assigned: fc.boolean() }),
      { minLength: 1, maxLength: 6 },
    ),
  }),
  { maxLength: 4 },
);

type Fires = typeof fires extends fc.Arbitrary<infer T> ? T : never;

function executionsOf(generated: Fires): ExecutionContext[] {
  return generated.flatMap((fire) =>
    fire.shards.map((s) => ({
      executionId: `${fire.job}/${fire.fireTime}/${s.shard}/${fire.attempt}`,
      job: fire.job,
      shard: s.shard,
      shardCount: fire.shardCount,
      shardParameter: s.shardParameter,
      parameter: fire.parameter,
      fireTime: fire.fireTime,
      attempt: fire.attempt,
      revision: fire.revision,
      timeoutMs: fire.timeoutMs,
      disconnectGraceMs: fire.disconnectGraceMs,
      fencingToken: BigInt(s.term) * 2n ** 32n + BigInt(s.generation),
      ...(s.assigned ? { assignment: { job: fire.job, shard: s.shard, term: s.term, generation: s.generation } } : {}),
      traceContext: fire.traceContext,
      ...fire.executor,
      ...(fire.daemon ? { daemon: true } : {}),
      ...(fire.fireOutcome === undefined ? {} : { fireOutcome: fire.fireOutcome }),
    })),
  );
}

describe("encodeDispatch", () => {
  it("decodes as the ConnectResponse toBinary makes of the whole message, whatever the executions", () => {
    fc.assert(
      fc.property(fires, fc.integer({ min: 0, max: 2 ** 31 }), (generated, term) => {
        const executions = executionsOf(generated);
        const decoded = fromBinary(ConnectResponseSchema, encodeDispatch(term, executions).bytes);
        const whole = create(ConnectResponseSchema, { term: BigInt(term), kind: { case: "dispatch", value: { executions: executions.map(executionToProto) } } });
        expect(equals(ConnectResponseSchema, decoded, fromBinary(ConnectResponseSchema, toBinary(ConnectResponseSchema, whole)))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("is read by the agent's decoder without the library, as the library decodes it", () => {
    fc.assert(
      fc.property(fires, fc.integer({ min: 0, max: 2 ** 31 }), (generated, term) => {
        const bytes = encodeDispatch(term, executionsOf(generated)).bytes;
        const read = readDispatchResponse(bytes);
        expect(read).toBeDefined();
        const expected = fromBinary(ConnectResponseSchema, bytes);
        expect(equals(ConnectResponseSchema, read!, expected)).toBe(true);
        expect(read).toStrictEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it("carries each execution's own fields and its fire's, as the agent reads them", () => {
    const [first, second] = executionsOf([
      {
        job: "tp",
        fireTime: 1_700_000_000_000,
        attempt: 2,
        shardCount: 3,
        parameter: "p",
        revision: 4,
        timeoutMs: 9000,
        disconnectGraceMs: 15_000,
        traceContext: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
        executor: { handler: "noop" },
        daemon: false,
        fireOutcome: undefined,
        shards: [
          { shard: 0, shardParameter: "zero", term: 3, generation: 7, assigned: true },
          { shard: 2, shardParameter: "", term: 3, generation: 9, assigned: true },
        ],
      },
    ]);
    const response = fromBinary(ConnectResponseSchema, encodeDispatch(3, [first!, second!]).bytes);
    expect(response.term).toBe(3n);
    expect(response.kind.case).toBe("dispatch");
    const [a, b] = response.kind.case === "dispatch" ? response.kind.value.executions : [];
    expect(a).toMatchObject({ executionId: "tp/1700000000000/0/2", shard: 0, shardParameter: "zero", job: "tp", fireTimeUnixMs: 1_700_000_000_000n, attempt: 2, handler: "noop", revision: 4n, timeoutMs: 9000 });
    expect(a!.fencingToken).toBe(3n * 2n ** 32n + 7n);
    expect(a!.assignment?.generation).toBe(7n);
    expect(b).toMatchObject({ executionId: "tp/1700000000000/2/2", shard: 2, shardParameter: "", job: "tp", parameter: "p", shardCount: 3, disconnectGraceMs: 15_000 });
    expect(b!.traceContext).toEqual({ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
    expect(b!.assignment?.generation).toBe(9n);
  });
});
