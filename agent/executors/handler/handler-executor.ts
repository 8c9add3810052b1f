import type { Logger } from "pino";
import { ShardlineError } from "../../../shared/errors.js";
import type { ExecutionContext } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { attachTraceContext } from "../../../shared/telemetry/log-fields.js";
import { capturedLogger } from "./captured-logger.js";
import type { HandlerMap } from "../../sdk.js";
import {
  RunReports,
  handlerContextOf,
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

class HandlerRun implements ExecutionRun {
  readonly #controller = new AbortController();
  readonly #log: Logger;
  readonly #reports: RunReports;
  #timer: NodeJS.Timeout | undefined;
  #value: unknown;
  #begun = false;

  constructor(
    readonly context: ExecutionContext,
    private readonly options: HandlerExecutorOptions,
  ) {
    this.#log = options.logger.child(runLogFields(context));
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
    // Lines logged outside the execution's span (a timeout, a stop) still name its trace.
    attachTraceContext(this.#log, traceContext);
    const startedAt = this.#reports.stampStart();
    if (context.timeoutMs > 0) {
      this.#timer = setTimeout(() => this.#abort(ExecutionState.TIMED_OUT, `timed out after ${context.timeoutMs} ms`), context.timeoutMs);
    }
    let outcome: Promise<unknown>;
    try {
      // Called synchronously, not in a .then(), and before RUNNING is reported: everything
      // before the handler is fire lag, for this run and for every run starting after it.
      const { agentId, leaseValid } = this.options;
      const log = capturedLogger(this.#log, () => this.#reports.log);
      outcome = Promise.resolve(handler(handlerContextOf(context, { agentId, signal: this.#controller.signal, log, leaseValid }, traceContext)));
    } catch (error) {
      outcome = Promise.reject(error);
    }
    // Whatever the handler did synchronously, its outcome is reported no sooner than a microtask
    // from now, so RUNNING still comes first.
    this.#reports.running(startedAt);
    outcome.then(
      (value) =>
        this.#settled(() => {
          // Kept before the report, which listeners hear synchronously.
          this.#value = value;
          this.#finish(ExecutionState.SUCCEEDED, { result: renderResult(value) });
        }, "returned"),
      (error: unknown) => {
        const state = isLeaseLost(error, context.executionId) ? ExecutionState.LOST : ExecutionState.FAILED;
        this.#settled(() => this.#finish(state, { error: errorText(error) }), `threw: ${errorText(error)}`);
      },
    );
  }

  stop(state: StopState, reason: string): void {
    this.#abort(state, reason);
  }

  flushLog(): void {
    this.#reports.flushLog();
  }

  #abort(state: AbortState, reason: string): void {
    if (this.#reports.finished) return;
    // Report first: an abort listener in the handler must not be able to run before the
    // terminal state is settled, or a handler that returns on abort would read as SUCCEEDED.
    this.#finish(state, { error: reason });
    this.#controller.abort(new ShardlineError("unavailable", `execution ${this.context.executionId} aborted: ${reason}`));
  }

  /** The handler's promise settled: report it, or log it when the execution was already over. */
  #settled(report: () => void, how: string): void {
    if (!this.#reports.finished) {
      report();
      return;
    }
    if (this.#controller.signal.aborted) {
      this.#log.warn({ handler: this.context.handler }, `handler ${how} after it was aborted; its outcome is discarded`);
    }
  }

  #finish(state: ExecutionState, fields: { error?: string; result?: string }): void {
    clearTimeout(this.#timer);
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
