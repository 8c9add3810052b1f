import { type ClientHttp2Session, connect, constants } from "node:http2";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { ConnectRequestSchema, type ConnectResponse, ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";

type Request = MessageInitShape<typeof ConnectRequestSchema>;

/** How a PackedStranger's call ended: the grpc-status trailer and its message, or a reset stream. */
export interface PackedStatus {
  code: number;
  details: string;
}

/**
 * A stranger on AgentService.Connect that speaks raw HTTP/2 instead of going through grpc-js: it
 * packs as many gRPC messages into each write as it is given, so that one DATA frame carries
 * hundreds of them, which grpc-js on the controller decodes and hands over together. (A grpc-js
 * client sends each message in a frame of its own.) It reads and decodes every response, so it
 * is never cut off for not reading.
 */
export class PackedStranger {
  readonly #session: ClientHttp2Session;
  readonly #request: ReturnType<ClientHttp2Session["request"]>;
  readonly #pending: Buffer[] = [];
  #pendingBytes = 0;
  readonly #listeners: ((response: ConnectResponse) => void)[] = [];
  /** Every response, decoded, in order. */
  readonly received: ConnectResponse[] = [];
  /** Resolves with the call's status once it ended. */
  readonly status: Promise<PackedStatus>;
  #ended: PackedStatus | undefined;

  constructor(address: string) {
    this.#session = connect(`http://${address}`);
    this.#session.on("error", () => {});
    this.#request = this.#session.request({ ":method": "POST", ":path": "/shardline.v1.AgentService/Connect", "content-type": "application/grpc", te: "trailers" });
    this.#request.on("error", () => {});
    this.#request.on("data", (chunk: Buffer) => this.#read(chunk));
    this.status = new Promise((resolve) => {
      const end = (ended: PackedStatus): void => {
        if (this.#ended !== undefined) return;
        this.#ended = ended;
        resolve(ended);
      };
      this.#request.on("trailers", (trailers) => end({ code: Number(trailers["grpc-status"]), details: decodeURIComponent(String(trailers["grpc-message"] ?? "")) }));
      // A trailers-only answer comes as the response headers.
      this.#request.on("response", (headers) => {
        if (headers["grpc-status"] !== undefined) end({ code: Number(headers["grpc-status"]), details: decodeURIComponent(String(headers["grpc-message"] ?? "")) });
      });
      this.#request.on("close", () => end({ code: -1, details: `stream closed (HTTP/2 code ${this.#request.rstCode ?? "none"})` }));
    });
  }

  /** The status, once the call has ended. */
  get ended(): PackedStatus | undefined {
    return this.#ended;
  }

  /** Sends `requests` in one write, each framed as gRPC frames it; resolves once the transport took them. */
  send(requests: Request[]): Promise<void> {
    const frames: Buffer[] = [];
    for (const request of requests) {
      const bytes = toBinary(ConnectRequestSchema, create(ConnectRequestSchema, request));
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(bytes.length, 1);
      frames.push(prefix, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    }
    return new Promise((resolve) => this.#request.write(Buffer.concat(frames), () => resolve()));
  }

  /** Calls `listener` with each response from now on. */
  onResponse(listener: (response: ConnectResponse) => void): void {
    this.#listeners.push(listener);
  }

  /** Resets the stream and closes the connection. */
  close(): void {
    if (!this.#request.closed) this.#request.close(constants.NGHTTP2_CANCEL);
    this.#session.close();
  }

  #read(chunk: Buffer): void {
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    let buffer = Buffer.concat(this.#pending, this.#pendingBytes);
    while (buffer.length >= 5) {
      const length = buffer.readUInt32BE(1);
      if (buffer.length < 5 + length) break;
      const response = fromBinary(ConnectResponseSchema, buffer.subarray(5, 5 + length));
      this.received.push(response);
      for (const listener of this.#listeners) listener(response);
      buffer = buffer.subarray(5 + length);
    }
    this.#pending.length = 0;
    this.#pending.push(buffer);
    this.#pendingBytes = buffer.length;
  }
}
