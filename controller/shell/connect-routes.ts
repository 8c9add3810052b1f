import type { IncomingMessage, ServerResponse } from "node:http";
import { fromBinary, type DescMessage, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createConnectRouter, createContextKey, createContextValues, type HandlerContext } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { Metadata, status } from "@grpc/grpc-js";
import { ShardlineError, type ErrorCode } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import {
  type CallContext,
  checkWireBudget,
  DEFAULT_MAX_QUEUED,
  DEFAULT_WIRE_BUDGET,
  EncodedResponse,
  isInternalFailure,
  type ServerStreamWriter,
  WireBudgetExceeded,
} from "../../shared/grpc/index.js";

/**
 * The AdminService over the Connect protocol (https://connectrpc.com/docs/protocol), on the
 * controller's HTTP port: `POST /shardline.v1.AdminService/<Method>` with a JSON body
 * (`content-type: application/json`, protobuf's JSON mapping) or a binary one
 * (`application/proto`); Watch and WatchEvents as Connect server streams (`application/connect+json` or
 * `application/connect+proto`). Any HTTP client in any language can call it.
 *
 * There is one implementation: these routes call the very object the gRPC server was given
 * (authorizedAdmin(followingAdmin(...))), with a CallContext made from the HTTP request, so the
 * tokens and roles, the rate limit and the follower's answer are the gRPC port's own. The calls
 * at once are counted by an AdminCallLimit shared with the gRPC port, and a request is held to
 * the gRPC port's size and wire budget. Errors keep their ShardlineError code (as a Connect code:
 * `invalid_argument`, `not_found`, `unavailable`, ...) and their text.
 */

/** Where the AdminService's routes start: `/shardline.v1.AdminService/`. */
export const ADMIN_ROUTE_PREFIX = `/${AdminService.typeName}/`;

/** The response header in which a follower names the leader's gRPC address (the gRPC port's trailer of the same name). */
export const LEADER_HEADER = "shardline-leader";

/** The `domain` of the google.rpc.ErrorInfo detail an error's details travel in. */
export const ERROR_INFO_DOMAIN = "shardline.dev";

/**
 * The unary admin calls served at once over both ports, running or waiting their turn: the gRPC
 * port's limit of calls at once (addService's maxConcurrentCalls), shared with the HTTP port so
 * that a flood over either costs one refusal per call past it, never a backlog. The gRPC port
 * admits its own calls first (addService); `counting` makes them count here too.
 */
export class AdminCallLimit {
  #serving = 0;

  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw ShardlineError.invalid("maxConcurrentCalls", limit, "an integer of at least 1");
  }

  /** The calls being served now. */
  get serving(): number {
    return this.#serving;
  }

  /** Takes a place, or throws the refusal the gRPC port words the same way. */
  enter(): void {
    if (this.#serving >= this.limit) {
      throw new ShardlineError(
        "resource-exhausted",
        `${AdminService.typeName} is already serving ${this.limit} calls, its limit of calls at once (fixed: no flag raises it); retry after a backoff`,
      );
    }
    this.#serving++;
  }

  leave(): void {
    this.#serving--;
  }

  /** `impl` with each unary method counted while it runs; the streaming ones are not counted (as on the gRPC port). */
  counting(impl: Record<string, unknown>): Record<string, unknown> {
    const counted: Record<string, unknown> = { ...impl };
    for (const method of AdminService.methods) {
      const fn = impl[method.localName];
      if (method.methodKind !== "unary" || typeof fn !== "function") continue;
      counted[method.localName] = async (...args: unknown[]): Promise<unknown> => {
        this.enter();
        try {
          return await (fn as (...a: unknown[]) => unknown)(...args);
        } finally {
          this.leave();
        }
      };
    }
    return counted;
  }
}

/** Options of adminConnectRoutes. */
export interface AdminConnectRoutesOptions {
  /** The AdminService as the gRPC port serves it: authorizedAdmin(followingAdmin(...)), uncounted. */
  admin: Record<string, unknown>;
  /** The calls at once, shared with the gRPC port. */
  limit: AdminCallLimit;
  /** The largest request accepted, in bytes: the gRPC port's DEFAULT_MAX_RECEIVE_MESSAGE_BYTES. */
  maxReceiveMessageBytes: number;
  /** Aborted when the servers halt: watches under way end with "the controller is shutting down". */
  shutdownSignal: AbortSignal;
  /** Failures the caller only sees as `internal`, to be logged. */
  onError: (error: unknown, method: string) => void;
}

