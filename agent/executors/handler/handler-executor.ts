import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { ShardlineError } from "../../../shared/errors.js";
import {
  ExecutionUpdateSchema,
  type ExecutionContext,
  type ExecutionUpdate,
} from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import type { HandlerContext, HandlerMap } from "../../sdk.js";

/** The states an execution can be stopped with from outside. */
export type StopState = ExecutionState.CANCELLED | ExecutionState.LOST;

/**
 * One execution on its way. Every executor (handler, script, HTTP, Kubernetes) hands the agent
 * one of these; the agent only starts and stops it and listens to its reports.
 */
export interface ExecutionRun {
  /** The context it was dispatched with. */
  readonly context: ExecutionContext;
  /** True once its terminal state was reported. */
  readonly finished: boolean;
  /** Reports RUNNING and starts the work. */
  start(): void;
  /**
   * Aborts it and reports `state` with `reason` at once, unless it already finished. What the
   * work does afterwards is no longer reported.
   */
  stop(state: StopState, reason: string): void;
}

/** What a HandlerExecutor needs from the agent. */
export interface HandlerExecutorOptions {
  /** The agent's id, for HandlerContext.agentId. */
  agentId: string;
  /** The handlers by name. */
  handlers: HandlerMap;
  /** Parent of each execution's logger. */
  logger: Logger;
  /** Longest result (and error) text reported, in UTF-8 bytes. */
  maxResultBytes: number;
  /** Receives RUNNING, then exactly one terminal update, synchronously as they happen. */
  report: (update: ExecutionUpdate) => void;
  /** Wall clock in Unix ms, for started/finished stamps. Default Date.now. */
  wallClock?: () => number;
}

/**
 * Runs executions with in-process handler functions.
 *
 * A handler is told to stop through its AbortSignal. JavaScript cannot kill a function that
 * ignores the signal, so the executor does not wait for it: the terminal state (TIMED_OUT,
 * CANCELLED, LOST) is reported the moment the abort happens, and the handler's promise is left
 * to settle in the background; when it does, that is logged and its outcome discarded. This
 * keeps the agent's reports (and a shard's release) from hanging on a handler that never ends;
 * the cost is that such a handler may still be doing work after its shard moved, which only a
 * process boundary (the script executor) can prevent.
 */
export class HandlerExecutor {
  readonly #options: HandlerExecutorOptions;
  readonly #wallClock: () => number;

  constructor(options: HandlerExecutorOptions) {
    this.#options = options;
    this.#wallClock = options.wallClock ?? Date.now;
  }

  /** Prepares one execution; call start() on the result to run it. */
  create(context: ExecutionContext): ExecutionRun {
    return new HandlerRun(context, this.#options, this.#wallClock);
  }
}

class HandlerRun implements ExecutionRun {
  readonly #controller = new AbortController();
  readonly #log: Logger;
  #finished = false;
  #startedAt = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly context: ExecutionContext,
    private readonly options: HandlerExecutorOptions,
    private readonly wallClock: () => number,
  ) {
    this.#log = options.logger.child({ executionId: context.executionId, job: context.job, shard: context.shard });
  }

  get finished(): boolean {
    return this.#finished;
  }

  start(): void {
    if (this.#startedAt !== 0 || this.#finished) return;
    const { context } = this;
    const handler = Object.hasOwn(this.options.handlers, context.handler) ? this.options.handlers[context.handler] : undefined;
    if (handler === undefined) {
      this.#finish(ExecutionState.FAILED, { error: `no handler named ${JSON.stringify(context.handler)} on this agent` });
      return;
    }
    this.#startedAt = this.wallClock();
    this.options.report(this.#update(ExecutionState.RUNNING, {}));
    if (context.timeoutMs > 0) {
      this.#timer = setTimeout(() => this.#abort(ExecutionState.TIMED_OUT, `timed out after ${context.timeoutMs} ms`), context.timeoutMs);
    }
    let outcome: Promise<unknown>;
    try {
      // Called synchronously, not in a .then(): every microtask before the handler is fire lag.
      outcome = Promise.resolve(handler(this.#handlerContext()));
    } catch (error) {
      outcome = Promise.reject(error);
    }
    outcome.then(
      (value) => this.#settled(() => this.#finish(ExecutionState.SUCCEEDED, { result: renderResult(value) }), "returned"),
      (error: unknown) => this.#settled(() => this.#finish(ExecutionState.FAILED, { error: errorText(error) }), `threw: ${errorText(error)}`),
    );
  }

  stop(state: StopState, reason: string): void {
    this.#abort(state, reason);
  }

  #abort(state: ExecutionState.TIMED_OUT | StopState, reason: string): void {
    if (this.#finished) return;
    // Report first: an abort listener in the handler must not be able to run before the
    // terminal state is settled, or a handler that returns on abort would read as SUCCEEDED.
    this.#finish(state, { error: reason });
    this.#controller.abort(new ShardlineError("unavailable", `execution ${this.context.executionId} aborted: ${reason}`));
  }

  /** The handler's promise settled: report it, or log it when the execution was already over. */
  #settled(report: () => void, how: string): void {
    if (!this.#finished) {
      report();
      return;
    }
    if (this.#controller.signal.aborted) {
      this.#log.warn({ handler: this.context.handler }, `handler ${how} after it was aborted; its outcome is discarded`);
    }
  }

  #finish(state: ExecutionState, fields: { error?: string; result?: string }): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    const update = this.#update(state, fields);
    update.finishedAtUnixMs = BigInt(Math.trunc(this.wallClock()));
    this.options.report(update);
  }

  #update(state: ExecutionState, fields: { error?: string; result?: string }): ExecutionUpdate {
    const limit = this.options.maxResultBytes;
    return create(ExecutionUpdateSchema, {
      executionId: this.context.executionId,
      state,
      startedAtUnixMs: BigInt(Math.trunc(this.#startedAt)),
      error: truncateUtf8(fields.error ?? "", limit),
      result: truncateUtf8(fields.result ?? "", limit),
    });
  }

  #handlerContext(): HandlerContext {
    const { context } = this;
    return {
      job: context.job,
      shard: context.shard,
      shardCount: context.shardCount,
      shardParameter: context.shardParameter,
      parameter: context.parameter,
      fireTime: new Date(Number(context.fireTimeUnixMs)),
      executionId: context.executionId,
      attempt: context.attempt,
      signal: this.#controller.signal,
      agentId: this.options.agentId,
      traceContext: { ...context.traceContext },
      log: this.#log,
    };
  }
}

/** A handler's return value as result text: strings as they are, anything else as JSON. */
export function renderResult(value: unknown): string {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") return value;
  try {
    const json = JSON.stringify(value, (_key, inner: unknown) => (typeof inner === "bigint" ? inner.toString() : inner));
    return json ?? String(value);
  } catch {
    // Cycles and other unserialisable values still deserve a trace in the history.
    return String(value);
  }
}

/** The longest prefix of `text` that fits in `maxBytes` of UTF-8, never cutting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  // A UTF-16 unit never takes more than 3 UTF-8 bytes, so short strings need no encoding.
  if (text.length * 3 <= maxBytes) return text;
  const { read } = encoder.encodeInto(text, new Uint8Array(maxBytes));
  return text.slice(0, read);
}

const encoder = new TextEncoder();

function errorText(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
