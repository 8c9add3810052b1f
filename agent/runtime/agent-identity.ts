import { randomUUID } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { ShardlineError } from "../../shared/errors.js";
import { type GrpcStatus, retryAfterMs } from "../../shared/grpc/index.js";

/** Hello.instance_id's spelling: 16-64 letters, digits, '-' and '_' (a UUID fits). */
const INSTANCE_ID = /^[A-Za-z0-9_-]{16,64}$/;

/** Past this, a wait the controller names is not honoured as such: the reconnect backoff applies. */
const MAX_NAMED_WAIT_MS = 60_000;

/** Added to the wait a controller names: its lease expiry is on its own clock and timers wake late. */
const NAMED_WAIT_MARGIN_MS = 50;

/**
 * A new instance id: one per Agent, the same on every reconnect, so the controller can tell this
 * process reconnecting (which replaces its own stream) from a second process under the same agent
 * id (which is refused while the first holds it).
 */
export function newInstanceId(): string {
  return randomUUID();
}

/** Checks an injected instance id against Hello.instance_id's rules. */
export function checkInstanceId(value: string): string {
  if (!INSTANCE_ID.test(value)) throw ShardlineError.invalid("instanceId", value, "16 to 64 letters, digits, '-' and '_' (a UUID fits)");
  return value;
}

/**
 * How long to wait before the next Hello when the controller ended the stream with UNAVAILABLE
 * and said, in the shardline-retry-after-ms trailer, when the refusal ends (the id is fenced: an
 * earlier process of this id lost its stream and its lease still runs). Undefined for any other
 * status, or a wait too long to trust, which the reconnect backoff then covers.
 */
export function idFencedWaitMs(closed: GrpcStatus): number | undefined {
  if (closed.code !== status.UNAVAILABLE) return undefined;
  const ms = retryAfterMs(closed);
  if (ms === undefined || ms > MAX_NAMED_WAIT_MS) return undefined;
  return ms + NAMED_WAIT_MARGIN_MS;
}

/**
 * The error of an agent whose Hello the controller refused because another process holds its id:
 * the controller's own text, which names the holder, how long its lease runs and what to do.
 */
export function idHeldError(agentId: string, details: string): ShardlineError {
  const message = details || `agent id "${agentId}" is held by another process; give each process its own id, or wait for the id`;
  return new ShardlineError("already-exists", message, { field: "id", value: JSON.stringify(agentId) });
}
