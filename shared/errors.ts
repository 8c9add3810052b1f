/**
 * Stable error codes. Each maps to one gRPC status (see shared/grpc) and one CLI exit code, so a
 * script can tell "you asked for something wrong" from "it does not exist" from "try again".
 */
export type ErrorCode =
  | "invalid-argument"
  | "not-found"
  | "already-exists"
  | "failed-precondition"
  | "unavailable"
  /** No credentials, or ones the controller does not know (a missing or unknown token). */
  | "unauthenticated"
  /** Known credentials whose role does not allow the call. */
  | "permission-denied"
  /** A limit was reached (calls per second, jobs, agents): retry later, or raise the limit. */
  | "resource-exhausted"
  | "internal";

/** Details a user needs to fix the input: which field, what it held, what is accepted. */
export interface ErrorDetails {
  /** Dotted path of the offending field, e.g. `spec.shards` or `--capacity`. */
  field?: string;
  /** The offending value, rendered for humans. */
  value?: string;
  /** What is accepted, e.g. `an integer from 1 to 10000`. */
  allowed?: string;
  /**
   * The leader's gRPC address, when a follower controller refused the call: ask it there. It
   * travels in the `shardline-leader` trailer (see shared/grpc/status.ts).
   */
  leader?: string;
}

/** The one error type that crosses Shardline's boundaries (admin API, agent stream, CLI, store). */
export class ShardlineError extends Error {
  override readonly name = "ShardlineError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: ErrorDetails = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** A bad field: the message always names the field, the value and what is allowed. */
  static invalid(field: string, value: unknown, allowed: string): ShardlineError {
    const shown = renderValue(value);
    return new ShardlineError(
      "invalid-argument",
      `${field}: ${shown} is not allowed; expected ${allowed}`,
      { field, value: shown, allowed },
    );
  }
}

function renderValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "string") return JSON.stringify(value);
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text.length > 80 ? `${text.slice(0, 77)}...` : text;
  } catch {
    return String(value);
  }
}
