import { status, type ClientDuplexStream, type ServerDuplexStream } from "@grpc/grpc-js";
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { Readable, Writable } from "node:stream";
import { ShardlineError } from "../errors.js";
import { EncodedMessage, MalformedMessage, encodeMessage } from "./service-definition.js";
import { toGrpcStatus, type GrpcStatus } from "./status.js";

/** Default bound of a stream's send queue, in messages. */
export const DEFAULT_MAX_QUEUED = 10_000;

/** Default of MessageStreamOptions.maxMessagesPerTurn. */
export const DEFAULT_MAX_MESSAGES_PER_TURN = 64;

/** Default of MessageStreamOptions.maxMsPerTurn. */
export const DEFAULT_MAX_MS_PER_TURN = 2;

/** Options of a MessageStream. */
export interface MessageStreamOptions {
  /**
   * How many messages may wait for the transport after it pushed back. Past that, send() returns
   * false: the peer is not reading, and the caller decides whether to disconnect it. Default 10,000.
   */
  maxQueued?: number;
  /** Called with an exception thrown by a listener; the stream is then closed with INTERNAL. */
  onError?: (error: unknown) => void;
  /**
   * How many received messages the stream hands to its listeners in one turn of the event loop
   * before it lets the loop run on (setImmediate) and reads the rest on a later turn. Default 64.
   */
  maxMessagesPerTurn?: number;
  /**
   * How long, in milliseconds, the stream's listeners may run in one turn of the event loop: once
   * they have, the stream hands over no more messages until a later turn, however few it handed
   * over. One message always goes through. Default 2.
   */
  maxMsPerTurn?: number;
}

/**
 * One side of a bidirectional call, as messages: `In` arrives, `Out` is sent.
 *
 * onClose fires exactly once, whatever ended the call: the peer finished, failed, cancelled or
 * vanished, or this side called end() or close(). No message is delivered after it.
 */
export interface MessageStream<In extends DescMessage, Out extends DescMessage> {
  /**
   * Receives each message. Reading starts with the first listener, so nothing is lost to a late
   * registration, and a stream nobody listens to pushes back on its peer. Messages come in order,
   * at most maxMessagesPerTurn (or maxMsPerTurn of listeners' work) in one turn of the event loop;
   * the peer's flow control holds back the rest.
   */
  onMessage(listener: (message: MessageShape<In>) => void): void;
  /**
   * Learns how the call ended. When this side closed it, the status is the one given to close()
   * (or OK after end()); otherwise it is the peer's status, CANCELLED when the peer cancelled or
   * the connection dropped, and DEADLINE_EXCEEDED when the call's deadline passed.
   */
  onClose(listener: (status: GrpcStatus) => void): void;
  /** Called each time the send queue has emptied after the transport pushed back. */
  onDrain(listener: () => void): void;
  /**
   * Sends a message, or queues it while the transport pushes back. Returns false, and sends
   * nothing, when the queue already holds maxQueued messages or the stream is ending or closed.
   * Throws when the message cannot be encoded: that is the caller's bug, not the peer's.
   */
  send(message: MessageInitShape<Out> | EncodedMessage<Out>): boolean;
  /**
   * Finishes sending after the queued messages. The server ends the call with OK; the client
   * half-closes and keeps receiving until the server's status.
   */
  end(): void;
  /**
   * Ends the call now, dropping queued messages. The server sends this status to the client; the
   * client cancels the call (the server sees CANCELLED). onClose receives this status at once.
   * grpc-js has no server-side cancel: the status follows the few messages grpc-js already
   * buffered, so a peer that never reads again never sees it, and its HTTP/2 stream lingers
   * (bounded by flow control) until keepalive or the peer ends the connection.
   */
  close(code: status, details: string): void;
  /** Messages waiting in the send queue (not counting what grpc-js already buffered). */
  readonly queued: number;
  /** The bound of the send queue: once `queued` reaches it, send() refuses, for the peer is not reading. */
  readonly maxQueued: number;
  /** True once onClose has fired. */
  readonly closed: boolean;
}

/**
 * A bounded FIFO in front of a grpc-js Writable. While the Writable accepts writes, messages go
 * straight through; after it returns false, they wait here until 'drain'.
 */
export class OutboundQueue {
  #items: Buffer[] = [];
  #head = 0;
  #blocked = false;
  #ending: (() => void) | undefined;
  #stopped = false;

