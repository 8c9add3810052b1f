/**
 * The decoding of ConnectResponse on the agent, the mirror of the controller's encodeDispatch: a
 * Dispatch of a thousand shards is a thousand ExecutionContexts, and protobuf-es decodes by
 * reflection, a field reader looked up in a map per field, at about 5 us each: a fifth of an
 * agent's CPU in the throughput benchmark. So a ConnectResponse that holds a Dispatch is read
 * here with the library's BinaryReader, field numbers read from the generated descriptors: the
 * framing, each ExecutionContext's scalars, strings, trace context and assignment, at about
 * 1.2 us each. The executors and the fire outcome, rare and each one message, are decoded by the
 * library from their bytes. The executions of one fire repeat its strings, and a string whose
 * bytes are the last execution's is that execution's string (see LastString).
 *
 * It reads only what it can read exactly as the library would. Anything else — another kind of
 * ConnectResponse, an unknown field, a wire type that is not the field's, a singular message
 * field given twice (protobuf merges the two), a field that runs past its message's end, bytes
 * that do not decode — hands the whole message to fromBinary, so the result is always the
 * library's (unknown fields kept in $unknown, the same error for bad bytes). The test checks the
 * two against each other over random messages.
 */
import { fromBinary, protoInt64, type DescField } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import {
  ConnectResponseSchema,
  DispatchSchema,
  ExecutionContextSchema,
  FireOutcomeSchema,
  HttpExecutorSchema,
  KubernetesExecutorSchema,
  ScriptExecutorSchema,
  type ConnectResponse,
  type Dispatch,
  type ExecutionContext,
} from "../gen/shardline/v1/agent_service_pb.js";
import { AssignmentSchema, ShardRefSchema, type Assignment, type ShardRef } from "../gen/shardline/v1/types_pb.js";

/** A field's tag as written on the wire, for a field of the given wire type. */
function tagOf(field: DescField, wireType: WireType): number {
  return (field.number << 3) | wireType;
}

const RESPONSE = {
  term: tagOf(ConnectResponseSchema.field.term, WireType.Varint),
  dispatch: tagOf(ConnectResponseSchema.field.dispatch, WireType.LengthDelimited),
};
const EXECUTIONS = tagOf(DispatchSchema.field.executions, WireType.LengthDelimited);
const CONTEXT_FIELD = ExecutionContextSchema.field;
const CONTEXT = {
  executionId: tagOf(CONTEXT_FIELD.executionId, WireType.LengthDelimited),
  job: tagOf(CONTEXT_FIELD.job, WireType.LengthDelimited),
  shard: tagOf(CONTEXT_FIELD.shard, WireType.Varint),
  shardCount: tagOf(CONTEXT_FIELD.shardCount, WireType.Varint),
  shardParameter: tagOf(CONTEXT_FIELD.shardParameter, WireType.LengthDelimited),
  parameter: tagOf(CONTEXT_FIELD.parameter, WireType.LengthDelimited),
  fireTimeUnixMs: tagOf(CONTEXT_FIELD.fireTimeUnixMs, WireType.Varint),
  attempt: tagOf(CONTEXT_FIELD.attempt, WireType.Varint),
  handler: tagOf(CONTEXT_FIELD.handler, WireType.LengthDelimited),
  timeoutMs: tagOf(CONTEXT_FIELD.timeoutMs, WireType.Varint),
  assignment: tagOf(CONTEXT_FIELD.assignment, WireType.LengthDelimited),
  traceContext: tagOf(CONTEXT_FIELD.traceContext, WireType.LengthDelimited),
  script: tagOf(CONTEXT_FIELD.script, WireType.LengthDelimited),
  http: tagOf(CONTEXT_FIELD.http, WireType.LengthDelimited),
  daemon: tagOf(CONTEXT_FIELD.daemon, WireType.Varint),
  fireOutcome: tagOf(CONTEXT_FIELD.fireOutcome, WireType.LengthDelimited),
  kubernetes: tagOf(CONTEXT_FIELD.kubernetes, WireType.LengthDelimited),
  disconnectGraceMs: tagOf(CONTEXT_FIELD.disconnectGraceMs, WireType.Varint),
  fencingToken: tagOf(CONTEXT_FIELD.fencingToken, WireType.Varint),
  revision: tagOf(CONTEXT_FIELD.revision, WireType.Varint),
};
/** A map entry's key is its field 1, its value its field 2 (protobuf's encoding of maps). */
const MAP_ENTRY = { key: (1 << 3) | WireType.LengthDelimited, value: (2 << 3) | WireType.LengthDelimited };
const ASSIGNMENT = {
  shard: tagOf(AssignmentSchema.field.shard, WireType.LengthDelimited),
  term: tagOf(AssignmentSchema.field.term, WireType.Varint),
  generation: tagOf(AssignmentSchema.field.generation, WireType.Varint),
};
const SHARD_REF = {
  job: tagOf(ShardRefSchema.field.job, WireType.LengthDelimited),
  shard: tagOf(ShardRefSchema.field.shard, WireType.Varint),
};

