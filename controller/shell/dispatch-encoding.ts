/**
 * The encoding of Dispatch, the controller's hottest message: a fire of a thousand shards is a
 * thousand ExecutionContexts, and protobuf-es encodes by reflection, field by field, at about
 * 10 us each — the largest part of the controller's CPU per execution. Most of an execution's
 * fields are its fire's (job, parameter, fire time, attempt, revision, executor, trace context)
 * and the same for every shard; only the id, the shard, its parameter, its assignment and its
 * fencing token are its own. So the fire's part is encoded by the library once for a run of
 * executions that share it, and an execution is that part followed by its own: protobuf's
 * encoding of a message is the concatenation of its fields' in any order, so a decoder reads the
 * same ExecutionContext as from toBinary of the whole. Reflection costs about as much for a
 * message of five fields as for one of twenty, so the own part (five scalars and the small
 * Assignment) and the framing around it all (ConnectResponse.term, ConnectResponse.dispatch,
 * Dispatch.executions) are written with the library's BinaryWriter, field numbers read from the
 * generated descriptors, as encodeRepeatedInSlices frames its listings. The test checks the
 * result against toBinary of the whole message over random executions.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { ConnectResponseSchema, DispatchSchema, ExecutionContextSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { AssignmentSchema, ShardRefSchema } from "../../shared/gen/shardline/v1/types_pb.js";
import { EncodedMessage } from "../../shared/grpc/service-definition.js";
import type { ExecutionContext } from "../core/messages.js";
import { assignmentToProto, stateToProto } from "./proto-mapping.js";

type ContextInit = MessageInitShape<typeof ExecutionContextSchema>;

const TERM = ConnectResponseSchema.field.term.number;
const DISPATCH = ConnectResponseSchema.field.dispatch.number;
const EXECUTIONS = DispatchSchema.field.executions.number;
const OWN = {
  executionId: ExecutionContextSchema.field.executionId.number,
  shard: ExecutionContextSchema.field.shard.number,
  shardParameter: ExecutionContextSchema.field.shardParameter.number,
  fencingToken: ExecutionContextSchema.field.fencingToken.number,
  assignment: ExecutionContextSchema.field.assignment.number,
};
const ASSIGNMENT = { shard: AssignmentSchema.field.shard.number, term: AssignmentSchema.field.term.number, generation: AssignmentSchema.field.generation.number };
const SHARD_REF = { job: ShardRefSchema.field.job.number, shard: ShardRefSchema.field.shard.number };

/** An execution's fields that are its fire's, the same for every shard of it. */
function fireFields(e: ExecutionContext): ContextInit {
  return {
    job: e.job,
    shardCount: e.shardCount,
    parameter: e.parameter,
    fireTimeUnixMs: BigInt(e.fireTime),
    attempt: e.attempt,
    handler: e.handler,
    timeoutMs: e.timeoutMs,
    disconnectGraceMs: e.disconnectGraceMs,
    revision: BigInt(e.revision),
    traceContext: e.traceContext,
    ...(e.script === undefined ? {} : { script: e.script }),
    ...(e.http === undefined ? {} : { http: e.http }),
    ...(e.kubernetes === undefined ? {} : { kubernetes: e.kubernetes }),
    daemon: e.daemon === true,
    ...(e.fireOutcome === undefined
      ? {}
      : { fireOutcome: { shards: e.fireOutcome.map((o) => ({ shard: o.shard, state: stateToProto(o.state), executionId: o.executionId, error: o.error ?? "" })) } }),
  };
}

/** An execution's own fields. */
function ownFields(e: ExecutionContext): ContextInit {
  return {
    executionId: e.executionId,
    shard: e.shard,
    shardParameter: e.shardParameter,
    fencingToken: e.fencingToken,
    ...(e.assignment === undefined ? {} : { assignment: assignmentToProto(e.assignment) }),
  };
}

/** The ExecutionContext of an execution, whole: what the agent decodes from encodeDispatch's bytes. */
export function executionToProto(e: ExecutionContext): ContextInit {
  // Two halves with no field in common: their union is the whole, as their encodings' concatenation is.
  return Object.assign(fireFields(e), ownFields(e));
}

/** True when two executions' fire fields are the same values (objects by identity: each fire's trace context and executor are one object). */
function sameFire(a: ExecutionContext, b: ExecutionContext): boolean {
  return (
    a.job === b.job &&
    a.fireTime === b.fireTime &&
    a.attempt === b.attempt &&
    a.shardCount === b.shardCount &&
    a.parameter === b.parameter &&
    a.revision === b.revision &&
    a.handler === b.handler &&
    a.timeoutMs === b.timeoutMs &&
    a.disconnectGraceMs === b.disconnectGraceMs &&
    a.traceContext === b.traceContext &&
    a.script === b.script &&
    a.http === b.http &&
    a.kubernetes === b.kubernetes &&
    a.daemon === b.daemon &&
    a.fireOutcome === b.fireOutcome
  );
}

function encodeContext(init: ContextInit): Uint8Array {
  return toBinary(ExecutionContextSchema, create(ExecutionContextSchema, init));
}

/** ownFields(e), written as toBinary writes them: a field at its default value (0, "") is left out. */
function writeOwnFields(writer: BinaryWriter, e: ExecutionContext): void {
  writer.tag(OWN.executionId, WireType.LengthDelimited).string(e.executionId);
  if (e.shard !== 0) writer.tag(OWN.shard, WireType.Varint).uint32(e.shard);
  if (e.shardParameter !== "") writer.tag(OWN.shardParameter, WireType.LengthDelimited).string(e.shardParameter);
  if (e.fencingToken !== 0n) writer.tag(OWN.fencingToken, WireType.Varint).uint64(e.fencingToken);
  const assignment = e.assignment;
  if (assignment === undefined) return;
  writer.tag(OWN.assignment, WireType.LengthDelimited).fork();
  writer.tag(ASSIGNMENT.shard, WireType.LengthDelimited).fork();
  if (assignment.job !== "") writer.tag(SHARD_REF.job, WireType.LengthDelimited).string(assignment.job);
  if (assignment.shard !== 0) writer.tag(SHARD_REF.shard, WireType.Varint).uint32(assignment.shard);
  writer.join();
  if (assignment.term !== 0) writer.tag(ASSIGNMENT.term, WireType.Varint).uint64(assignment.term);
  if (assignment.generation !== 0) writer.tag(ASSIGNMENT.generation, WireType.Varint).uint64(assignment.generation);
  writer.join();
}

/** ConnectResponse{term, dispatch: {executions}}, encoded: see the file's comment. */
export function encodeDispatch(term: number, executions: readonly ExecutionContext[]): EncodedMessage<typeof ConnectResponseSchema> {
  const writer = new BinaryWriter();
  writer.tag(TERM, WireType.Varint).uint64(term);
  writer.tag(DISPATCH, WireType.LengthDelimited).fork();
  let previous: ExecutionContext | undefined;
  let fire: Uint8Array = new Uint8Array(0);
  for (const execution of executions) {
    if (previous === undefined || !sameFire(previous, execution)) fire = encodeContext(fireFields(execution));
    previous = execution;
    writer.tag(EXECUTIONS, WireType.LengthDelimited).fork().raw(fire);
    writeOwnFields(writer, execution);
    writer.join();
  }
  writer.join();
  const bytes = writer.finish();
  return new EncodedMessage(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}