  constructor(
    private readonly writable: Writable,
    readonly maxQueued: number,
    private readonly onDrained: () => void,
  ) {
    writable.on("drain", this.#flush);
  }

  /** Messages waiting for the Writable. */
  get length(): number {
    return this.#items.length - this.#head;
  }

  /** True while messages can still be accepted. */
  get open(): boolean {
    return !this.#stopped && this.#ending === undefined;
  }

  /** Writes or queues encoded bytes; false when full, ending or stopped. */
  push(bytes: Buffer): boolean {
    if (!this.open) return false;
    if (!this.#blocked && this.length === 0) {
      if (!this.writable.write(bytes)) this.#blocked = true;
      return true;
    }
    if (this.length >= this.maxQueued) return false;
    this.#items.push(bytes);
    return true;
  }

  /** Accepts nothing more; runs `then` once every queued message has been written. */
  end(then: () => void): void {
    if (!this.open) return;
    if (this.length === 0) {
      this.#ending = () => {};
      then();
    } else {
      this.#ending = then;
    }
  }

  /** Drops what is queued and accepts nothing more. */
  stop(): void {
    this.#stopped = true;
    this.#items = [];
    this.#head = 0;
    this.writable.off("drain", this.#flush);
  }

  readonly #flush = (): void => {
    this.#blocked = false;
    if (this.#stopped) return;
    const hadQueued = this.length > 0;
    while (this.length > 0) {
      const bytes = this.#items[this.#head] as Buffer;
      this.#items[this.#head] = undefined as unknown as Buffer;
      this.#head++;
      if (!this.writable.write(bytes)) {
        this.#blocked = true;
        break;
      }
    }
    if (this.length > 0) return;
    this.#items = [];
    this.#head = 0;
    const ending = this.#ending;
    if (ending) {
      this.#ending = () => {};
      ending();
    } else if (hadQueued) {
      this.onDrained();
    }
  };
}

function checkTurnBounds(maxMessages: number, maxMs: number): void {
  if (!Number.isSafeInteger(maxMessages) || maxMessages < 1) throw ShardlineError.invalid("maxMessagesPerTurn", maxMessages, "an integer of at least 1");
  if (!Number.isFinite(maxMs) || maxMs <= 0) throw ShardlineError.invalid("maxMsPerTurn", maxMs, "a number of milliseconds above 0");
}

/**
 * Reads a Readable of messages a bounded slice per turn of the event loop: at most `maxMessages`,
 * and none more once `maxMs` have passed since the turn's first, then it waits for a later turn
 * (setImmediate), in which the loop has read every other socket with data.
 *
 * Why: grpc-js hands a stream's messages over back to back, as long as its HTTP/2 stream has
 * data, all in one turn (process.nextTick and promise jobs, never a return to the event loop).
 * A peer that floods its stream, up to its flow-control window at a time, would then hold the
 * controller for as long as its messages take, while other agents' heartbeats wait unread.
 * While a slice waits, the Readable holds its highWaterMark (16 messages) and grpc-js the rest of
 * one HTTP/2 DATA frame; then the HTTP/2 stream stops reading and its window pushes back on the
 * peer.
 */
class TurnBoundedReader {
  /** Messages handed over in the current turn; 0 once the turn is over. */
  #spent = 0;
  #turnStartedAt = 0;
  /** The slice is spent: 'readable' waits for the turn that #nextTurn starts. */
  #waiting = false;
  #stopped = false;

  constructor(
    private readonly readable: Readable,
    private readonly deliver: (message: unknown) => void,
    readonly maxMessages: number,
    readonly maxMs: number,
  ) {
    checkTurnBounds(maxMessages, maxMs);
    readable.on("readable", this.#pump);
  }

  /** Reads nothing more. */
  stop(): void {
    this.#stopped = true;
    this.readable.off("readable", this.#pump);
  }

  readonly #pump = (): void => {
    if (this.#waiting) return;
    while (!this.#stopped) {
      if (this.#spent >= this.maxMessages || (this.#spent > 0 && performance.now() - this.#turnStartedAt >= this.maxMs)) {
        this.#waiting = true;
        return;
      }
      const message: unknown = this.readable.read();
      if (message === null) return;
      if (this.#spent === 0) {
        this.#turnStartedAt = performance.now();
        setImmediate(this.#nextTurn);
      }
      this.#spent++;
      this.deliver(message);
    }
  };

  readonly #nextTurn = (): void => {
    this.#spent = 0;
    if (!this.#waiting) return;
    this.#waiting = false;
    this.#pump();
  };
}

abstract class DuplexMessageStream<In extends DescMessage, Out extends DescMessage> implements MessageStream<In, Out> {
  protected readonly queue: OutboundQueue;
  #messageListeners: ((message: MessageShape<In>) => void)[] = [];
  #closeListeners: ((status: GrpcStatus) => void)[] = [];
  #drainListeners: (() => void)[] = [];
  #closedWith: GrpcStatus | undefined;
  #reader: TurnBoundedReader | undefined;
  readonly #onError: (error: unknown) => void;
  readonly #maxMessagesPerTurn: number;
  readonly #maxMsPerTurn: number;

  constructor(
    protected readonly duplex: Readable & Writable,
    private readonly output: Out,
    options: MessageStreamOptions,
  ) {
    this.#maxMessagesPerTurn = options.maxMessagesPerTurn ?? DEFAULT_MAX_MESSAGES_PER_TURN;
    this.#maxMsPerTurn = options.maxMsPerTurn ?? DEFAULT_MAX_MS_PER_TURN;
    // Checked here, not when reading starts, so that a bad option fails where it was given.
    checkTurnBounds(this.#maxMessagesPerTurn, this.#maxMsPerTurn);
    this.queue = new OutboundQueue(duplex, options.maxQueued ?? DEFAULT_MAX_QUEUED, () => this.#drained());
    this.#onError = options.onError ?? defaultOnError;
  }

  get queued(): number {
    return this.queue.length;
  }

  get maxQueued(): number {
    return this.queue.maxQueued;
  }

  get closed(): boolean {
    return this.#closedWith !== undefined;
  }

  /** Whether messages are being consumed, i.e. whether an 'end' event will follow the last message. */
  protected get reading(): boolean {
    return this.#reader !== undefined;
  }

  onMessage(listener: (message: MessageShape<In>) => void): void {
    this.#messageListeners.push(listener);
    if (this.#reader === undefined && !this.closed) {
      this.#reader = new TurnBoundedReader(this.duplex, this.#onData, this.#maxMessagesPerTurn, this.#maxMsPerTurn);
    }
  }

  onClose(listener: (status: GrpcStatus) => void): void {
    const closedWith = this.#closedWith;
    if (closedWith === undefined) {
      this.#closeListeners.push(listener);
    } else {
      queueMicrotask(() => this.#call(listener, closedWith));
    }
  }

  onDrain(listener: () => void): void {
    this.#drainListeners.push(listener);
  }

  send(message: MessageInitShape<Out> | EncodedMessage<Out>): boolean {
    if (!this.queue.open) return false;
    return this.queue.push(message instanceof EncodedMessage ? message.bytes : encodeMessage(this.output, message));
  }

  abstract end(): void;
  abstract close(code: status, details: string): void;

  /** Fires onClose once; later calls do nothing. */
  protected finish(closedWith: GrpcStatus): void {
    if (this.#closedWith !== undefined) return;
    this.#closedWith = closedWith;
    this.queue.stop();
    this.#reader?.stop();
    const listeners = this.#closeListeners;
    this.#closeListeners = [];
    this.#messageListeners = [];
    this.#drainListeners = [];
    for (const listener of listeners) this.#call(listener, closedWith);
  }

  readonly #onData = (message: unknown): void => {
    if (this.closed) return;
    if (message instanceof MalformedMessage) {
      this.close(message.code, message.details);
      return;
    }
    for (const listener of this.#messageListeners) {
      if (!this.#call(listener, message as MessageShape<In>)) return;
    }
  };

  #drained(): void {
    for (const listener of this.#drainListeners) {
      if (!this.#call(listener, undefined)) return;
    }
  }

  /** Runs a listener; a throw is reported and closes the stream. False when it threw. */
  #call<T>(listener: (value: T) => void, value: T): boolean {
    try {
      listener(value);
      return true;
    } catch (error) {
      this.#onError(error);
      const failed = toGrpcStatus(error);
      this.close(failed.code, failed.details);
      return false;
    }
  }
}

/** The server's side of a bidi call: receives the client's requests, sends responses. */
class ServerMessageStream<In extends DescMessage, Out extends DescMessage> extends DuplexMessageStream<In, Out> {
  #ending = false;
  #statusSent = false;

  constructor(
    private readonly call: ServerDuplexStream<unknown, unknown>,
    output: Out,
    options: MessageStreamOptions,
  ) {
    super(call, output, options);
    // The Writable finishes when grpc-js hands our OK status to HTTP/2; a 'cancelled' before
    // that means the call died under us.
    call.once("finish", () => {
      this.#statusSent = true;
    });
    // grpc-js emits 'cancelled' once the call is over for any reason, including after the status
    // this side sent; it is the one signal that the HTTP/2 stream is gone.
    const over = (): void => this.finish(this.#statusSent ? OK : peerGone(call));
    call.once("cancelled", over);
    call.once("close", over);
    // The client half-closed: it has nothing more to say, so the call is complete once our queued
    // messages are out. A client's cancel (RST_STREAM) also ends the Readable first, with the
    // cancel reported a few ticks later; waiting one macrotask lets the cancel win, so a
    // cancelled agent is not mistaken for one that said goodbye.
    call.once("end", () =>
      setImmediate(() => {
        if (!this.closed) this.end();
      }),
    );
  }

  end(): void {
    if (this.#ending || this.closed) return;
    this.#ending = true;
    this.queue.end(() => this.call.end());
  }

  close(code: status, details: string): void {
    if (this.closed) return;
    const alive = !this.call.cancelled && !this.call.destroyed;
    this.finish({ code, details });
    if (!alive) return;
    if (code === status.OK) {
      this.call.end();
    } else {
      // The documented way to end a grpc-js server stream with a status: its own 'error'
      // listener records the status and ends the call after the messages already written.
      this.call.emit("error", { code, details });
    }
  }
}

/** The client's side of a bidi call: receives the server's responses, sends requests. */
class ClientMessageStream<In extends DescMessage, Out extends DescMessage> extends DuplexMessageStream<In, Out> {
  #peerStatus: GrpcStatus | undefined;

  constructor(
    private readonly call: ClientDuplexStream<unknown, unknown>,
    output: Out,
    options: MessageStreamOptions,
  ) {
    super(call, output, options);
    // grpc-js 1.14 quirk: until the first read, a client call drains the HTTP/2 stream into an
    // unbounded array, so a client that never reads buffers everything the server sends and
    // never pushes back. One read puts it into the paused-after-each-message mode, in which the
    // Readable holds at most its highWaterMark (16 messages) and flow control does the rest.
    call.read(0);
    // grpc-js emits 'error' for every non-OK status, then 'status'; the status is handled there.
    call.on("error", () => {});
    call.once("status", (received: GrpcStatus) => {
      this.#peerStatus = { code: received.code, details: received.details };
      // grpc-js reports the status before the messages still buffered in the Readable are
      // emitted; wait for 'end' so that onClose comes after the last onMessage.
      if (!this.reading || call.readableEnded) this.finish(this.#peerStatus);
    });
    call.once("end", () => {
      if (this.#peerStatus) this.finish(this.#peerStatus);
    });
  }

  end(): void {
    if (this.closed) return;
    this.queue.end(() => this.call.end());
  }

  close(code: status, details: string): void {
    if (this.closed) return;
    this.finish({ code, details });
    this.call.cancel();
  }
}

const OK: GrpcStatus = { code: status.OK, details: "OK" };

function peerGone(call: ServerDuplexStream<unknown, unknown>): GrpcStatus {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  if (Number.isFinite(ms) && ms <= Date.now()) {
    return { code: status.DEADLINE_EXCEEDED, details: "deadline exceeded" };
  }
  return { code: status.CANCELLED, details: "cancelled by the client" };
}

function defaultOnError(error: unknown): void {
  process.emitWarning(error instanceof Error ? error : String(error), { code: "SHARDLINE_STREAM_LISTENER" });
}

/** Wraps the server side of a bidi call. */
export function serverMessageStream<In extends DescMessage, Out extends DescMessage>(
  call: ServerDuplexStream<unknown, unknown>,
  output: Out,
  options: MessageStreamOptions = {},
): MessageStream<In, Out> {
  return new ServerMessageStream<In, Out>(call, output, options);
}

/** Wraps the client side of a bidi call. */
export function clientMessageStream<In extends DescMessage, Out extends DescMessage>(
  call: ClientDuplexStream<unknown, unknown>,
  output: Out,
  options: MessageStreamOptions = {},
): MessageStream<In, Out> {
  return new ClientMessageStream<In, Out>(call, output, options);
}