/** Whether a string field's bytes must be valid UTF-8 (the library then throws on bad bytes, else substitutes U+FFFD). */
const STRICT = {
  executionId: CONTEXT_FIELD.executionId.utf8Validation,
  job: CONTEXT_FIELD.job.utf8Validation,
  shardParameter: CONTEXT_FIELD.shardParameter.utf8Validation,
  parameter: CONTEXT_FIELD.parameter.utf8Validation,
  handler: CONTEXT_FIELD.handler.utf8Validation,
  traceContext: CONTEXT_FIELD.traceContext.utf8Validation,
  shardRefJob: ShardRefSchema.field.job.utf8Validation,
};

/**
 * The library's decoding of a message nested in an ExecutionContext reads it three messages
 * deep (ConnectResponse, Dispatch, ExecutionContext); decoded alone it must meet the same bound.
 */
const NESTED_IN_CONTEXT = { recursionLimit: 100 - 3 };

/** The zero of a 64-bit field, as create() sets it. */
const ZERO = protoInt64.zero;

/**
 * Decodes a ConnectResponse: exactly what `fromBinary(ConnectResponseSchema, bytes)` returns, or
 * throws what it throws, but several times faster for a Dispatch.
 */
export function decodeConnectResponse(bytes: Uint8Array): ConnectResponse {
  return readDispatchResponse(bytes) ?? fromBinary(ConnectResponseSchema, bytes);
}

/**
 * The ConnectResponse in `bytes` if it holds a Dispatch this file reads itself (see the file's
 * comment); undefined for anything else, the library's to decode.
 */
export function readDispatchResponse(bytes: Uint8Array): ConnectResponse | undefined {
  try {
    return readResponse(bytes);
  } catch {
    // Bytes that do not decode: fromBinary says why, in its own words.
    return undefined;
  }
}

function readResponse(bytes: Uint8Array): ConnectResponse | undefined {
  const reader = new BinaryReader(bytes);
  let term = ZERO;
  let dispatch: Dispatch | undefined;
  while (reader.pos < reader.len) {
    switch (readTag(reader)) {
      case RESPONSE.term:
        term = uint64(reader);
        break;
      case RESPONSE.dispatch:
        if (dispatch !== undefined) return undefined;
        dispatch = readDispatch(reader, endOf(reader), new FireStrings(bytes));
        if (dispatch === undefined) return undefined;
        break;
      default:
        return undefined;
    }
  }
  if (dispatch === undefined) return undefined;
  return { $typeName: "shardline.v1.ConnectResponse", term, kind: { case: "dispatch", value: dispatch } };
}

function readDispatch(reader: BinaryReader, end: number, strings: FireStrings): Dispatch | undefined {
  const executions: ExecutionContext[] = [];
  while (reader.pos < end) {
    if (readTag(reader) !== EXECUTIONS) return undefined;
    const execution = readExecution(reader, endOf(reader), strings);
    if (execution === undefined) return undefined;
    executions.push(execution);
  }
  if (reader.pos !== end) return undefined;
  return { $typeName: "shardline.v1.Dispatch", executions };
}

