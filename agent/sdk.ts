import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Logger } from "pino";
import { ShardlineError } from "../shared/errors.js";

/** Everything a handler knows about the execution it runs. */
export interface HandlerContext {
  /** The job's name. */
  readonly job: string;
  /** The shard to run, 0..shardCount-1. */
  readonly shard: number;
  /** The job's shard count. */
  readonly shardCount: number;
  /** This shard's parameter from spec.shardParameters; "" when none. */
  readonly shardParameter: string;
  /** The job's parameter (spec.parameter, or the trigger's); "" when none. */
  readonly parameter: string;
  /** The scheduled (or triggered) instant this execution serves. */
  readonly fireTime: Date;
  /** Deterministic id "JOB/FIRE_UNIX_MS/SHARD/ATTEMPT": the same for a retry of the same attempt. */
  readonly executionId: string;
  /** Attempt number, from 1; a failover re-run or a retry increments it. */
  readonly attempt: number;
  /**
   * Aborts when the handler must stop: its timeout passed, it was cancelled, the agent lost its
   * lease (fenced) or is shutting down. The reason is a ShardlineError saying which. A handler
   * that ignores it keeps running in the background, but its outcome is no longer reported.
   */
  readonly signal: AbortSignal;
  /** The id of the agent running it. */
  readonly agentId: string;
  /** W3C trace context of the fire (traceparent, tracestate), for the handler's own spans. */
  readonly traceContext: Readonly<Record<string, string>>;
  /** A logger bound to this execution (executionId, job, shard). */
  readonly log: Logger;
}

/**
 * Runs one execution. The returned value (or resolved promise) becomes the execution's result:
 * a string as is, anything else as JSON, truncated to the agent's maxResultBytes. A throw or a
 * rejection makes the execution FAILED with the error's message.
 */
export type Handler = (ctx: HandlerContext) => Promise<unknown> | unknown;

/** Handlers by the name a job's `spec.handler` refers to. */
export type HandlerMap = Record<string, Handler>;

/**
 * Declares a handler module's default export with its types checked:
 * `export default defineHandlers({ "billing-rollup": async (ctx) => { ... } })`.
 */
export function defineHandlers<M extends HandlerMap>(handlers: M): M {
  return handlers;
}

/**
 * Imports the ES module at `modulePath` (absolute, or relative to the working directory) and
 * returns its default export, which must map handler names to functions. Fails with an
 * invalid-argument ShardlineError naming `--handlers` when the file is missing, cannot be
 * imported, has no default export, or has an entry that is not a function.
 */
export async function loadHandlers(modulePath: string): Promise<HandlerMap> {
  const absolute = resolve(process.cwd(), modulePath);
  if (!existsSync(absolute)) {
    throw invalidHandlers(modulePath, `no file at ${absolute}`);
  }
  let module: { default?: unknown };
  try {
    module = (await import(pathToFileURL(absolute).href)) as { default?: unknown };
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw invalidHandlers(modulePath, `cannot import ${absolute}: ${reason}`, cause);
  }
  const map = module.default;
  if (map === undefined || map === null || typeof map !== "object" || Array.isArray(map)) {
    throw invalidHandlers(modulePath, `${absolute} has no default export mapping handler names to functions`);
  }
  const handlers: HandlerMap = {};
  for (const [name, handler] of Object.entries(map)) {
    if (typeof handler !== "function") {
      throw invalidHandlers(modulePath, `the default export's entry "${name}" is a ${describe(handler)}, not a function`);
    }
    handlers[name] = handler as Handler;
  }
  return handlers;
}

const ALLOWED = "an ES module whose default export maps handler names to functions";

function invalidHandlers(modulePath: string, reason: string, cause?: unknown): ShardlineError {
  return new ShardlineError(
    "invalid-argument",
    `--handlers: ${reason}; expected ${ALLOWED}`,
    { field: "--handlers", value: modulePath, allowed: ALLOWED },
    cause === undefined ? undefined : { cause },
  );
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}