const PEER = createContextKey<string>("");

/**
 * A request listener for the paths under ADMIN_ROUTE_PREFIX (the HTTP server hands it only
 * those). A path that names no method is answered 404 like any unknown path.
 */
export function adminConnectRoutes(options: AdminConnectRoutesOptions): (request: IncomingMessage, response: ServerResponse) => void {
  const { admin, limit, maxReceiveMessageBytes, onError } = options;
  const turns = new Turns();
  const router = createConnectRouter({
    // Only the Connect protocol: gRPC itself is the gRPC port's, and gRPC-web is not offered.
    connect: true,
    grpc: false,
    grpcWeb: false,
    // No compression: a compressed request would be checked against the wire budget only after
    // it was inflated, and answers are small enough (or read on loopback).
    acceptCompression: [],
    readMaxBytes: maxReceiveMessageBytes,
    // Protobuf JSON: lowerCamelCase names, 64-bit integers as strings. Every field is written,
    // defaults too, so that a script finds `"jobs": []` rather than nothing; an unknown field in a
    // request is refused (invalid_argument naming it), never silently dropped.
    jsonOptions: { alwaysEmitImplicit: true, ignoreUnknownFields: false },
    shutdownSignal: options.shutdownSignal,
  });
  for (const method of AdminService.methods) {
    const fn = admin[method.localName];
    if (typeof fn !== "function") continue;
    const report = (error: unknown): void => onError(error, method.name);
    if (method.methodKind === "unary") {
      router.rpc(method, unary(method, fn as UnaryFn, limit, turns, report) as never);
    } else if (method.methodKind === "server_streaming") {
      router.rpc(method, serverStreaming(method, fn as StreamingFn, report) as never);
    }
  }
  const handlers = new Map<string, UniversalHandler>(router.handlers.map((handler) => [handler.requestPath, handler]));
  return (request, response) => {
    const path = (request.url ?? "/").split("?")[0] ?? "/";
    const handler = handlers.get(path);
    if (handler === undefined) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    const universal = universalRequestFromNodeRequest(request, response, undefined, createContextValues().set(PEER, peerOf(request)));
    const budgeted = handler.method.methodKind === "unary" && isBinary(request) ? withWireBudget(universal, handler.method.input, maxReceiveMessageBytes) : universal;
    if (handler.method.methodKind === "server_streaming") sendStreamHeadersNow(request, response);
    handler(budgeted)
      .then((answer) => universalResponseToNodeResponse(answer, response))
      .catch((error: unknown) => {
        // The client went away while the answer was written: nothing to tell anyone.
        if (ConnectError.from(error).code !== Code.Aborted) onError(error, handler.method.name);
      });
  };
}

/**
 * Sends a Connect stream's status and headers at once. Connect sends them with the first message,
 * and a watch may wait long for its first event: a client would see nothing meanwhile, not even
 * that it was let in (a fetch() would not even resolve). They are known before: a POST with a
 * Connect streaming content type is always answered 200 with that type (a failure, authorization's
 * included, travels in the stream's end message), and the implementation sets no headers.
 * Connect's own writeHead, which comes later, is then skipped.
 */
function sendStreamHeadersNow(request: IncomingMessage, response: ServerResponse): void {
  const type = /^application\/connect\+(json|proto)\s*(;|$)/i.exec(request.headers["content-type"] ?? "");
  if (request.method !== "POST" || type === null) return;
  response.writeHead(200, { "content-type": `application/connect+${type[1]!.toLowerCase()}` });
  response.flushHeaders();
  response.writeHead = (() => response) as typeof response.writeHead;
}

type UnaryFn = (request: unknown, context: CallContext) => Promise<unknown>;
type StreamingFn = (request: unknown, stream: ServerStreamWriter<DescMessage>, context: CallContext) => Promise<void>;

function unary(method: DescMethod, fn: UnaryFn, limit: AdminCallLimit, turns: Turns, report: (error: unknown) => void) {
  return async (request: MessageShape<DescMessage>, handlerContext: HandlerContext): Promise<MessageInitShape<DescMessage>> => {
    const context = callContext(method, handlerContext);
    try {
      limit.enter();
      try {
        // One call starts per turn of the event loop, as on the gRPC port (see CallAdmission).
        await turns.next();
        context.signal.throwIfAborted();
        const response = await fn(request, context);
        return response instanceof EncodedResponse ? fromBinary(method.output, response.bytes) : (response as MessageInitShape<DescMessage>);
      } finally {
        limit.leave();
      }
    } catch (error) {
      throw toConnectError(error, report);
    }
  };
}

