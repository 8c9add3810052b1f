import type { Logger } from "pino";
import { ShardlineError } from "../../../shared/errors.js";
import type { ExecutionContext } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { attachTraceContext } from "../../../shared/telemetry/log-fields.js";
import { capturedLogger } from "./captured-logger.js";
import { handlerContextOf, type HandlerContextParts } from "../handler-context.js";
import { RunAbort } from "../run-abort.js";
import type { HandlerMap } from "../../sdk.js";
import {
  RunReports,
  isLeaseLost,
  runLogFields,
  type AbortState,
  type ExecutionRun,
  type Executor,
  type LeaseCheck,
  type ReportOptions,
  type StopState,
} from "../execution-run.js";

/** What a HandlerExecutor needs from the agent. */
export interface HandlerExecutorOptions extends ReportOptions {
  /** The agent's id, for HandlerContext.agentId. */
  agentId: string;
  /** The handlers by name. */
  handlers: HandlerMap;
  /** Parent of each execution's logger. */
  logger: Logger;
  /** Whether the agent's lease holds now, by its own clock: what HandlerContext.assertLease checks. */
  leaseValid: LeaseCheck;
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
 * process boundary (the script executor) can prevent, and HandlerContext.assertLease and
 * fencingToken let a handler refuse (docs/fencing.md). A handler that fails with its own
 * assertLease's LeaseLostError is reported LOST, not FAILED: the fire is then run again by
 * failover instead of counting as the job's failure.
 */
export class HandlerExecutor implements Executor {
  readonly #options: HandlerExecutorOptions;

  constructor(options: HandlerExecutorOptions) {
    this.#options = options;
  }

  /** Prepares one execution; call start() on the result to run it. */
  create(context: ExecutionContext): ExecutionRun {
    return new HandlerRun(context, this.#options);
  }
}

class HandlerRun implements ExecutionRun, HandlerContextParts {
  readonly abort = new RunAbort();
  readonly #reports: RunReports;
  /** The run's logger, made at its first line: most runs log nothing. */
  #log: Logger | undefined;
  /** ctx.log: the run's logger, capturing into the execution's log; made when the handler reads it. */
  #handlerLog: Logger | undefined;
  /** The trace context the work runs under, for lines logged outside its span. */
  #traceContext: Readonly<Record<string, string>> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #value: unknown;
  #begun = false;

  constructor(
    readonly context: ExecutionContext,
    private readonly options: HandlerExecutorOptions,
  ) {
    this.#reports = new RunReports(context, options);
  }

  get finished(): boolean {
    return this.#reports.finished;
  }

  get value(): unknown {
    return this.#value;
  }

  start(traceContext: Readonly<Record<string, string>> = this.context.traceContext): void {
    if (this.#begun || this.#reports.finished) return;
    this.#begun = true;
    const { context } = this;
    const handler = Object.hasOwn(this.options.handlers, context.handler) ? this.options.handlers[context.handler] : undefined;
    if (handler === undefined) {
      this.#finish(ExecutionState.FAILED, { error: `no handler named ${JSON.stringify(context.handler)} on this agent` });
      return;
    }
    this.#traceContext = traceContext;
    const startedAt = this.#reports.stampStart();
    if (context.timeoutMs > 0) {
      this.#timer = setTimeout(() => this.#abortRun(ExecutionState.TIMED_OUT, `timed out after ${context.timeoutMs} ms`), context.timeoutMs);
    }
    let outcome: Promise<unknown>;
    try {
      // Called synchronously, not in a .then(), and before RUNNING is reported: everything
      // before the handler is fire lag, for this run and for every run starting after it.
      outcome = Promise.resolve(handler(handlerContextOf(context, this, traceContext)));
    } catch (error) {
      outcome = Promise.reject(error);
    }
    // Whatever the handler did synchronously, its outcome is reported no sooner than a microtask
    // from now, so RUNNING still comes first.
    this.#reports.running(startedAt);
    outcome.then(
      (value) => {
        if (this.#reports.finished) return this.#late("returned");
        // Kept before the report, which listeners hear synchronously.
        this.#value = value;
        this.#finish(ExecutionState.SUCCEEDED, { result: renderResult(value) });
      },
      (error: unknown) => {
        if (this.#reports.finished) return this.#late(`threw: ${errorText(error)}`);
        const state = isLeaseLost(error, context.executionId) ? ExecutionState.LOST : ExecutionState.FAILED;
        this.#finish(state, { error: errorText(error) });
      },
    );
  }

  stop(state: StopState, reason: string): void {
    this.#abortRun(state, reason);
  }

  flushLog(): void {
    this.#reports.flushLog();
  }

  /** The run's logger, bound to the execution and, outside any span, naming its trace. */
  #logger(): Logger {
    if (this.#log === undefined) {
      this.#log = this.options.logger.child(runLogFields(this.context));
      // Lines logged outside the execution's span (a timeout, a stop) still name its trace.
      if (this.#traceContext !== undefined) attachTraceContext(this.#log, this.#traceContext);
    }
    return this.#log;
  }

  get agentId(): string {
    return this.options.agentId;
  }

  get leaseValid(): LeaseCheck {
    return this.options.leaseValid;
  }

  handlerLog(): Logger {
    return (this.#handlerLog ??= capturedLogger(this.#logger(), () => this.#reports.log));
  }

  #abortRun(state: AbortState, reason: string): void {
    if (this.#reports.finished) return;
    // Report first: an abort listener in the handler must not be able to run before the
    // terminal state is settled, or a handler that returns on abort would read as SUCCEEDED.
    this.#finish(state, { error: reason });
    this.abort.abort(new ShardlineError("unavailable", `execution ${this.context.executionId} aborted: ${reason}`));
  }

  /** The handler's promise settled after the execution was over: logged when it had been aborted, its outcome discarded. */
  #late(how: string): void {
    if (this.abort.aborted) {
      this.#logger().warn({ handler: this.context.handler }, `handler ${how} after it was aborted; its outcome is discarded`);
    }
  }

  #finish(state: ExecutionState, fields: { error?: string; result?: string }): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#reports.finish(state, fields);
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

function errorText(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
