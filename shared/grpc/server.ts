import {
  Server,
  ServerCredentials,
  status,
  type Metadata,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedHandleCall,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { create, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { ShardlineError } from "../errors.js";
import { certificateIdentities } from "../security/tls.js";
import { serverKeepaliveOptions, type KeepaliveOptions } from "./keepalive.js";
import { DEFAULT_MAX_QUEUED, OutboundQueue, serverMessageStream, type MessageStream } from "./message-stream.js";
import { MalformedMessage, encodeMessage, methodPath, serviceDefinition } from "./service-definition.js";
import { isInternalFailure, toGrpcStatus } from "./status.js";

/**
 * Default of ServerOptions.maxReceiveMessageBytes: 4 MiB, grpc-js's own default, stated here so
 * that the bound is Shardline's choice and not a library's.
 */
export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Options of createServer. */
export interface ServerOptions {
  /** Keepalive; see KeepaliveOptions for the defaults. */
  keepalive?: KeepaliveOptions;
  /**
   * Largest request accepted, in bytes; equivalent to GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH
   * (`grpc.max_receive_message_length`). grpc-js checks each message's length prefix before
   * buffering it, and answers a larger one with RESOURCE_EXHAUSTED ("Received message larger
   * than max"), which ends the call; the handler sees the call cancelled. Default
   * DEFAULT_MAX_RECEIVE_MESSAGE_BYTES.
   */
  maxReceiveMessageBytes?: number;
}

/** What a handler knows about the call it serves. */
export interface CallContext {
  /** The client's address, e.g. `127.0.0.1:53412`. */
  readonly peer: string;
  /** The request headers. */
  readonly metadata: Metadata;
  /** The method's path, e.g. `/shardline.v1.AdminService/ListJobs`. */
  readonly method: string;
  /**
   * Who the client's certificate says it is, when the server requires client certificates
   * (mutual TLS) and verified the client's: the subject's common name, then its DNS and URI
   * subject alternative names (see certificateIdentities in shared/security/tls.ts). Undefined
   * over plaintext or without a verified client certificate.
   */
  readonly peerIdentities?: readonly string[];
  /**
   * Aborts when the call ends before the handler has: the client cancelled, its deadline passed,
   * the connection dropped, or (for a bidi stream) the stream closed.
   */
  readonly signal: AbortSignal;
}

/**
 * The sending side of a server-streaming call. Backpressure works as on MessageStream: send()
 * queues while the transport pushes back, and returns false once maxQueued messages wait.
 */
export interface ServerStreamWriter<Out extends DescMessage> {
  /** Sends or queues a message; false, and nothing sent, when full or the call is over. */
  send(message: MessageInitShape<Out>): boolean;
  /** Messages waiting for the transport. */
  readonly queued: number;
  /** Resolves once the queue is empty, or the call is over. */
  drained(): Promise<void>;
  /** True once the call is over; the handler should return. */
  readonly closed: boolean;
}

/**
 * A unary response the handler encoded itself, sent as it is. encodeRepeatedInSlices makes one
 * for a response too large to encode in one go without holding up the event loop.
 */
export class EncodedResponse<O extends DescMessage = DescMessage> {
  /** Only for the type: an EncodedResponse of one message type does not stand for another. */
  declare readonly schema: O;
  constructor(readonly bytes: Buffer) {}
}

/** Messages encoded between two turns of the event loop by encodeRepeatedInSlices. */
const ENCODE_SLICE = 500;

/**
 * Encodes a response of type `output` whose bulk is the repeated message field `field`, made from
 * `items` a slice at a time with the event loop let run in between: protobuf-es takes about
 * 10 us a message here, so ten thousand executions encoded at once would hold up timers, streams
 * and other calls for a tenth of a second. The response's other fields are left unset.
 */
export async function encodeRepeatedInSlices<O extends DescMessage, E extends DescMessage, T>(
  output: O,
  field: string,
  element: E,
  items: readonly T[],
  toElement: (item: T) => MessageInitShape<E>,
): Promise<EncodedResponse<O>> {
  const desc = output.fields.find((f) => f.localName === field);
  if (desc?.fieldKind !== "list" || desc.listKind !== "message" || desc.message.typeName !== element.typeName) {
    throw new ShardlineError("internal", `${output.typeName}.${field} is not a repeated ${element.typeName} field`);
  }
  const writer = new BinaryWriter();
  for (let i = 0; i < items.length; i++) {
    if (i > 0 && i % ENCODE_SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
    writer.tag(desc.number, WireType.LengthDelimited).bytes(toBinary(element, create(element, toElement(items[i]!))));
  }
  const bytes = writer.finish();
  return new EncodedResponse<O>(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

/**
 * A unary method: resolve with the response (or an EncodedResponse), throw a ShardlineError to
 * fail with its status.
 */
export type UnaryImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CallContext,
) => Promise<MessageInitShape<O> | EncodedResponse<O>>;

/**
 * A server-streaming method: send through the writer; resolving ends the call with OK after the
 * queued messages, throwing ends it with the error's status.
 */
export type ServerStreamingImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  stream: ServerStreamWriter<O>,
  context: CallContext,
) => Promise<void>;

/** A bidi method: set up listeners on the stream and return; the stream lives on its own. */
export type BidiStreamingImpl<I extends DescMessage, O extends DescMessage> = (
  stream: MessageStream<I, O>,
  context: CallContext,
) => void;

/** The implementation of one method, by its kind. Client-streaming methods are not supported. */
export type MethodImpl<M> = M extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage }
  ? UnaryImpl<I, O>
  : M extends { methodKind: "server_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? ServerStreamingImpl<I, O>
    : M extends { methodKind: "bidi_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? BidiStreamingImpl<I, O>
      : never;

/** The implementation of a service, typed from its generated descriptor, keyed by localName. */
export type ServiceImpl<S extends DescService> = {
  [K in keyof S["method"]]: MethodImpl<S["method"][K]>;
};

/** Default of AddServiceOptions.maxConcurrentCalls. */
export const DEFAULT_MAX_CONCURRENT_CALLS = 64;

/** Options of addService. */
export interface AddServiceOptions {
  /** Bound of each stream's send queue; default 10,000 messages. */
  maxQueued?: number;
  /**
   * How many unary calls of the service are served at once, running or waiting to start (they
   * start one per event-loop turn, so that streams' messages are read in between: see
   * CallAdmission). A call past it is answered at once with RESOURCE_EXHAUSTED and a message
   * naming the limit, without reaching the implementation: a flood of calls then costs one status
   * each rather than a backlog of work that starves everything else the process does. Streaming
   * calls are not counted. Default 64.
   */
  maxConcurrentCalls?: number;
  /**
   * Called with every failure the client only sees as INTERNAL (a non-ShardlineError thrown by a
   * handler, a response that cannot be encoded, a throwing stream listener), so it can be logged.
   * Default: process.emitWarning.
   */
  onError?: (error: unknown, method: string) => void;
}

/** A grpc-js server with Shardline's keepalive and message size settings. */
export function createServer(options: ServerOptions = {}): Server {
  const maxReceiveMessageBytes = options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES;
  if (!Number.isSafeInteger(maxReceiveMessageBytes) || maxReceiveMessageBytes < 1) {
    throw ShardlineError.invalid("maxReceiveMessageBytes", maxReceiveMessageBytes, "a number of bytes of at least 1");
  }
  return new Server({
    ...serverKeepaliveOptions(options.keepalive),
    "grpc.max_receive_message_length": maxReceiveMessageBytes,
  });
}

/**
 * Registers a service implementation. Methods left out answer UNIMPLEMENTED. A request whose
 * bytes do not decode is answered with INVALID_ARGUMENT without reaching the implementation.
 */
export function addService<S extends DescService>(
  server: Server,
  service: S,
  impl: Partial<ServiceImpl<S>>,
  options: AddServiceOptions = {},
): void {
  const handlers: Record<string, UntypedHandleCall> = {};
  const onError = options.onError ?? defaultOnError;
  const implementations = impl as Record<string, unknown>;
  const admission = new CallAdmission(service.typeName, options.maxConcurrentCalls ?? DEFAULT_MAX_CONCURRENT_CALLS);
  for (const method of service.methods) {
    const fn = implementations[method.localName];
    if (typeof fn !== "function") continue;
    const report = (error: unknown): void => onError(error, method.name);
    switch (method.methodKind) {
      case "unary":
        handlers[method.localName] = unaryHandler(method, fn as UnaryImpl<DescMessage, DescMessage>, admission, report);
        break;
      case "server_streaming":
        handlers[method.localName] = serverStreamingHandler(
          method,
          fn as ServerStreamingImpl<DescMessage, DescMessage>,
          options.maxQueued ?? DEFAULT_MAX_QUEUED,
          report,
        );
        break;
      case "bidi_streaming":
        handlers[method.localName] = bidiHandler(method, fn as BidiStreamingImpl<DescMessage, DescMessage>, options.maxQueued, report);
        break;
      default:
        throw new ShardlineError("internal", `${method.toString()}: client-streaming methods are not supported`);
    }
  }
  server.addService(serviceDefinition(service), handlers);
}

/**
 * Binds a listener and resolves the bound port (useful with port 0): plaintext, or TLS with
 * `credentials` (TlsCertificates.serverCredentials). Rejects with an "unavailable"
 * ShardlineError when the address cannot be bound.
 */
export function listen(server: Server, hostPort: string, credentials: ServerCredentials = ServerCredentials.createInsecure()): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(hostPort, credentials, (error, port) => {
      if (error) {
        reject(new ShardlineError("unavailable", `cannot listen on ${hostPort}: ${error.message}`, {}, { cause: error }));
      } else {
        resolve(port);
      }
    });
  });
}

/**
 * Stops accepting calls and waits up to graceMs for the open ones to finish, then cuts them.
 * Long-lived streams do not finish on their own: close them first for a clean goodbye.
 */
export function shutdown(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Admits the unary calls of one service: at most `limit` are served (running or waiting their
 * turn) at once, and a call past it is turned away; the admitted ones start one per turn of the
 * event loop, first come first served.
 *
 * Why one per turn: grpc-js hands over every call of a socket read at once, so a burst of admin
 * calls would otherwise run back to back, tens of milliseconds of work or more on a busy machine,
 * while an agent's heartbeat waits unread in its socket (the agent's lease runs from when it sent
 * the heartbeat until the ack arrives). Between two starts, the event loop reads every socket
 * that has data and the controller's driver sends what the agents' messages decided, so a
 * heartbeat waits behind one call's synchronous part at most, never behind a queue of them.
 */
class CallAdmission {
  #serving = 0;
  readonly #waiting: (() => void)[] = [];
  #turnArmed = false;

  constructor(
    private readonly service: string,
    readonly limit: number,
  ) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw ShardlineError.invalid("maxConcurrentCalls", limit, "an integer of at least 1");
  }

  /** Takes a place, or says why there is none. */
  enter(): { code: status; details: string } | undefined {
    if (this.#serving >= this.limit) {
      return {
        code: status.RESOURCE_EXHAUSTED,
        details: `${this.service} is already serving ${this.limit} calls, its limit of calls at once (fixed: no flag raises it); retry after a backoff`,
      };
    }
    this.#serving++;
    return undefined;
  }

  /** Runs `start` on a later turn of the event loop, after the calls admitted before it have started. */
  start(start: () => void): void {
    this.#waiting.push(start);
    this.#armTurn();
  }

  leave(): void {
    this.#serving--;
  }

  #armTurn(): void {
    if (this.#turnArmed || this.#waiting.length === 0) return;
    this.#turnArmed = true;
    setImmediate(() => {
      this.#turnArmed = false;
      const next = this.#waiting.shift();
      // Armed again first: a start that throws must not stall the calls behind it.
      this.#armTurn();
      next?.();
    });
  }
}