/**
 * A server-streaming method as a Connect server stream: the implementation sends through a
 * ServerStreamWriter as on the gRPC port, bounded the same (DEFAULT_MAX_QUEUED messages queued,
 * send() false past it); the stream ends when the implementation returns or throws, or the
 * client goes away (the context's signal aborts).
 */
function serverStreaming(method: DescMethod, fn: StreamingFn, report: (error: unknown) => void) {
  return async function* (request: MessageShape<DescMessage>, handlerContext: HandlerContext): AsyncGenerator<MessageInitShape<DescMessage>> {
    const context = callContext(method, handlerContext);
    const writer = new QueueWriter(context.signal);
    let finished = false;
    let failure: { error: unknown } | undefined;
    void Promise.resolve()
      .then(() => fn(request, writer, context))
      .then(
        () => (finished = true),
        (error: unknown) => {
          finished = true;
          failure = { error };
        },
      )
      .finally(() => writer.wake());
    try {
      for (;;) {
        const next = writer.take();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (finished || writer.closed) break;
        await writer.arrival();
      }
    } finally {
      writer.close();
    }
    if (failure !== undefined) throw toConnectError(failure.error, report);
  };
}

/** The writer a streaming implementation sends through; the generator above takes from it. */
class QueueWriter implements ServerStreamWriter<DescMessage> {
  readonly #queue: MessageInitShape<DescMessage>[] = [];
  #closed = false;
  #arrived: (() => void)[] = [];
  #drained: (() => void)[] = [];

  constructor(signal: AbortSignal) {
    if (signal.aborted) this.#closed = true;
    else signal.addEventListener("abort", () => this.close(), { once: true });
  }

