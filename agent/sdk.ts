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
  /**
   * A number that only grows for this shard, across owners and controller terms (term * 2^32 +
   * generation of the assignment the run is under; for a spec.onFireComplete hook, of the newest
   * assignment when it was dispatched). Make an external side effect conditional on it, e.g.
   * `UPDATE ... SET ..., fencing_token = $1 WHERE fencing_token <= $1`, and a run of a previous
   * owner that wakes from a pause cannot overwrite the next owner's work. See docs/fencing.md.
   */
  readonly fencingToken: bigint;
  /**
   * The job revision this run executes (`shardline rollout history JOB` lists them): every
   * attempt of one fire of one shard runs the same revision, and while a rollout is under way
   * other shards of the fire may run another. What it runs, its parameters and timeout are this
   * revision's. 0 from a controller that keeps no revisions.
   */
  readonly revision: number;
  /**
   * Throws a LeaseLostError when this run must not act any more: the agent's lease has lapsed by
   * its own clock (the shard may belong to another agent now, even while the run goes on for its
   * disconnect grace), or the run was aborted (signal). Call it right before each side effect.
   * It narrows the window of a paused process to the side effect itself; only fencingToken,
   * checked by the system the effect lands in, closes it.
   */
  assertLease(): void;
  /**
   * W3C trace context (traceparent, tracestate) for work this handler passes on, e.g. in the
   * headers of a call it makes: of this execution's `shardline.execution` span when the agent
   * traces (OTEL_* set), else of the fire as the controller sent it (empty when untraced). When
   * the agent traces, the handler already runs inside that span's context: spans it starts with
   * the OpenTelemetry API nest under it without being given this.
   */
  readonly traceContext: Readonly<Record<string, string>>;
  /** A logger bound to this execution (executionId, job, shard). */
  readonly log: Logger;
  /**
   * Set only when this run is the job's spec.onFireComplete hook: how every shard of the fire
   * ended, by shard number. The hook runs once per fire, after each shard's final attempt
   * (retries and failover runs included); `shard` is then 0 and `executionId` ends in
   * "/complete/ATTEMPT".
   */
  readonly fireOutcome?: readonly FireShardOutcome[];
}

/** Why HandlerContext.assertLease refused: the agent's lease lapsed, or the run was aborted. */
export type LeaseLostReason = "lease-lapsed" | "aborted";

/**
 * Thrown by HandlerContext.assertLease: the run may no longer act on its shard. A handler that
 * lets it propagate ends the execution LOST (not FAILED), so that failover runs the fire again
 * on the shard's owner; whatever the run did before it is the handler's to undo or to fence.
 */
export class LeaseLostError extends ShardlineError {
  constructor(
    message: string,
    /** The execution that was refused. */
    readonly executionId: string,
    /** The refused run's HandlerContext.fencingToken: the shard's next owner holds a greater one. */
    readonly fencingToken: bigint,
    /** "lease-lapsed" (by the agent's own clock) or "aborted" (cancelled, timed out, lost, shut down). */
    readonly reason: LeaseLostReason,
    options?: { cause?: unknown },
  ) {
    super("failed-precondition", message, {}, options);
  }
}