function unaryHandler(
  method: DescMethod,
  impl: UnaryImpl<DescMessage, DescMessage>,
  admission: CallAdmission,
  report: (error: unknown) => void,
): UntypedHandleCall {
  return (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
    const request = call.request;
    if (request instanceof MalformedMessage) {
      callback({ code: request.code, details: request.details });
      return;
    }
    const refused = admission.enter();
    if (refused !== undefined) {
      callback(refused);
      return;
    }
    const { context, done } = callContext(call, method);
    const run = async (): Promise<Buffer> => {
      await new Promise<void>((resolve) => admission.start(resolve));
      // The client gave up while the call waited its turn: nothing is done for it.
      context.signal.throwIfAborted();
      const response = await impl(request as MessageShape<DescMessage>, context);
      return response instanceof EncodedResponse ? response.bytes : encodeMessage(method.output, response);
    };
    run().then(
      (response) => {
        admission.leave();
        done();
        callback(null, response);
      },
      (error: unknown) => {
        admission.leave();
        done();
        if (isInternalFailure(error)) report(error);
        callback(toGrpcStatus(error));
      },
    );
  };
}

function serverStreamingHandler(
  method: DescMethod,
  impl: ServerStreamingImpl<DescMessage, DescMessage>,
  maxQueued: number,
  report: (error: unknown) => void,
): UntypedHandleCall {
  return (call: ServerWritableStream<unknown, unknown>) => {
    const request = call.request;
    if (request instanceof MalformedMessage) {
      call.emit("error", { code: request.code, details: request.details });
      return;
    }
    const { context, done } = callContext(call, method);
    const writer = new QueueWriter(call, method.output, maxQueued);
    const run = async (): Promise<void> => impl(request as MessageShape<DescMessage>, writer, context);
    run().then(
      () => {
        done();
        writer.finish(() => call.end());
      },
      (error: unknown) => {
        done();
        if (isInternalFailure(error)) report(error);
        writer.finish(() => call.emit("error", toGrpcStatus(error)));
      },
    );
  };
}