  get queued(): number {
    return this.#queue.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(message: MessageInitShape<DescMessage>): boolean {
    if (this.#closed || this.#queue.length >= DEFAULT_MAX_QUEUED) return false;
    this.#queue.push(message);
    this.wake();
    return true;
  }

  drained(): Promise<void> {
    if (this.#closed || this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  take(): MessageInitShape<DescMessage> | undefined {
    const next = this.#queue.shift();
    if (this.#queue.length === 0) this.#settle("drained");
    return next;
  }

  arrival(): Promise<void> {
    return new Promise((resolve) => this.#arrived.push(resolve));
  }

  wake(): void {
    this.#settle("arrived");
  }

  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
    this.#settle("drained");
    this.wake();
  }

  #settle(which: "arrived" | "drained"): void {
    const waiters = which === "arrived" ? this.#arrived : this.#drained;
    if (which === "arrived") this.#arrived = [];
    else this.#drained = [];
    for (const resolve of waiters) resolve();
  }
}

/**
 * Starts one call per turn of the event loop, first come first served, like the gRPC port's
 * CallAdmission: a burst of requests read at once does not run back to back while agents'
 * heartbeats wait unread.
 */
class Turns {
  readonly #waiting: (() => void)[] = [];
  #armed = false;

  next(): Promise<void> {
    return new Promise((resolve) => {
      this.#waiting.push(resolve);
      this.#arm();
    });
  }

  #arm(): void {
    if (this.#armed || this.#waiting.length === 0) return;
    this.#armed = true;
    setImmediate(() => {
      this.#armed = false;
      const next = this.#waiting.shift();
      this.#arm();
      next?.();
    });
  }
}

/** The CallContext the implementation expects, made from the HTTP request: its `authorization` header, the client's address. */
function callContext(method: DescMethod, handlerContext: HandlerContext): CallContext {
  const metadata = new Metadata();
  const authorization = handlerContext.requestHeader.get("authorization");
  if (authorization !== null) metadata.set("authorization", authorization);
  return {
    peer: handlerContext.values.get(PEER),
    metadata,
    method: `/${method.parent.typeName}/${method.name}`,
    signal: handlerContext.signal,
  };
}

/** `127.0.0.1:53412`, `[::1]:53412`: the client's address as the gRPC port writes a peer. */
function peerOf(request: IncomingMessage): string {
  const host = (request.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
  return `${host.includes(":") ? `[${host}]` : host}:${request.socket.remotePort ?? 0}`;
}

function isBinary(request: IncomingMessage): boolean {
  return /^application\/(proto|x-protobuf)\s*(;|$)/i.test(request.headers["content-type"] ?? "");
}

/**
 * The request with its body checked against the gRPC port's wire budget once it is read, before
 * it is decoded: 4 MiB of empty repeated entries would otherwise be two million objects to make.
 * A body over the size limit is left to Connect's own check.
 */
function withWireBudget(request: UniversalServerRequest, schema: DescMessage, maxBytes: number): UniversalServerRequest {
  const body = request.body;
  if (typeof body !== "object" || body === null || !(Symbol.asyncIterator in body)) return request;
  async function* checked(): AsyncIterable<Uint8Array> {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of body as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength;
      if (size <= maxBytes) chunks.push(chunk);
      yield chunk;
    }
    if (size > maxBytes) return;
    try {
      checkWireBudget(schema, Buffer.concat(chunks), DEFAULT_WIRE_BUDGET);
    } catch (error) {
      if (error instanceof WireBudgetExceeded) {
        throw new ConnectError(error.message, error.code === status.INVALID_ARGUMENT ? Code.InvalidArgument : Code.ResourceExhausted);
      }
      // Malformed bytes: the decoder says what is wrong with them.
    }
  }
  return { ...request, body: checked() };
}

const CONNECT_CODES: Record<Exclude<ErrorCode, "internal">, Code> = {
  "invalid-argument": Code.InvalidArgument,
  "not-found": Code.NotFound,
  "already-exists": Code.AlreadyExists,
  "failed-precondition": Code.FailedPrecondition,
  unavailable: Code.Unavailable,
  unauthenticated: Code.Unauthenticated,
  "permission-denied": Code.PermissionDenied,
  "resource-exhausted": Code.ResourceExhausted,
};

/**
 * The Connect error for a failure, as toGrpcStatus makes the gRPC status: a ShardlineError keeps
 * its code and its text; its details (the field, the value and what is allowed; the leader) travel
 * as a google.rpc.ErrorInfo detail (reason: the code, e.g. `INVALID_ARGUMENT`; domain
 * `shardline.dev`; metadata: the details), readable in JSON under `details[0].debug`. A follower's
 * leader is also in the `shardline-leader` header, and an `unauthenticated` answer carries
 * `www-authenticate: Bearer`. Anything else is `internal`, with no more said, and reported.
 */
export function toConnectError(error: unknown, report: (error: unknown) => void = () => {}): ConnectError {
  if (error instanceof ConnectError) return error;
  if (!(error instanceof ShardlineError) || isInternalFailure(error)) {
    report(error);
    return new ConnectError("internal error", Code.Internal);
  }
  const headers = new Headers();
  if (error.details.leader !== undefined) headers.set(LEADER_HEADER, error.details.leader);
  if (error.code === "unauthenticated") headers.set("www-authenticate", 'Bearer realm="shardline"');
  const entries = Object.entries(error.details).filter((entry): entry is [string, string] => typeof entry[1] === "string");
  const reason = error.code.toUpperCase().replace(/-/g, "_");
  const connectError = new ConnectError(error.message, CONNECT_CODES[error.code as Exclude<ErrorCode, "internal">], headers);
  if (entries.length > 0) {
    // Given as bytes, with its JSON form as `debug`: google.rpc's types are not among protobuf-es's.
    connectError.details.push({ type: "google.rpc.ErrorInfo", value: errorInfo(reason, entries), debug: { reason, domain: ERROR_INFO_DOMAIN, metadata: Object.fromEntries(entries) } });
  }
  return connectError;
}

/** google.rpc.ErrorInfo's wire format: reason = 1, domain = 2, metadata = 3 (map<string, string>). */
function errorInfo(reason: string, metadata: [string, string][]): Uint8Array {
  const writer = new BinaryWriter();
  writer.tag(1, WireType.LengthDelimited).string(reason);
  writer.tag(2, WireType.LengthDelimited).string(ERROR_INFO_DOMAIN);
  for (const [key, value] of metadata) {
    writer.tag(3, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(key).tag(2, WireType.LengthDelimited).string(value).join();
  }
  return writer.finish();
}
