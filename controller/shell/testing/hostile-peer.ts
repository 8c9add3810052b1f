import { Client as GrpcClient, credentials, Metadata, type ClientDuplexStream, type StatusObject } from "@grpc/grpc-js";
import { pino, type Logger } from "pino";

const CONNECT_PATH = "/shardline.v1.AgentService/Connect";
const asIs = (bytes: Buffer): Buffer => bytes;

/**
 * A peer on AgentService.Connect that sends bytes as given, framed by grpc-js but never encoded:
 * a stranger speaking bad protobuf, or none. It reads whatever the controller sends, so that it
 * is never cut off for not reading.
 */
export class RawBytesPeer {
  readonly #client: GrpcClient;
  readonly #call: ClientDuplexStream<Buffer, Buffer>;
  /** Messages received, undecoded. */
  readonly received: Buffer[] = [];
  /** The status the call ended with. */
  readonly status: Promise<StatusObject>;
  #ended: StatusObject | undefined;

  constructor(address: string) {
    this.#client = new GrpcClient(address, credentials.createInsecure());
    this.#call = this.#client.makeBidiStreamRequest(CONNECT_PATH, asIs, asIs, new Metadata());
    this.#call.on("data", (bytes: Buffer) => this.received.push(bytes));
    // Every non-OK status is also emitted as 'error'; 'status' carries it.
    this.#call.on("error", () => {});
    this.status = new Promise((resolve) =>
      this.#call.once("status", (received: StatusObject) => {
        this.#ended = received;
        resolve(received);
      }),
    );
  }

  /** The status, once the call has ended. */
  get ended(): StatusObject | undefined {
    return this.#ended;
  }

  /** Sends one message's bytes; false once the call is over. */
  write(bytes: Uint8Array): boolean {
    if (this.#ended !== undefined) return false;
    this.#call.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    return true;
  }

  /** Half-closes: nothing more to say. */
  end(): void {
    if (this.#ended === undefined) this.#call.end();
  }

  /** Cancels the call and closes the channel. */
  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}

/** A controller's log lines from `level` up, kept as parsed JSON. */
export class CapturedLogs {
  readonly entries: Record<string, unknown>[] = [];
  readonly logger: Logger;

  constructor(level = "debug") {
    this.logger = pino({ level }, { write: (line: string) => void this.entries.push(JSON.parse(line) as Record<string, unknown>) });
  }

  /** The lines at `level` (pino's number: 40 warn, 50 error) or above. */
  atLeast(level: number): Record<string, unknown>[] {
    return this.entries.filter((e) => typeof e.level === "number" && e.level >= level);
  }
}