/** How one shard of a fire ended, as a spec.onFireComplete hook is told. */
export interface FireShardOutcome {
  readonly shard: number;
  /** "succeeded", "failed", "timed-out", "cancelled", "lost" or "misfired". */
  readonly state: string;
  /** The id of the shard's final attempt. */
  readonly executionId: string;
  /** Why it did not succeed; absent when it did. */
  readonly error?: string;
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

/** How an execution ended, as afterExecution sees it. */
export type ExecutionOutcomeState = "succeeded" | "failed" | "timed-out" | "cancelled" | "lost";

/** What afterExecution is told about an execution that ended. */
export interface ExecutionOutcome {
  /** The terminal state reported to the controller. */
  readonly state: ExecutionOutcomeState;
  /** Why it did not succeed, as reported; absent when it succeeded. */
  readonly error?: string;
  /**
   * What it produced when it succeeded: a handler's return value itself (not its JSON), the
   * result text of a script or HTTP call; absent when there is none.
   */
  readonly result?: unknown;
  /** Milliseconds from the start of the execution (beforeExecution included) to its outcome. */
  readonly durationMs: number;
}

/**
 * Hooks an agent runs around every execution it starts: handler, script and HTTP alike. Both
 * get the execution's HandlerContext; its signal aborts when the execution is timed out,
 * cancelled or lost, in whichever phase.
 */
export interface ExecutionListeners {
  /**
   * Runs before the work starts; the work waits for a returned promise. A throw or rejection
   * fails the execution with "beforeExecution: <message>", and the work never runs. The job's
   * timeout bounds it on its own; the work then gets the whole timeout.
   */
  beforeExecution?(ctx: HandlerContext): Promise<void> | void;
  /**
   * Runs once the outcome is reported (also after a failing beforeExecution). It cannot change
   * the outcome: a throw or rejection is logged, and nothing waits for a returned promise.
   */
  afterExecution?(ctx: HandlerContext, outcome: ExecutionOutcome): Promise<void> | void;
}

/**
 * Declares a handler module's `listeners` export with its types checked:
 * `export const listeners = defineListeners({ afterExecution: (ctx, outcome) => { ... } })`.
 */
export function defineListeners<L extends ExecutionListeners>(listeners: L): L {
  return listeners;
}

/** What a handler module exports: handlers by name, and optionally listeners. */
export interface HandlerModule {
  /** The default export; {} when a module only exports listeners. */
  handlers: HandlerMap;
  /** The named export `listeners`, when there is one. */
  listeners?: ExecutionListeners;
}

/**
 * Imports the ES module at `modulePath` (absolute, or relative to the working directory) and
 * returns its default export, which must map handler names to functions. Fails with an
 * invalid-argument ShardlineError naming `--handlers` when the file is missing, cannot be
 * imported, has no default export, or has an entry that is not a function.
 */
export async function loadHandlers(modulePath: string): Promise<HandlerMap> {
  return (await importHandlerModule(modulePath, true)).handlers;
}

/**
 * Like loadHandlers, and also returns the module's named `listeners` export (see
 * ExecutionListeners). A module that exports listeners may leave out the default export (an
 * agent that only runs scripts or HTTP calls). Fails like loadHandlers, and when `listeners` is
 * not an object of the two hook functions.
 */
export async function loadHandlerModule(modulePath: string): Promise<HandlerModule> {
  return importHandlerModule(modulePath, false);
}

const LISTENER_HOOKS = ["beforeExecution", "afterExecution"] as const;

async function importHandlerModule(modulePath: string, requireDefault: boolean): Promise<HandlerModule> {
  const absolute = resolve(process.cwd(), modulePath);
  if (!existsSync(absolute)) {
    throw invalidHandlers(modulePath, `no file at ${absolute}`);
  }
  let module: { default?: unknown; listeners?: unknown };
  try {
    module = (await import(pathToFileURL(absolute).href)) as { default?: unknown; listeners?: unknown };
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw invalidHandlers(modulePath, `cannot import ${absolute}: ${reason}`, cause);
  }
  const listeners = requireDefault ? undefined : listenersOf(modulePath, module.listeners);
  const map = module.default;
  if (map === undefined && listeners !== undefined) return { handlers: {}, listeners };
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
  return listeners === undefined ? { handlers } : { handlers, listeners };
}

/** The module's `listeners` export, checked: unknown keys are errors, so a misspelt hook never silently does nothing. */
function listenersOf(modulePath: string, value: unknown): ExecutionListeners | undefined {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalidHandlers(modulePath, `the "listeners" export is a ${describe(value)}, not an object of ${LISTENER_HOOKS.join(" and ")}`);
  }
  for (const [name, hook] of Object.entries(value)) {
    if (!(LISTENER_HOOKS as readonly string[]).includes(name)) {
      throw invalidHandlers(modulePath, `the "listeners" export has "${name}"; it may only have ${LISTENER_HOOKS.join(" and ")}`);
    }
    if (typeof hook !== "function") {
      throw invalidHandlers(modulePath, `the "listeners" export's "${name}" is a ${describe(hook)}, not a function`);
    }
  }
  return value as ExecutionListeners;
}

const ALLOWED =
  "an ES module whose default export maps handler names to functions, and which may export listeners {beforeExecution, afterExecution}";

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