function readExecution(reader: BinaryReader, end: number, strings: FireStrings): ExecutionContext | undefined {
  let executionId = "";
  let job = "";
  let shard = 0;
  let shardCount = 0;
  let shardParameter = "";
  let parameter = "";
  let fireTimeUnixMs = ZERO;
  let attempt = 0;
  let handler = "";
  let timeoutMs = 0;
  let daemon = false;
  let disconnectGraceMs = 0;
  let fencingToken = ZERO;
  let revision = ZERO;
  const traceContext: Record<string, string> = {};
  strings.traceContext.restart();
  let assignment: Assignment | undefined;
  let script: ExecutionContext["script"];
  let http: ExecutionContext["http"];
  let fireOutcome: ExecutionContext["fireOutcome"];
  let kubernetes: ExecutionContext["kubernetes"];
  while (reader.pos < end) {
    switch (readTag(reader)) {
      case CONTEXT.executionId:
        executionId = reader.string(STRICT.executionId);
        break;
      case CONTEXT.job:
        job = strings.job.read(reader, STRICT.job);
        break;
      case CONTEXT.shard:
        shard = reader.uint32();
        break;
      case CONTEXT.shardCount:
        shardCount = reader.uint32();
        break;
      case CONTEXT.shardParameter:
        shardParameter = reader.string(STRICT.shardParameter);
        break;
      case CONTEXT.parameter:
        parameter = strings.parameter.read(reader, STRICT.parameter);
        break;
      case CONTEXT.fireTimeUnixMs:
        fireTimeUnixMs = int64(reader);
        break;
      case CONTEXT.attempt:
        attempt = reader.uint32();
        break;
      case CONTEXT.handler:
        handler = strings.handler.read(reader, STRICT.handler);
        break;
      case CONTEXT.timeoutMs:
        timeoutMs = reader.uint32();
        break;
      case CONTEXT.assignment:
        if (assignment !== undefined) return undefined;
        assignment = readAssignment(reader, endOf(reader), strings);
        if (assignment === undefined) return undefined;
        break;
      case CONTEXT.traceContext:
        if (!readStringEntry(reader, endOf(reader), traceContext, strings.traceContext)) return undefined;
        break;
      case CONTEXT.script:
        if (script !== undefined) return undefined;
        script = fromBinary(ScriptExecutorSchema, reader.bytes(), NESTED_IN_CONTEXT);
        break;
      case CONTEXT.http:
        if (http !== undefined) return undefined;
        http = fromBinary(HttpExecutorSchema, reader.bytes(), NESTED_IN_CONTEXT);
        break;
      case CONTEXT.daemon:
        daemon = reader.bool();
        break;
      case CONTEXT.fireOutcome:
        if (fireOutcome !== undefined) return undefined;
        fireOutcome = fromBinary(FireOutcomeSchema, reader.bytes(), NESTED_IN_CONTEXT);
        break;
      case CONTEXT.kubernetes:
        if (kubernetes !== undefined) return undefined;
        kubernetes = fromBinary(KubernetesExecutorSchema, reader.bytes(), NESTED_IN_CONTEXT);
        break;
      case CONTEXT.disconnectGraceMs:
        disconnectGraceMs = reader.uint32();
        break;
      case CONTEXT.fencingToken:
        fencingToken = uint64(reader);
        break;
      case CONTEXT.revision:
        revision = uint64(reader);
        break;
      default:
        return undefined;
    }
  }
  if (reader.pos !== end) return undefined;
  // Every field, in the order create() sets them.
  const context: ExecutionContext = {
    $typeName: "shardline.v1.ExecutionContext",
    executionId,
    job,
    shard,
    shardCount,
    shardParameter,
    parameter,
    fireTimeUnixMs,
    attempt,
    handler,
    timeoutMs,
    traceContext,
    daemon,
    disconnectGraceMs,
    fencingToken,
    revision,
  };
  // A message field is absent, not undefined, when unset, as in create()'s messages.
  if (assignment !== undefined) context.assignment = assignment;
  if (script !== undefined) context.script = script;
  if (http !== undefined) context.http = http;
  if (fireOutcome !== undefined) context.fireOutcome = fireOutcome;
  if (kubernetes !== undefined) context.kubernetes = kubernetes;
  return context;
}

/**
 * Reads one entry of a map<string, string> into `map`; false for an entry the library reads
 * otherwise (a field that is not the key or the value, which it skips and drops; the key
 * "__proto__", which it defines as an own property).
 */
function readStringEntry(reader: BinaryReader, end: number, map: Record<string, string>, strings: EntryStrings): boolean {
  const entry = strings.next();
  let key = "";
  let value = "";
  while (reader.pos < end) {
    switch (readTag(reader)) {
      case MAP_ENTRY.key:
        key = entry.key.read(reader, STRICT.traceContext);
        break;
      case MAP_ENTRY.value:
        value = entry.value.read(reader, STRICT.traceContext);
        break;
      default:
        return false;
    }
  }
  if (reader.pos !== end || key === "__proto__") return false;
  map[key] = value;
  return true;
}

