import type { Logger } from "pino";
import { ShardlineError } from "../../shared/errors.js";
import type { ExecutionContext, ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { attachTraceContext } from "../../shared/telemetry/log-fields.js";
import type { ExecutionListeners, ExecutionOutcome, ExecutionOutcomeState, HandlerContext } from "../sdk.js";
import {
  RunReports,
  type AbortState,
  type ExecutionRun,
  type Executor,
  type LeaseCheck,
  type ReportSink,
  type StopState,
  isLeaseLost,
  runLogFields,
} from "./execution-run.js";
import { handlerContextOf, type HandlerContextParts } from "./handler-context.js";
import { RunAbort } from "./run-abort.js";

/** What ExecutionListening needs from the agent. */
export interface ExecutionListeningOptions {
  /** The hooks to run around every execution. */
  listeners: ExecutionListeners;
  /** Where every report goes once the listeners have seen it: the agent. */
  report: ReportSink;
  /** The agent's id, for HandlerContext.agentId. */
  agentId: string;
  /** Whether the agent's lease holds now, by its own clock: what HandlerContext.assertLease checks. */
  leaseValid: LeaseCheck;
  /** Parent of each execution's logger; also where a failing afterExecution is logged. */
  logger: Logger;
  /** Longest error text reported, in UTF-8 bytes (for a failing beforeExecution). */
  maxResultBytes: number;
  /** Wall clock in Unix ms, for report stamps. Default Date.now. */
  wallClock?: () => number;
  /** Monotonic clock in ms, for ExecutionOutcome.durationMs. Default performance.now. */
  clock?: () => number;
}

/**
 * Runs an agent's ExecutionListeners around the executions of any executor. The executors report
 * to `report` instead of to the agent; `wrap` makes their runs call beforeExecution first. A run
 * with a beforeExecution reports RUNNING before calling it, so the controller (and the agent's
 * next Hello) counts the execution as running while the hook works; the work's own RUNNING is
 * then not repeated. Every report reaches the agent before afterExecution is called, so a hook
 * can neither delay nor change an outcome.
 */
export class ExecutionListening {
  readonly #options: ExecutionListeningOptions;
  readonly #runs = new Map<string, ListenedRun>();

  constructor(options: ExecutionListeningOptions) {
    this.#options = options;
  }

  /** The report sink to give the executors. */
  readonly report: ReportSink = (update) => {
    const run = this.#runs.get(update.executionId);
    if (update.state === ExecutionState.RUNNING) {
      // The work's own RUNNING is not repeated, but one carrying log lines goes on.
      if (run?.runningReported && update.log === undefined) return;
      if (run) run.runningReported = true;
      this.#options.report(update);
      return;
    }
    this.#runs.delete(update.executionId);
    this.#options.report(update);
    run?.ended(update);
  };

  /** An executor whose runs are listened to. */
  wrap(executor: Executor): Executor {
    return {
      create: (context) => {
        const run = new ListenedRun(context, executor.create(context), this.#options, this.report);
        this.#runs.set(context.executionId, run);
        return run;
      },
    };
  }
}

/** Where a listened run is: not started, in beforeExecution, doing the work, or over. */
type Phase = "new" | "before" | "work" | "done";

class ListenedRun implements ExecutionRun, HandlerContextParts {
  /** Set by ExecutionListening once RUNNING went out, so the work's own RUNNING is not repeated. */
  runningReported = false;
  readonly #inner: ExecutionRun;
  readonly #options: ExecutionListeningOptions;
  readonly #reports: RunReports;
  readonly abort = new RunAbort();
  /** The run's logger, made when a hook reads ctx.log or a line is logged. */
  #log: Logger | undefined;
  /** The trace context its lines fall back to, once started. */
  #logTraceContext: Readonly<Record<string, string>> | undefined;
  #ctx: HandlerContext;
  readonly #clock: () => number;
  #phase: Phase = "new";
  #traceContext: Readonly<Record<string, string>> | undefined;
  #startedAt: number | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly context: ExecutionContext,
    inner: ExecutionRun,
    options: ExecutionListeningOptions,
    report: ReportSink,
  ) {
    this.#inner = inner;
    this.#options = options;
    this.#clock = options.clock ?? (() => performance.now());
    this.#ctx = handlerContextOf(context, this);
    // Reports what happens before the work starts: RUNNING, a failing beforeExecution, a stop.
    this.#reports = new RunReports(context, { maxResultBytes: options.maxResultBytes, report, ...(options.wallClock ? { wallClock: options.wallClock } : {}) });
  }

  get finished(): boolean {
    return this.#reports.finished || this.#inner.finished;
  }

  get value(): unknown {
    return this.#inner.value;
  }

  start(traceContext?: Readonly<Record<string, string>>): void {
    if (this.#phase !== "new") return;
    this.#startedAt = this.#clock();
    if (traceContext !== undefined && traceContext !== this.context.traceContext) {
      // The hooks see the trace context the work runs under, as the handler does.
      this.#traceContext = traceContext;
      this.#ctx = handlerContextOf(this.context, this, traceContext);
    }
    this.#logTraceContext = traceContext ?? this.context.traceContext;
    if (this.#log !== undefined) attachTraceContext(this.#log, this.#logTraceContext);
    const before = this.#options.listeners.beforeExecution;
    if (before === undefined) {
      this.#phase = "work";
      this.#inner.start(this.#traceContext);
      return;
    }
    this.#phase = "before";
    this.#reports.running();
    let returned: unknown;
    try {
      returned = before.call(this.#options.listeners, this.#ctx);
    } catch (error) {
      this.#endEarly(this.#failedState(error), `beforeExecution: ${errorText(error)}`);
      return;
    }
    // A synchronous hook adds no turn of the event loop before the work: that would be fire lag.
    if (!isPromiseLike(returned)) {
      this.#startWork();
      return;
    }
    const { timeoutMs } = this.context;
    if (timeoutMs > 0) {
      this.#timer = setTimeout(() => this.#endEarly(ExecutionState.TIMED_OUT, `timed out after ${timeoutMs} ms in beforeExecution`), timeoutMs);
    }
    Promise.resolve(returned).then(
      () => this.#startWork(),
      (error: unknown) => this.#endEarly(this.#failedState(error), `beforeExecution: ${errorText(error)}`),
    );
  }

  flushLog(): void {
    if (this.#phase === "work") this.#inner.flushLog?.();
  }

  stop(state: StopState, reason: string): void {
    if (this.#phase === "work") this.#inner.stop(state, reason);
    else this.#endEarly(state, reason);
  }

  /** The terminal report went out: tell afterExecution. Called by ExecutionListening. */
  ended(update: ExecutionUpdate): void {
    this.#phase = "done";
    clearTimeout(this.#timer);
    const state = outcomeState(update.state);
    // The same meaning as a handler's signal: aborted when the execution was, not when it failed.
    if (state === "timed-out" || state === "cancelled" || state === "lost") {
      this.abort.abort(new ShardlineError("unavailable", `execution ${this.context.executionId} aborted: ${update.error}`));
    }
    const after = this.#options.listeners.afterExecution;
    if (after === undefined) return;
    const result = state === "succeeded" ? (this.#inner.value ?? (update.result === "" ? undefined : update.result)) : undefined;
    const outcome: ExecutionOutcome = {
      state,
      durationMs: this.#startedAt === undefined ? 0 : Math.max(0, this.#clock() - this.#startedAt),
      ...(state !== "succeeded" && update.error !== "" ? { error: update.error } : {}),
      ...(result === undefined ? {} : { result }),
    };
    try {
      const returned = after.call(this.#options.listeners, this.#ctx, outcome);
      if (isPromiseLike(returned)) Promise.resolve(returned).catch((error: unknown) => this.#afterFailed(error));
    } catch (error) {
      this.#afterFailed(error);
    }
  }

  /** A failing beforeExecution is FAILED, unless assertLease refused it: LOST then, as for a handler. */
  #failedState(error: unknown): ExecutionState.FAILED | ExecutionState.LOST {
    return isLeaseLost(error, this.context.executionId) ? ExecutionState.LOST : ExecutionState.FAILED;
  }

  get agentId(): string {
    return this.#options.agentId;
  }

  get leaseValid(): LeaseCheck {
    return this.#options.leaseValid;
  }

  handlerLog(): Logger {
    return this.#logger();
  }

  #logger(): Logger {
    if (this.#log === undefined) {
      this.#log = this.#options.logger.child(runLogFields(this.context));
      if (this.#logTraceContext !== undefined) attachTraceContext(this.#log, this.#logTraceContext);
    }
    return this.#log;
  }

  #startWork(): void {
    clearTimeout(this.#timer);
    if (this.#phase !== "before") return;
    this.#phase = "work";
    this.#inner.start(this.#traceContext);
  }

  /** Ends the execution before its work started; the work never runs. */
  #endEarly(state: AbortState | ExecutionState.FAILED, error: string): void {
    if (this.#phase === "work" || this.#phase === "done") return;
    clearTimeout(this.#timer);
    this.#phase = "done";
    this.#reports.finish(state, { error });
  }

  #afterFailed(error: unknown): void {
    this.#logger().error({ err: error }, "afterExecution failed; the execution's outcome stands");
  }
}

function outcomeState(state: ExecutionState): ExecutionOutcomeState {
  switch (state) {
    case ExecutionState.SUCCEEDED:
      return "succeeded";
    case ExecutionState.TIMED_OUT:
      return "timed-out";
    case ExecutionState.CANCELLED:
      return "cancelled";
    case ExecutionState.LOST:
      return "lost";
    default:
      return "failed";
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function";
}

function errorText(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
