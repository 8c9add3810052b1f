import { status, type MethodDefinition, type ServiceDefinition } from "@grpc/grpc-js";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { ConnectResponseSchema } from "../gen/shardline/v1/agent_service_pb.js";
import { decodeConnectResponse } from "./connect-response-decoding.js";
import { checkWireBudget, WireBudgetExceeded } from "./wire-budget.js";

/**
 * What a server-side deserialiser returns for bytes that are not a valid message of the
 * method's input type, or that are over the WireBudget. grpc-js answers a throwing deserialiser
 * with INTERNAL; a stranger's bad bytes are the caller's fault, so the handlers in server.ts
 * answer this with its own code: INVALID_ARGUMENT, or RESOURCE_EXHAUSTED past the budget.
 */
export class MalformedMessage {
  constructor(
    /** Full name of the message type that was expected, e.g. `shardline.v1.ConnectRequest`. */
    readonly typeName: string,
    /** Why decoding failed. */
    readonly cause: unknown,
  ) {}

  /** The status code to answer with. */
  get code(): status {
    return this.cause instanceof WireBudgetExceeded ? this.cause.code : status.INVALID_ARGUMENT;
  }

  /** The status text sent to the peer: the type and the decoder's reason, no stack. */
  get details(): string {
    if (this.cause instanceof WireBudgetExceeded) return this.cause.message;
    const reason = this.cause instanceof Error ? this.cause.message : String(this.cause);
    return `malformed ${this.typeName}: ${reason}`;
  }
}

/** `/package.Service/Method`, the HTTP/2 path of a method. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/**
 * Encodes a message of `schema`, given as a message or its init shape, into a Buffer that grpc-js
 * can frame without another copy.
 */
export function encodeMessage<Desc extends DescMessage>(schema: Desc, message: MessageInitShape<Desc>): Buffer {
  const bytes = toBinary(schema, create(schema, message));
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * A message of `Desc` its sender encoded itself (a hot message framed with the library's writer
 * from parts encoded once), sent as it is: a stream's send takes one in place of the message.
 */
export class EncodedMessage<Desc extends DescMessage = DescMessage> {
  /** Only for the type: an EncodedMessage of one message type does not stand for another. */
  declare readonly schema: Desc;
  constructor(readonly bytes: Buffer) {}
}

/**
 * A serialiser that also accepts bytes already encoded by encodeMessage. Streams and handlers
 * encode at send time, so a message that cannot be encoded fails in its sender's hands instead of
 * ending the call with an INTERNAL the sender never sees.
 */
function serializer(schema: DescMessage): (value: unknown) => Buffer {
  return (value) => {
    if (value instanceof Uint8Array) {
      return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    }
    return encodeMessage(schema, value as MessageInitShape<DescMessage>);
  };
}

/**
 * Server side: never throws; a bad request, or one over the wire budget (checked first, so that
 * its cost is bounded before any of it is decoded), becomes a MalformedMessage for the handler
 * to reject.
 */
function requestDeserializer(schema: DescMessage): (bytes: Buffer) => unknown {
  return (bytes) => {
    try {
      checkWireBudget(schema, bytes);
      return fromBinary(schema, bytes);
    } catch (cause) {
      return new MalformedMessage(schema.typeName, cause);
    }
  };
}

/**
 * Decoders of hot responses that the library's reflection makes an agent's largest cost. Each
 * returns exactly what fromBinary returns, and throws where it throws.
 */
const responseDecoders = new Map<DescMessage, (bytes: Uint8Array) => unknown>([[ConnectResponseSchema, decodeConnectResponse]]);

/** Client side: a throw here makes grpc-js cancel the call with INTERNAL, which is right for a server sending garbage. */
function responseDeserializer(schema: DescMessage): (bytes: Buffer) => unknown {
  return responseDecoders.get(schema) ?? ((bytes) => fromBinary(schema, bytes));
}

/** The grpc-js definition of one method. */
export function methodDefinition(method: DescMethod): MethodDefinition<unknown, unknown> {
  return {
    path: methodPath(method),
    originalName: method.name,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: serializer(method.input),
    requestDeserialize: requestDeserializer(method.input),
    responseSerialize: serializer(method.output),
    responseDeserialize: responseDeserializer(method.output),
  };
}

/**
 * The grpc-js service definition of a protobuf-es service descriptor, keyed by each method's
 * localName (`connect`, `listJobs`), with paths such as `/shardline.v1.AgentService/Connect`.
 *
 * Serialisers take a message, its init shape, or bytes from encodeMessage. The request
 * deserialiser never throws: bytes that do not decode yield a MalformedMessage (see there).
 * Definitions are cached per descriptor.
 */
export function serviceDefinition(service: DescService): ServiceDefinition {
  let definition = cache.get(service);
  if (definition === undefined) {
    const methods: Record<string, MethodDefinition<unknown, unknown>> = {};
    for (const method of service.methods) methods[method.localName] = methodDefinition(method);
    definition = methods;
    cache.set(service, definition);
  }
  return definition;
}

const cache = new WeakMap<DescService, ServiceDefinition>();
