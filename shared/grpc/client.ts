import {
  Client as GrpcClient,
  Metadata,
  credentials,
  status,
  type CallOptions as GrpcCallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientReadableStream,
  type MethodDefinition,
  type ServiceError,
} from "@grpc/grpc-js";
import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { clientKeepaliveOptions, type KeepaliveOptions } from "./keepalive.js";
import { clientMessageStream, type MessageStream } from "./message-stream.js";
import { encodeMessage, serviceDefinition } from "./service-definition.js";
import { fromGrpcError, type GrpcStatus } from "./status.js";

/** Options of createClient. */
export interface ClientOptions {
  /** Keepalive; see KeepaliveOptions for the defaults. */
  keepalive?: KeepaliveOptions;
  /** Deadline of unary calls that set none; default 30 s. Streams have no default deadline. */
  deadlineMs?: number;
  /** Request headers sent with every call (e.g. `authorization`); a call's own metadata adds to them. */
  metadata?: Record<string, string>;
  /** Largest response accepted, in bytes (`grpc.max_receive_message_length`). Default 4 MiB. */
  maxReceiveMessageBytes?: number;
  /**
   * Longest wait between reconnection attempts (`grpc.max_reconnect_backoff_ms`). Default 5 s,
   * not grpc-js's 120 s: an agent must be back within a lease or two of the controller's return.
   */
  maxReconnectBackoffMs?: number;
  /**
   * The channel's security: TLS with TlsCertificates.channelCredentials (shared/security/tls.ts).
   * Default plaintext.
   */
  credentials?: ChannelCredentials;
}

/** Options of one call. */
export interface CallOptions {
  /** Fail with "unavailable" when the call takes longer. */
  deadlineMs?: number;
  /** Cancels the call; the call then rejects (or the stream ends) with the signal's reason. */
  signal?: AbortSignal;
  /** Request headers, e.g. W3C trace context. */
  metadata?: Record<string, string>;
}

/** Options of a bidi call. */
export interface StreamOptions extends CallOptions {
  /** Bound of the send queue; default 10,000 messages. */
  maxQueued?: number;
  /** Called with an exception thrown by a stream listener; default process.emitWarning. */
  onError?: (error: unknown) => void;
}

/** A unary method: resolves with the response, rejects with a ShardlineError. */
export type UnaryFn<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => Promise<MessageShape<O>>;

/**
 * A server-streaming method. The call starts when iteration starts; leaving the loop early
 * cancels it. A failed call throws a ShardlineError from the loop.
 */
export type ServerStreamingFn<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => AsyncIterable<MessageShape<O>>;

/** A bidi method: opens the stream at once; responses (O) arrive, requests (I) are sent. */
export type BidiStreamingFn<I extends DescMessage, O extends DescMessage> = (options?: StreamOptions) => MessageStream<O, I>;

/** The client function of one method, by its kind. Client-streaming methods are not supported. */
export type ClientMethod<M> = M extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage }
  ? UnaryFn<I, O>
  : M extends { methodKind: "server_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? ServerStreamingFn<I, O>
    : M extends { methodKind: "bidi_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? BidiStreamingFn<I, O>
      : never;

/** A client of a service, typed from its generated descriptor: one function per method's localName. */
export type Client<S extends DescService> = {
  [K in keyof S["method"]]: ClientMethod<S["method"][K]>;
} & {
  /** Closes the channel; open calls are cancelled. */
  close(): void;
};

/** Default deadline of unary calls. */
export const DEFAULT_DEADLINE_MS = 30_000;

/**
 * A client of `service` at `address` (`host:port`), over plaintext or `options.credentials`. The channel
 * connects lazily and reconnects by itself; each call fails fast with "unavailable" while the
 * server cannot be reached.
 */
export function createClient<S extends DescService>(service: S, address: string, options: ClientOptions = {}): Client<S> {
  const channelOptions: ChannelOptions = {
    ...clientKeepaliveOptions(options.keepalive),
    "grpc.max_reconnect_backoff_ms": options.maxReconnectBackoffMs ?? 5_000,
    "grpc.initial_reconnect_backoff_ms": Math.min(250, options.maxReconnectBackoffMs ?? 250),
    ...(options.maxReceiveMessageBytes === undefined
      ? {}
      : { "grpc.max_receive_message_length": options.maxReceiveMessageBytes }),
  };
  const raw = new GrpcClient(address, options.credentials ?? credentials.createInsecure(), channelOptions);
  const definition = serviceDefinition(service);
  const defaultDeadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
  const base = options.metadata ?? {};
  const client: Record<string, unknown> = { close: () => raw.close() };
  for (const method of service.methods) {
    const def = definition[method.localName] as MethodDefinition<unknown, unknown>;
    switch (method.methodKind) {
      case "unary":
        client[method.localName] = unary(raw, def, method, defaultDeadlineMs, base);
        break;
      case "server_streaming":
        client[method.localName] = serverStreaming(raw, def, method, base);
        break;
      case "bidi_streaming":
        client[method.localName] = bidi(raw, def, method, base);
        break;
      default:
        // Not in Shardline's contract; left out rather than half-supported.
        break;
    }
  }
  return client as Client<S>;
}

function unary(
  raw: GrpcClient,
  def: MethodDefinition<unknown, unknown>,
  method: DescMethod,
  defaultDeadlineMs: number,
  base: Readonly<Record<string, string>>,
): UnaryFn<DescMessage, DescMessage> {
  return (request, options = {}) =>
    new Promise((resolve, reject) => {
      const { signal } = options;
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const bytes = encodeMessage(method.input, request);
      const callOptions = { deadline: Date.now() + (options.deadlineMs ?? defaultDeadlineMs) };
      const onAbort = (): void => call.cancel();
      const call = raw.makeUnaryRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize,
        bytes,
        metadataOf(options, base),
        callOptions,
        (error: ServiceError | null, response?: unknown) => {
          signal?.removeEventListener("abort", onAbort);
          if (signal?.aborted) reject(signal.reason);
          else if (error) reject(fromGrpcError(error));
          else resolve(response as MessageShape<DescMessage>);
        },
      );
      signal?.addEventListener("abort", onAbort, { once: true });
    });
}

function serverStreaming(
  raw: GrpcClient,
  def: MethodDefinition<unknown, unknown>,
  method: DescMethod,
  base: Readonly<Record<string, string>>,
): ServerStreamingFn<DescMessage, DescMessage> {
  return (request, options = {}) => ({
    [Symbol.asyncIterator]: () => {
      options.signal?.throwIfAborted();
      const bytes = encodeMessage(method.input, request);
      const call = raw.makeServerStreamRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize,
        bytes,
        metadataOf(options, base),
        grpcCallOptions(options),
      );
      return new ResponseIterator<MessageShape<DescMessage>>(call, options.signal);
    },
  });
}

