import { create, equals, fromBinary, ScalarType, toBinary, type DescField, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  AgentService,
  ConnectResponseSchema,
  DispatchSchema,
  ExecutionContextSchema,
  type ConnectResponse,
  type ExecutionContext,
} from "../gen/shardline/v1/agent_service_pb.js";
import { decodeConnectResponse, readDispatchResponse } from "./connect-response-decoding.js";
import { serviceDefinition } from "./service-definition.js";

/**
 * Strings that repeat from one execution to the next (byte for byte, or of the same length
 * only), unicode ones, one longer than the library's ASCII fast path, and anything.
 */
const text = fc.oneof(
  fc.constantFrom("", "a", "b", "noop", "ünïcode ✓ 日本 🙂", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
  fc.string({ unit: "binary", maxLength: 40 }),
);

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

function scalarArbitrary(type: ScalarType): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING:
      return text;
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.UINT32:
      return fc.oneof(fc.constantFrom(0, 1, 127, 128, 2 ** 31, 2 ** 32 - 1), fc.integer({ min: 0, max: 2 ** 32 - 1 }));
    case ScalarType.INT64:
      return fc.oneof(fc.constantFrom(0n, -1n, INT64_MIN, INT64_MAX), fc.bigInt({ min: INT64_MIN, max: INT64_MAX }));
    case ScalarType.UINT64:
      return fc.oneof(fc.constantFrom(0n, 1n, 2n ** 53n + 1n, UINT64_MAX), fc.bigInt({ min: 0n, max: UINT64_MAX }));
    default:
      throw new Error(`no arbitrary for scalar type ${type}: add one`);
  }
}

function valueArbitrary(field: DescField): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case "scalar":
      return scalarArbitrary(field.scalar);
    case "enum":
      // A number the enum does not name is kept as it is by an open enum.
      return fc.oneof(fc.constantFrom(...field.enum.values.map((v) => v.number)), fc.integer({ min: -3, max: 99 }));
    case "message":
      return messageArbitrary(field.message);
    case "list":
      return fc.array(
        field.listKind === "message" ? messageArbitrary(field.message) : field.listKind === "enum" ? fc.constantFrom(...field.enum.values.map((v) => v.number)) : scalarArbitrary(field.scalar),
        { maxLength: 3 },
      );
    case "map":
      if (field.mapKey !== ScalarType.STRING) throw new Error(`no arbitrary for map keys of type ${field.mapKey}: add one`);
      return fc.dictionary(
        // "__proto__" is a key of its own test.
        text.filter((key) => key !== "__proto__"),
        field.mapKind === "message" ? messageArbitrary(field.message) : field.mapKind === "enum" ? fc.constantFrom(...field.enum.values.map((v) => v.number)) : scalarArbitrary(field.scalar),
        { maxKeys: 3, noNullPrototype: true },
      );
  }
}

const messageArbitraries = new Map<DescMessage, fc.Arbitrary<Record<string, unknown>>>();

/** Any message of `desc`, read from its descriptor: every field set or unset, each oneof's every case or none. */
function messageArbitrary(desc: DescMessage): fc.Arbitrary<Record<string, unknown>> {
  let arbitrary = messageArbitraries.get(desc);
  if (arbitrary === undefined) {
    const members: Record<string, fc.Arbitrary<unknown>> = {};
    for (const member of desc.members) {
      members[member.localName] =
        member.kind === "oneof"
          ? fc.oneof(fc.constant({ case: undefined }), ...member.fields.map((f) => valueArbitrary(f).map((value) => ({ case: f.localName, value }))))
          : valueArbitrary(member);
    }
    arbitrary = fc.record(members, { requiredKeys: [] });
    messageArbitraries.set(desc, arbitrary);
  }
  return arbitrary;
}

type ContextInit = MessageInitShape<typeof ExecutionContextSchema>;

/** Any ConnectResponse, of every kind. */
const anyResponse = messageArbitrary(ConnectResponseSchema).map((init) => create(ConnectResponseSchema, init as MessageInitShape<typeof ConnectResponseSchema>));

/**
 * Dispatches as a controller sends them: runs of executions of a few fires, each fire's fields
 * the same for its executions, each execution's own id, shard, fencing token and assignment.
 */