function bidiHandler(
  method: DescMethod,
  impl: BidiStreamingImpl<DescMessage, DescMessage>,
  maxQueued: number | undefined,
  report: (error: unknown) => void,
): UntypedHandleCall {
  return (call: ServerDuplexStream<unknown, unknown>) => {
    const stream = serverMessageStream(call, method.output, { maxQueued, onError: report });
    const { context, abort } = callContext(call, method);
    // The signal follows the stream, not the handler, which returns right after setting up.
    stream.onClose((closed) => abort(new ShardlineError("unavailable", `the stream closed: ${closed.details}`)));
    try {
      impl(stream, context);
    } catch (error) {
      report(error);
      const failed = toGrpcStatus(error);
      stream.close(failed.code, failed.details);
    }
  };
}

/** The writer handed to a server-streaming handler. */
class QueueWriter<Out extends DescMessage> implements ServerStreamWriter<Out> {
  readonly #queue: OutboundQueue;
  #waiters: (() => void)[] = [];
  #closed = false;

  constructor(
    private readonly call: ServerWritableStream<unknown, unknown>,
    private readonly output: Out,
    maxQueued: number,
  ) {
    this.#queue = new OutboundQueue(call, maxQueued, () => this.#wake());
    call.once("cancelled", () => this.#stop());
  }

  get queued(): number {
    return this.#queue.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(message: MessageInitShape<Out>): boolean {
    if (!this.#queue.open) return false;
    return this.#queue.push(encodeMessage(this.output, message));
  }

  drained(): Promise<void> {
    if (this.#closed || this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** The handler is done: end the call once the queue is out. */
  finish(end: () => void): void {
    if (this.#closed) return;
    this.#queue.end(end);
  }

  #stop(): void {
    this.#closed = true;
    this.#queue.stop();
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }
}

interface LiveContext {
  context: CallContext;
  /** The handler finished: a later end of the call is no longer news to it. */
  done: () => void;
  /** Aborts the signal, unless the handler finished. */
  abort: (reason: ShardlineError) => void;
}

/** The parts of any grpc-js server call that a CallContext needs. */
type SurfaceCall = Pick<ServerUnaryCall<unknown, unknown>, "getPeer" | "metadata" | "getAuthContext"> & {
  once(event: "cancelled", listener: () => void): unknown;
};

function callContext(call: SurfaceCall, method: DescMethod): LiveContext {
  const controller = new AbortController();
  let finished = false;
  const abort = (reason: ShardlineError): void => {
    if (!finished && !controller.signal.aborted) controller.abort(reason);
  };
  // grpc-js also emits 'cancelled' after a normal status; by then the handler has finished.
  call.once("cancelled", () => abort(new ShardlineError("unavailable", "the call was cancelled")));
  // Read while the call is live: once it ends, its connection may be gone, and its certificate with it.
  const peerIdentities = verifiedPeerIdentities(call);
  return {
    context: {
      peer: call.getPeer(),
      metadata: call.metadata,
      method: methodPath(method),
      signal: controller.signal,
      ...(peerIdentities === undefined ? {} : { peerIdentities }),
    },
    done: () => {
      finished = true;
    },
    abort,
  };
}

/** The identities of the client's certificate, when grpc-js verified one (it reports none otherwise). */
function verifiedPeerIdentities(call: SurfaceCall): readonly string[] | undefined {
  const certificate = call.getAuthContext?.()?.sslPeerCertificate;
  if (certificate === undefined) return undefined;
  return Object.freeze(certificateIdentities(certificate));
}

function defaultOnError(error: unknown, method: string): void {
  const warning = error instanceof Error ? error : new Error(String(error));
  process.emitWarning(warning, { code: "SHARDLINE_GRPC_HANDLER", detail: `in ${method}` });
}
