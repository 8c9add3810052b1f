import { randomUUID } from "node:crypto";
import { ShardlineError } from "../../shared/errors.js";

/** Hello.instance_id's spelling: 16-64 letters, digits, '-' and '_' (a UUID fits). */
const INSTANCE_ID = /^[A-Za-z0-9_-]{16,64}$/;

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
 * The error of an agent whose Hello the controller refused because another process holds its id:
 * the controller's own text, which names the holder, how long its lease runs and what to do.
 */
export function idHeldError(agentId: string, details: string): ShardlineError {
  const message = details || `agent id "${agentId}" is held by another process; give each process its own id, or wait for the id`;
  return new ShardlineError("already-exists", message, { field: "id", value: JSON.stringify(agentId) });
}