const dispatchResponse = fc
  .record({
    term: scalarArbitrary(ScalarType.UINT64) as fc.Arbitrary<bigint>,
    fires: fc.array(messageArbitrary(ExecutionContextSchema), { minLength: 1, maxLength: 3 }),
    executions: fc.array(
      fc.record({
        fire: fc.nat(),
        own: fc.record(
          {
            executionId: text,
            shard: scalarArbitrary(ScalarType.UINT32),
            fencingToken: scalarArbitrary(ScalarType.UINT64),
            assignment: valueArbitrary(ExecutionContextSchema.field.assignment),
          },
          { requiredKeys: [] },
        ),
      }),
      { maxLength: 12 },
    ),
  })
  .map(({ term, fires, executions }) =>
    create(ConnectResponseSchema, {
      term,
      kind: { case: "dispatch", value: { executions: executions.map(({ fire, own }) => ({ ...fires[fire % fires.length], ...own }) as ContextInit) } },
    }),
  );

/** What `decode` gives for `bytes`, or the message of what it throws. */
function outcome(decode: (bytes: Uint8Array) => ConnectResponse, bytes: Uint8Array): { message: ConnectResponse } | { error: string } {
  try {
    return { message: decode(bytes) };
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

const library = (bytes: Uint8Array) => fromBinary(ConnectResponseSchema, bytes);

/** Fails unless `decoded` is the library's decoding of the same bytes: equal, encoding alike, and with the same fields present. */
function expectLibraryDecoding(decoded: ConnectResponse, bytes: Uint8Array): void {
  const expected = library(bytes);
  expect(equals(ConnectResponseSchema, decoded, expected)).toBe(true);
  expect(Buffer.from(toBinary(ConnectResponseSchema, decoded)).equals(toBinary(ConnectResponseSchema, expected))).toBe(true);
  expect(decoded).toStrictEqual(expected);
}

function dispatchOf(response: ConnectResponse): ExecutionContext[] {
  if (response.kind.case !== "dispatch") throw new Error(`expected a dispatch, got ${response.kind.case}`);
  return response.kind.value.executions;
}

const EXECUTIONS = DispatchSchema.field.executions.number;

/** A ConnectResponse{term, dispatch} written by hand around ExecutionContexts given as bytes. */
function dispatchBytes(term: bigint, executions: Uint8Array[], extra?: (dispatch: BinaryWriter) => void): Uint8Array {
  const writer = new BinaryWriter();
  writer.tag(ConnectResponseSchema.field.term.number, WireType.Varint).uint64(term);
  writer.tag(ConnectResponseSchema.field.dispatch.number, WireType.LengthDelimited).fork();
  for (const execution of executions) writer.tag(EXECUTIONS, WireType.LengthDelimited).bytes(execution);
  extra?.(writer);
  writer.join();
  return writer.finish();
}

function contextBytes(init: ContextInit): Uint8Array {
  return toBinary(ExecutionContextSchema, create(ExecutionContextSchema, init));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((part) => [...part]));
}

describe("decodeConnectResponse", () => {
  it("reads every Dispatch itself, as the library decodes it", () => {
    fc.assert(
      fc.property(dispatchResponse, (message) => {
        const bytes = toBinary(ConnectResponseSchema, message);
        const read = readDispatchResponse(bytes);
        expect(read).toBeDefined();
        expectLibraryDecoding(read!, bytes);
        expectLibraryDecoding(decodeConnectResponse(bytes), bytes);
      }),
      { numRuns: 1000 },
    );
  });

  it("decodes a ConnectResponse of any kind as the library does, reading only dispatches itself", () => {
    fc.assert(
      fc.property(anyResponse, (message) => {
        const bytes = toBinary(ConnectResponseSchema, message);
        expect(readDispatchResponse(bytes) !== undefined).toBe(message.kind.case === "dispatch");
        expectLibraryDecoding(decodeConnectResponse(bytes), bytes);
      }),
      { numRuns: 1000 },
    );
  });

  it("merges two messages written one after the other as the library does", () => {
    fc.assert(
      fc.property(fc.oneof(dispatchResponse, anyResponse), fc.oneof(dispatchResponse, anyResponse), (first, second) => {
        const bytes = concat(toBinary(ConnectResponseSchema, first), toBinary(ConnectResponseSchema, second));
        expectLibraryDecoding(decodeConnectResponse(bytes), bytes);
      }),
      { numRuns: 300 },
    );
  });

  it("throws what the library throws, or gives what it gives, for damaged bytes", () => {
    fc.assert(
      fc.property(dispatchResponse, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean(), (message, at, value, truncate) => {
        const whole = toBinary(ConnectResponseSchema, message);
        const bytes = truncate ? whole.subarray(0, at % (whole.length + 1)) : whole.map((b, i) => (i === at % whole.length ? value : b));
        const expected = outcome(library, bytes);
        const actual = outcome(decodeConnectResponse, bytes);
        if ("error" in expected) expect(actual).toEqual(expected);
        else expectLibraryDecoding(decodeConnectResponse(bytes), bytes);
      }),
      { numRuns: 1000 },
    );
  });

  it("keeps repeated strings apart when their bytes differ only in the last one", () => {
    const bytes = dispatchBytes(1n, [contextBytes({ job: "job-a", handler: "h1" }), contextBytes({ job: "job-b", handler: "h1" }), contextBytes({ job: "job-b", handler: "h2" })]);
    const executions = dispatchOf(readDispatchResponse(bytes)!);
    expect(executions.map((e) => [e.job, e.handler])).toEqual([
      ["job-a", "h1"],
      ["job-b", "h1"],
      ["job-b", "h2"],
    ]);
    expectLibraryDecoding(decodeConnectResponse(bytes), bytes);
  });

  it("takes the last of a scalar field written twice", () => {
    const bytes = dispatchBytes(1n, [concat(contextBytes({ job: "first", shard: 3, revision: 9n }), contextBytes({ job: "last", shard: 4 }))]);
    const [execution] = dispatchOf(readDispatchResponse(bytes)!);
    expect(execution).toMatchObject({ job: "last", shard: 4, revision: 9n });
    expectLibraryDecoding(decodeConnectResponse(bytes), bytes);
  });

  it("leaves to the library a message field written twice, which protobuf merges", () => {
    const bytes = dispatchBytes(1n, [concat(contextBytes({ assignment: { term: 5n } }), contextBytes({ assignment: { generation: 7n } }))]);
    expect(readDispatchResponse(bytes)).toBeUndefined();
    const [execution] = dispatchOf(decodeConnectResponse(bytes));
    expect(execution!.assignment).toMatchObject({ term: 5n, generation: 7n });
    expectLibraryDecoding(decodeConnectResponse(bytes), bytes);

    const messageFieldTwice = fc.oneof(
      ...ExecutionContextSchema.fields.filter((f) => f.fieldKind === "message").map((f) => fc.tuple(fc.constant(f.localName), valueArbitrary(f), valueArbitrary(f))),
    );
    fc.assert(
      fc.property(messageFieldTwice, ([name, first, second]) => {
        const twice = dispatchBytes(1n, [concat(contextBytes({ [name]: first }), contextBytes({ [name]: second }))]);
        expect(readDispatchResponse(twice)).toBeUndefined();
        expectLibraryDecoding(decodeConnectResponse(twice), twice);
      }),
      { numRuns: 100 },
    );
  });

  it("leaves to the library a field that runs past the end of its ExecutionContext", () => {
    // The first execution says it is 4 bytes long; its id, 7 bytes with its tag and length, runs on into the Dispatch.
    const id = contextBytes({ executionId: "abcde" });
    const bytes = dispatchBytes(1n, [], (dispatch) => {
      dispatch.tag(EXECUTIONS, WireType.LengthDelimited).uint32(4).raw(id);
      dispatch.tag(EXECUTIONS, WireType.LengthDelimited).bytes(contextBytes({ executionId: "next" }));
    });
    expect(readDispatchResponse(bytes)).toBeUndefined();
    expect(dispatchOf(decodeConnectResponse(bytes)).map((e) => e.executionId)).toEqual(["abcde", "next"]);
    expectLibraryDecoding(decodeConnectResponse(bytes), bytes);
  });

  it("leaves to the library a Dispatch written twice, whose executions protobuf appends", () => {
    const one = dispatchBytes(1n, [contextBytes({ executionId: "x" })]);
    const two = dispatchBytes(2n, [contextBytes({ executionId: "y" })]);
    const bytes = concat(one, two);
    expect(readDispatchResponse(bytes)).toBeUndefined();
    const response = decodeConnectResponse(bytes);
    expect(response.term).toBe(2n);
    expect(dispatchOf(response).map((e) => e.executionId)).toEqual(["x", "y"]);
    expectLibraryDecoding(response, bytes);
  });

  it("keeps an unknown field of an ExecutionContext and of the Dispatch in $unknown, as the library does", () => {
    const unknown = { no: 99, wireType: WireType.Varint, data: new Uint8Array([0x2a]) };
    const message = create(ConnectResponseSchema, { term: 4n, kind: { case: "dispatch", value: { executions: [{ executionId: "a" }, { executionId: "b" }] } } });
    const dispatch = message.kind.case === "dispatch" ? message.kind.value : undefined;
    dispatch!.executions[1]!.$unknown = [unknown];
    dispatch!.$unknown = [{ ...unknown, no: 98 }];
    const bytes = toBinary(ConnectResponseSchema, message);
    expect(readDispatchResponse(bytes)).toBeUndefined();
    const decoded = decodeConnectResponse(bytes);
    expect(decoded.kind.case === "dispatch" && decoded.kind.value.$unknown).toEqual([{ ...unknown, no: 98 }]);
    expect(dispatchOf(decoded)[1]!.$unknown).toEqual([unknown]);
    expectLibraryDecoding(decoded, bytes);
  });

  it("leaves to the library a field of the wrong wire type, a map entry with an extra field, and the key __proto__", () => {
    // The library reads a uint32 whatever the wire type says: the "length" is the shard, the "bytes" the next field.
    const shardAsBytes = new BinaryWriter().tag(ExecutionContextSchema.field.shard.number, WireType.LengthDelimited).uint32(2).tag(ExecutionContextSchema.field.shardCount.number, WireType.Varint).uint32(7).finish();
    const traceField = ExecutionContextSchema.field.traceContext.number;
    const entryWithExtra = new BinaryWriter().tag(traceField, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string("k").tag(2, WireType.LengthDelimited).string("v").tag(3, WireType.Varint).uint32(1).join().finish();
    const protoKey = new BinaryWriter().tag(traceField, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string("__proto__").tag(2, WireType.LengthDelimited).string("v").join().finish();
    // A tag of three bytes where one would do: the library reads it, and checks long ones.
    const longTag = concat(new Uint8Array([(ExecutionContextSchema.field.job.number << 3) | WireType.LengthDelimited | 0x80, 0x80, 0x00, 1]), new TextEncoder().encode("j"));
    for (const execution of [shardAsBytes, entryWithExtra, protoKey, longTag]) {
      const bytes = dispatchBytes(1n, [contextBytes({ executionId: "a" }), execution]);
      expect(readDispatchResponse(bytes)).toBeUndefined();
      expectLibraryDecoding(decodeConnectResponse(bytes), bytes);
    }
    const [, withShardAsBytes] = dispatchOf(decodeConnectResponse(dispatchBytes(1n, [contextBytes({}), shardAsBytes])));
    expect(withShardAsBytes).toMatchObject({ shard: 2, shardCount: 7 });
    const [, withProtoKey] = dispatchOf(decodeConnectResponse(dispatchBytes(1n, [contextBytes({}), protoKey])));
    expect(Object.keys(withProtoKey!.traceContext)).toEqual(["__proto__"]);
  });

  it("throws the library's error for truncated bytes, a string that is not UTF-8, and an overlong tag", () => {
    const whole = dispatchBytes(1n, [contextBytes({ executionId: "an-execution", job: "a-job" })]);
    const badUtf8 = new BinaryWriter().tag(ExecutionContextSchema.field.job.number, WireType.LengthDelimited).bytes(new Uint8Array([0x61, 0xff, 0x62])).finish();
    // A tag of six bytes: more than a uint32 takes.
    const overlongTag = new Uint8Array([(ExecutionContextSchema.field.job.number << 3) | WireType.LengthDelimited | 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 1, 0x6a]);
    for (const bytes of [whole.subarray(0, whole.length - 3), dispatchBytes(1n, [contextBytes({ job: "a-job" }), badUtf8]), dispatchBytes(1n, [overlongTag]), new Uint8Array([0xff, 0xff, 0xff])]) {
      const expected = outcome(library, bytes);
      expect(expected).toHaveProperty("error");
      expect(outcome(decodeConnectResponse, bytes)).toEqual(expected);
    }
  });

  it("is how the agent's Connect stream decodes what the controller sends, and still throws on garbage", () => {
    const deserialize = serviceDefinition(AgentService)["connect"]!.responseDeserialize;
    const bytes = dispatchBytes(3n, [contextBytes({ executionId: "e", job: "j", assignment: { shard: { job: "j", shard: 2 }, term: 3n, generation: 1n } })]);
    const buffer = Buffer.from(bytes);
    expect(deserialize).toBe(decodeConnectResponse);
    expectLibraryDecoding(deserialize(buffer) as ConnectResponse, bytes);
    const garbage = Buffer.from([0x0a, 0x05, 0x01]);
    expect(outcome(library, garbage)).toHaveProperty("error");
    expect(outcome((b) => deserialize(b as Buffer) as ConnectResponse, garbage)).toEqual(outcome(library, garbage));
  });
});