function bidi(
  raw: GrpcClient,
  def: MethodDefinition<unknown, unknown>,
  method: DescMethod,
  base: Readonly<Record<string, string>>,
): BidiStreamingFn<DescMessage, DescMessage> {
  return (options = {}) => {
    const { signal } = options;
    const call = raw.makeBidiStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, metadataOf(options, base), grpcCallOptions(options));
    const stream = clientMessageStream<DescMessage, DescMessage>(call, method.input, {
      maxQueued: options.maxQueued,
      onError: options.onError,
    });
    if (signal) {
      const onAbort = (): void => stream.close(status.CANCELLED, `aborted: ${String(signal.reason)}`);
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener("abort", onAbort, { once: true });
        stream.onClose(() => signal.removeEventListener("abort", onAbort));
      }
    }
    return stream;
  };
}

/** How many responses a server stream buffers before it stops reading (and the server's sends queue up). */
const RESPONSE_BUFFER = 64;

/**
 * Iterates a server stream's responses. Written by hand rather than with the Readable's own
 * iterator: grpc-js ends the Readable before it reports an error status, and leaving the loop
 * must cancel the call, which destroying the Readable does not.
 */
class ResponseIterator<T> implements AsyncIterator<T> {
  #buffer: T[] = [];
  #waiting: { resolve: (result: IteratorResult<T>) => void; reject: (error: unknown) => void } | undefined;
  #status: GrpcStatus | undefined;
  #outcome: { error: unknown } | undefined;
  #paused = false;

  constructor(
    private readonly call: ClientReadableStream<unknown>,
    private readonly signal: AbortSignal | undefined,
  ) {
    call.on("data", (message: T) => this.#onMessage(message));
    // Every non-OK status is also emitted as 'error'; 'status' carries it.
    call.on("error", () => {});
    call.once("status", (received: GrpcStatus) => {
      this.#status = received;
    });
    // 'end' follows the last message and the status, so no message is lost to an early error.
    call.once("end", () => {
      const received = this.#status ?? { code: status.OK, details: "OK" };
      this.#settle(received.code === status.OK ? undefined : fromGrpcError(received));
    });
    signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#buffer.length > 0) {
      const value = this.#buffer.shift() as T;
      if (this.#paused && this.#buffer.length < RESPONSE_BUFFER / 2) {
        this.#paused = false;
        this.call.resume();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#outcome) {
      const { error } = this.#outcome;
      return error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.#settle(undefined);
    this.call.cancel();
    this.#buffer = [];
    return Promise.resolve({ value: undefined, done: true });
  }

  #onMessage(message: T): void {
    if (this.#outcome) return;
    const waiting = this.#waiting;
    if (waiting) {
      this.#waiting = undefined;
      waiting.resolve({ value: message, done: false });
      return;
    }
    this.#buffer.push(message);
    if (!this.#paused && this.#buffer.length >= RESPONSE_BUFFER) {
      this.#paused = true;
      this.call.pause();
    }
  }

  readonly #onAbort = (): void => {
    this.#settle(this.signal?.reason);
    this.#buffer = [];
    this.call.cancel();
  };

  #settle(error: unknown): void {
    if (this.#outcome) return;
    this.#outcome = { error };
    this.signal?.removeEventListener("abort", this.#onAbort);
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (!waiting) return;
    if (error === undefined) waiting.resolve({ value: undefined, done: true });
    else waiting.reject(error);
  }
}

function metadataOf(options: CallOptions, base: Readonly<Record<string, string>>): Metadata {
  const metadata = new Metadata();
  for (const [key, value] of Object.entries({ ...base, ...options.metadata })) metadata.set(key, value);
  return metadata;
}

function grpcCallOptions(options: CallOptions): GrpcCallOptions {
  return options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
}
