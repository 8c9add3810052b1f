import { ShardlineError } from "../../shared/errors.js";
import type { AgentHello, AssignmentRef } from "./messages.js";

const AGENT_ID = /^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$/;
const HANDLER = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const MAX_HANDLERS = 1000;
const MAX_LABELS = 64;
const KNOWN_EXECUTORS = new Set(["script", "http", "kubernetes"]);
/** Room for each known executor, listed more than once by a careless agent. */
const MAX_EXECUTORS = 16;
const MAX_VERSION = 256;
/** Hello.instance_id: empty, or 16-64 characters, enough for a random value (a UUID has 36). */
const INSTANCE_ID = /^[A-Za-z0-9_-]{16,64}$/;

/**
 * A stranger's value as an error message shows it: it may be megabytes long, and the message
 * travels in an HTTP/2 trailer (which the peer caps at a few KiB) and in log lines.
 */
export function clip(value: string, max = 64): string {
  return value.length <= max ? value : `${value.slice(0, max)}... (${value.length} characters)`;
}

/**
 * Checks a Hello from an agent that may have been written by anyone, in any language. A bad
 * Hello is refused whole, with the field named, before the agent is known to the controller.
 */
export function validateHello(hello: AgentHello): void {
  if (!AGENT_ID.test(hello.agentId)) {
    throw ShardlineError.invalid(
      "hello.agent_id",
      clip(hello.agentId),
      "1-253 characters of lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
    );
  }
  if (!Number.isInteger(hello.capacity) || hello.capacity < 1 || hello.capacity > 1000) {
    throw ShardlineError.invalid("hello.capacity", hello.capacity, "an integer from 1 to 1000 (0 means 1)");
  }
  if (!Number.isInteger(hello.maxConcurrent) || hello.maxConcurrent < 0 || hello.maxConcurrent > 100_000) {
    throw ShardlineError.invalid("hello.max_concurrent", hello.maxConcurrent, "an integer from 0 (no limit) to 100000");
  }
  if (hello.instanceId !== undefined && hello.instanceId !== "" && !INSTANCE_ID.test(hello.instanceId)) {
    throw ShardlineError.invalid("hello.instance_id", clip(hello.instanceId), "empty, or 16-64 letters, digits, '-' and '_' chosen at random once per process start (a UUID)");
  }
  if (hello.version.length > MAX_VERSION) {
    throw ShardlineError.invalid("hello.version", clip(hello.version), `at most ${MAX_VERSION} characters`);
  }
  if (hello.handlers.length > MAX_HANDLERS) {
    throw ShardlineError.invalid("hello.handlers", `${hello.handlers.length} handlers`, `at most ${MAX_HANDLERS}`);
  }
  for (const handler of hello.handlers) {
    if (!HANDLER.test(handler)) {
      throw ShardlineError.invalid("hello.handlers", clip(handler), "names of 1-128 characters of letters, digits, '.', '_', ':' and '-'");
    }
  }
  if (hello.executors.length > MAX_EXECUTORS) {
    throw ShardlineError.invalid("hello.executors", `${hello.executors.length} entries`, `at most ${MAX_EXECUTORS}`);
  }
  for (const executor of hello.executors) {
    if (!KNOWN_EXECUTORS.has(executor)) throw ShardlineError.invalid("hello.executors", clip(executor), "script, http or kubernetes");
  }
  const labels = Object.entries(hello.labels);
  if (labels.length > MAX_LABELS) {
    throw ShardlineError.invalid("hello.labels", `${labels.length} labels`, `at most ${MAX_LABELS}`);
  }
  for (const [key, value] of labels) {
    if (key.length === 0 || key.length > 253 || value.length > 253) {
      throw ShardlineError.invalid(`hello.labels.${clip(key)}`, clip(value), "a key of 1-253 characters and a value of at most 253");
    }
  }
}

/**
 * Whether an assignment an agent claims in Hello (`held`) is newer than anything this controller,
 * in `term`, or one before it can have made: a later term, or this term with a generation it has
 * not issued yet (`lastGeneration` is the last one it did). No agent can hold such a claim, so it
 * is ignored rather than let win over the real owner's claim after a restart.
 */
export function claimFromTheFuture(ref: AssignmentRef, term: number, lastGeneration: number): boolean {
  return ref.term > term || (ref.term === term && ref.generation > lastGeneration);
}
