/**
 * Shardline's gRPC adapter: grpc-js servers and clients typed from the protobuf-es descriptors
 * in shared/gen, with ShardlineError mapped to gRPC status codes in both directions and bounded,
 * backpressured message streams.
 */
export { serviceDefinition, MalformedMessage } from "./service-definition.js";
export { checkWireBudget, DEFAULT_WIRE_BUDGET, WireBudgetExceeded, type WireBudget } from "./wire-budget.js";
export { toGrpcStatus, fromGrpcError, fromGrpcCode, isInternalFailure, type GrpcStatus } from "./status.js";
export {
  CLIENT_KEEPALIVE_DEFAULTS,
  SERVER_KEEPALIVE_DEFAULTS,
  clientKeepaliveOptions,
  serverKeepaliveOptions,
  type KeepaliveOptions,
} from "./keepalive.js";
export { DEFAULT_MAX_QUEUED, type MessageStream, type MessageStreamOptions } from "./message-stream.js";
export {
  createServer,
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  addService,
  encodeRepeatedInSlices,
  EncodedResponse,
  DEFAULT_MAX_CONCURRENT_CALLS,
  listen,
  shutdown,
  type ServerOptions,
  type AddServiceOptions,
  type CallContext,
  type ServerStreamWriter,
  type ServiceImpl,
  type MethodImpl,
  type UnaryImpl,
  type ServerStreamingImpl,
  type BidiStreamingImpl,
} from "./server.js";
export {
  createClient,
  DEFAULT_DEADLINE_MS,
  type Client,
  type ClientMethod,
  type ClientOptions,
  type CallOptions,
  type StreamOptions,
  type UnaryFn,
  type ServerStreamingFn,
  type BidiStreamingFn,
} from "./client.js";