function readAssignment(reader: BinaryReader, end: number, strings: FireStrings): Assignment | undefined {
  let shard: ShardRef | undefined;
  let term = ZERO;
  let generation = ZERO;
  while (reader.pos < end) {
    switch (readTag(reader)) {
      case ASSIGNMENT.shard:
        if (shard !== undefined) return undefined;
        shard = readShardRef(reader, endOf(reader), strings);
        if (shard === undefined) return undefined;
        break;
      case ASSIGNMENT.term:
        term = uint64(reader);
        break;
      case ASSIGNMENT.generation:
        generation = uint64(reader);
        break;
      default:
        return undefined;
    }
  }
  if (reader.pos !== end) return undefined;
  const assignment: Assignment = { $typeName: "shardline.v1.Assignment", term, generation };
  if (shard !== undefined) assignment.shard = shard;
  return assignment;
}

function readShardRef(reader: BinaryReader, end: number, strings: FireStrings): ShardRef | undefined {
  let job = "";
  let shard = 0;
  while (reader.pos < end) {
    switch (readTag(reader)) {
      case SHARD_REF.job:
        job = strings.job.read(reader, STRICT.shardRefJob);
        break;
      case SHARD_REF.shard:
        shard = reader.uint32();
        break;
      default:
        return undefined;
    }
  }
  if (reader.pos !== end) return undefined;
  return { $typeName: "shardline.v1.ShardRef", job, shard };
}

/**
 * The string a field read last, and where its bytes lie. The executions of one fire repeat its
 * strings (job, parameter, handler, trace context): bytes equal to the last ones are the same
 * string, found by a comparison instead of decoded again into a new one.
 */
class LastString {
  readonly #bytes: Uint8Array;
  #start = 0;
  #length = -1;
  #value = "";

  /** `bytes`: what the reader reads. */
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  /** What reader.string(strict) reads. */
  read(reader: BinaryReader, strict: boolean): string {
    const at = reader.pos;
    const length = reader.uint32();
    const start = reader.pos;
    // The last bytes lie in the buffer, so bytes equal to them do too.
    if (length === this.#length && sameBytes(this.#bytes, start, this.#start, length)) {
      reader.pos = start + length;
      return this.#value;
    }
    reader.pos = at;
    this.#value = reader.string(strict);
    this.#start = start;
    this.#length = length;
    return this.#value;
  }
}

function sameBytes(buf: Uint8Array, a: number, b: number, length: number): boolean {
  for (let i = 0; i < length; i++) {
    if (buf[a + i] !== buf[b + i]) return false;
  }
  return true;
}

/** The last strings of a map's entries, by the entry's place in its map. */
class EntryStrings {
  readonly #bytes: Uint8Array;
  readonly #entries: { key: LastString; value: LastString }[] = [];
  #next = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  /** Starts a message's map: its first entry is compared with the last map's first. */
  restart(): void {
    this.#next = 0;
  }

  next(): { key: LastString; value: LastString } {
    let entry = this.#entries[this.#next];
    if (entry === undefined) {
      entry = { key: new LastString(this.#bytes), value: new LastString(this.#bytes) };
      this.#entries.push(entry);
    }
    this.#next++;
    return entry;
  }
}

/** The strings of one message that repeat from execution to execution. */
class FireStrings {
  /** ExecutionContext.job and its assignment's ShardRef.job: the same job, as a rule. */
  readonly job: LastString;
  readonly parameter: LastString;
  readonly handler: LastString;
  readonly traceContext: EntryStrings;

  /** `bytes`: the message's. */
  constructor(bytes: Uint8Array) {
    this.job = new LastString(bytes);
    this.parameter = new LastString(bytes);
    this.handler = new LastString(bytes);
    this.traceContext = new EntryStrings(bytes);
  }
}

/**
 * The next field's tag, (number << 3) | wire type; 0, which is no field's, for a tag written in
 * more than two bytes: none of the fields read here needs more, and the library's checks of long
 * tags are left to it.
 */
function readTag(reader: BinaryReader): number {
  const start = reader.pos;
  const tag = reader.uint32();
  return reader.pos - start <= 2 ? tag : 0;
}

/**
 * The reader gives a 64-bit integer as the library's decoding puts it in a message: a bigint,
 * wherever BigInt is supported (Node), which is what the generated types say.
 */
function uint64(reader: BinaryReader): bigint {
  return reader.uint64() as bigint;
}

function int64(reader: BinaryReader): bigint {
  return reader.int64() as bigint;
}

/** Reads a length-delimited field's length: where its bytes end. */
function endOf(reader: BinaryReader): number {
  const length = reader.uint32();
  return reader.pos + length;
}
