import { Metadata, status } from "@grpc/grpc-js";
import { ShardlineError, type ErrorCode } from "../errors.js";

/** A gRPC status as it travels in trailers: a code and a human-readable text. */
export interface GrpcStatus {
  code: status;
  details: string;
  /** Trailers sent with it: `shardline-leader` when a follower names the leader. */
  metadata?: Metadata;
}

/** The trailer in which a follower controller names the leader's gRPC address. */
export const LEADER_TRAILER = "shardline-leader";

/** What a client sees when the server failed in a way it must not describe. */
export const INTERNAL_DETAILS = "internal error";

const toGrpcCode: Record<ErrorCode, status> = {
  "invalid-argument": status.INVALID_ARGUMENT,
  "not-found": status.NOT_FOUND,
  "already-exists": status.ALREADY_EXISTS,
  "failed-precondition": status.FAILED_PRECONDITION,
  unavailable: status.UNAVAILABLE,
  unauthenticated: status.UNAUTHENTICATED,
  "permission-denied": status.PERMISSION_DENIED,
  "resource-exhausted": status.RESOURCE_EXHAUSTED,
  internal: status.INTERNAL,
};

/**
 * The status a server sends for a failure. A ShardlineError keeps its message, which was written
 * for the caller. Anything else (and ShardlineError "internal") is a bug or an outage on our side:
 * the client gets a generic INTERNAL, never a stack or a message that may carry paths or secrets.
 */
export function toGrpcStatus(err: unknown): GrpcStatus {
  if (err instanceof ShardlineError && err.code !== "internal") {
    if (err.details.leader === undefined) return { code: toGrpcCode[err.code], details: err.message };
    const metadata = new Metadata();
    metadata.set(LEADER_TRAILER, err.details.leader);
    return { code: toGrpcCode[err.code], details: err.message, metadata };
  }
  return { code: status.INTERNAL, details: INTERNAL_DETAILS };
}

/** True when the failure is one toGrpcStatus hides from the client, so the server should log it. */
export function isInternalFailure(err: unknown): boolean {
  return !(err instanceof ShardlineError) || err.code === "internal";
}

/**
 * The ShardlineError for a failed call, seen from the client. The server's details text becomes
 * the message, so a ShardlineError thrown in a handler arrives with the same code and message.
 * The exception is a message refused for its size (see messageTooLarge): "invalid-argument",
 * naming the size and the limit, since sending the same again cannot succeed. Accepts a grpc-js ServiceError, a status object, or a ShardlineError (returned as is).
 */
export function fromGrpcError(err: unknown): ShardlineError {
  if (err instanceof ShardlineError) return err;
  const code = codeOf(err);
  if (code === undefined) {
    return new ShardlineError("internal", err instanceof Error ? err.message : String(err), {}, { cause: err });
  }
  const details = detailsOf(err) || status[code] || `gRPC status ${code}`;
  const tooLarge = code === status.RESOURCE_EXHAUSTED ? messageTooLarge(details) : undefined;
  if (tooLarge !== undefined) {
    return new ShardlineError(
      "invalid-argument",
      `a message of ${tooLarge.bytes} bytes is over the ${sizeText(tooLarge.limit)} its receiver accepts in one message; ` +
        "the limit is fixed (no flag raises it): send or ask for less in one call",
      { value: `${tooLarge.bytes} bytes`, allowed: `at most ${tooLarge.limit} bytes` },
      { cause: err },
    );
  }
  const leader = leaderOf(err);
  return new ShardlineError(fromGrpcCode(code), details, leader === undefined ? {} : { leader }, { cause: err });
}

/** A message refused for its size: how large it was, and the receiver's limit, both in bytes. */
export interface MessageTooLarge {
  bytes: number;
  limit: number;
}

/**
 * grpc-js's refusal of a message over a receive limit (`grpc.max_receive_message_length`), made
 * from its length prefix before the message is read: "Received message larger than max (N vs M)"
 * (some versions write "vs."). The status code says only RESOURCE_EXHAUSTED, which a rate limit
 * or a full server gives too, and grpc-js attaches nothing else to it: its details text is the
 * only signal. The same text comes from the server refusing a request and from the client
 * refusing an answer.
 */
const RECEIVED_TOO_LARGE = /Received message larger than max \((\d+) vs\.? (\d+)\)/;

/**
 * The size and limit of a gRPC status details text that refuses a message for its size;
 * undefined for any other text.
 */
export function messageTooLarge(details: string): MessageTooLarge | undefined {
  const match = RECEIVED_TOO_LARGE.exec(details);
  return match === null ? undefined : { bytes: Number(match[1]), limit: Number(match[2]) };
}

/** `4194304 bytes (4 MiB)`: the exact number a log shows, and the size a reader knows. */
export function sizeText(bytes: number): string {
  const mib = bytes / (1024 * 1024);
  if (Number.isInteger(mib)) return `${bytes} bytes (${mib} MiB)`;
  const kib = bytes / 1024;
  return Number.isInteger(kib) ? `${bytes} bytes (${kib} KiB)` : `${bytes} bytes`;
}

/** The ShardlineError code for a gRPC status code. */
export function fromGrpcCode(code: status): ErrorCode {
  switch (code) {
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return "invalid-argument";
    case status.NOT_FOUND:
      return "not-found";
    case status.UNAUTHENTICATED:
      return "unauthenticated";
    case status.PERMISSION_DENIED:
      return "permission-denied";
    case status.ALREADY_EXISTS:
      return "already-exists";
    // ABORTED is a lost race on state (a concurrent change): the request was valid but the state
    // it assumed is gone. UNIMPLEMENTED means a controller of another version. Retrying the same
    // request will not help with either, which is what failed-precondition tells a caller.
    case status.FAILED_PRECONDITION:
    case status.ABORTED:
    case status.UNIMPLEMENTED:
      return "failed-precondition";
    // Everything a caller should retry: the controller is down, restarting, overloaded, too slow,
    // or the stream was cut. The DESIGN's CLI maps "unavailable" to "try again". A message over a
    // size limit is RESOURCE_EXHAUSTED too, but retrying it cannot help: fromGrpcError tells it
    // apart by its text and makes it "invalid-argument".
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
    case status.CANCELLED:
    case status.RESOURCE_EXHAUSTED:
      return "unavailable";
    default:
      return "internal";
  }
}

function codeOf(err: unknown): status | undefined {
  if (typeof err !== "object" || err === null || !("code" in err)) return undefined;
  const code = (err as { code: unknown }).code;
  return typeof code === "number" && Number.isInteger(code) ? (code as status) : undefined;
}

function detailsOf(err: unknown): string {
  const details = (err as { details?: unknown }).details;
  return typeof details === "string" ? details : "";
}

function leaderOf(err: unknown): string | undefined {
  const metadata = (err as { metadata?: unknown }).metadata;
  if (!(metadata instanceof Metadata)) return undefined;
  const value = metadata.get(LEADER_TRAILER)[0];
  return typeof value === "string" && value !== "" ? value : undefined;
}
