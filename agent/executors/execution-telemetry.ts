import { ROOT_CONTEXT, SpanKind, SpanStatusCode, context as otelContext, trace, type Attributes, type Span } from "@opentelemetry/api";
import { executionStateName } from "../../shared/execution-view.js";
import type { ExecutionContext, ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { SPAN_ATTRIBUTES } from "../../shared/telemetry/span-attributes.js";
import { extractTraceContext, injectTraceContext, registeredTracer } from "../../shared/telemetry/tracing.js";
import { VERSION } from "../../shared/version.js";
import { wallClockMs } from "../runtime/on-time-starts.js";
import { fireTimeIso, type ExecutionRun, type Executor, type ReportSink, type StopState } from "./execution-run.js";

/** The name of the span an agent makes per execution. */
export const EXECUTION_SPAN = "shardline.execution";

/** The instrumentation scope of the agent's spans. */
const TRACER_NAME = "shardline-agent";

/** Where ExecutionTelemetry counts starts and outcomes: the agent's metrics. */
export interface ExecutionMetrics {
  /**
   * An execution started; `fireLagSeconds` is how long after its fire instant, or undefined when
   * that says nothing about being on time (a retry, a failover run, a completion hook).
   */
  started(job: string, fireLagSeconds: number | undefined): void;
  /** An execution ended in `state`; `durationSeconds` is undefined when it never started. */
  ended(job: string, state: ExecutionState, durationSeconds: number | undefined): void;
}

/** What ExecutionTelemetry needs from the agent. */
export interface ExecutionTelemetryOptions {
  /** The agent's id, for the spans. */
  agentId: string;
  /** Where every report goes once it was observed: the agent. */
  report: ReportSink;
  /** Where starts and outcomes are counted; none when the agent has no metrics. */
  metrics?: ExecutionMetrics;
  /** Wall clock in Unix ms with a fraction, for the fire lag. Default the one runs are started by. */
  wallClock?: () => number;
  /** Monotonic clock in ms, for durations. Default performance.now. */
  clock?: () => number;
}

/**
 * Traces and measures the executions of any executor: the outermost layer around a run, so that
 * its span and duration cover all of it (beforeExecution included).
 *
 * When a tracer provider is registered, each run that starts gets a `shardline.execution` span
 * (kind CONSUMER), a child of the trace context the controller sent in the execute message, from
 * its start to its terminal report. The work runs inside that span's context (a handler's own
 * spans nest under it), and gets the span's trace context to pass on: HandlerContext.traceContext,
 * a script's TRACEPARENT, an HTTP call's traceparent header. Without a tracer provider no span is
 * made and the controller's context is passed on unchanged.
 */
export class ExecutionTelemetry {
  readonly #options: ExecutionTelemetryOptions;
  readonly #runs = new Map<string, ObservedRun>();
  readonly #scope: RunScope;

  constructor(options: ExecutionTelemetryOptions) {
    this.#options = options;
    this.#scope = {
      agentId: options.agentId,
      metrics: options.metrics,
      wallClock: options.wallClock ?? wallClockMs,
      clock: options.clock ?? (() => performance.now()),
      runs: this.#runs,
    };
  }

  /** The report sink to give the executors (or the listeners' layer in between). */
  readonly report: ReportSink = (update) => {
    if (update.state !== ExecutionState.RUNNING && this.#runs.size > 0) {
      const run = this.#runs.get(update.executionId);
      if (run !== undefined) {
        this.#runs.delete(update.executionId);
        // Before the agent hears of it: whoever waits for the outcome finds the span ended.
        run.ended(update);
      }
    }
    this.#options.report(update);
  };

  /** An executor whose runs are traced and measured. */
  wrap(executor: Executor): Executor {
    return {
      create: (context) => {
        const run = new ObservedRun(context, executor.create(context), this.#scope);
        // Counted however it ends, started or not.
        if (this.#scope.metrics !== undefined) this.#runs.set(context.executionId, run);
        return run;
      },
    };
  }
}

/** What every observed run of one ExecutionTelemetry shares. */
interface RunScope {
  agentId: string;
  metrics: ExecutionMetrics | undefined;
  wallClock: () => number;
  clock: () => number;
  /**
   * Where a run is found when its terminal report comes, to count it and end its span: every run
   * when there are metrics; without, only a run that made a span (untraced, unmeasured runs are
   * not kept at all).
   */
  runs: Map<string, ObservedRun>;
}

class ObservedRun implements ExecutionRun {
  readonly #inner: ExecutionRun;
  readonly #scope: RunScope;
  #started = false;
  /** The monotonic clock at the start, for the duration; read only when there are metrics. */
  #startedAt: number | undefined;
  #span: Span | undefined;

  constructor(
    readonly context: ExecutionContext,
    inner: ExecutionRun,
    scope: RunScope,
  ) {
    this.#inner = inner;
    this.#scope = scope;
  }

  get finished(): boolean {
    return this.#inner.finished;
  }

  get value(): unknown {
    return this.#inner.value;
  }

  start(): void {
    // Stopped before its instant came: nothing starts, nothing is measured.
    if (this.#started || this.#inner.finished) return;
    this.#started = true;
    const scope = this.#scope;
    const { context } = this;
    if (scope.metrics !== undefined) {
      this.#startedAt = scope.clock();
      scope.metrics.started(context.job, isOnTimeMeasure(context) ? (scope.wallClock() - Number(context.fireTimeUnixMs)) / 1000 : undefined);
    }
    const tracer = registeredTracer(TRACER_NAME, VERSION);
    if (tracer === undefined) {
      this.#inner.start();
      return;
    }
    const parent = extractTraceContext(context.traceContext, ROOT_CONTEXT);
    const span = tracer.startSpan(EXECUTION_SPAN, { kind: SpanKind.CONSUMER, attributes: spanAttributes(context, scope.agentId) }, parent);
    this.#span = span;
    if (scope.metrics === undefined) scope.runs.set(context.executionId, this);
    const active = trace.setSpan(parent, span);
    const carrier = injectTraceContext(active);
    // The work's synchronous part, and every callback and promise it schedules, run in the span's context.
    otelContext.with(active, () => this.#inner.start(carrier));
  }

  flushLog(): void {
    this.#inner.flushLog?.();
  }

  stop(state: StopState, reason: string): void {
    this.#inner.stop(state, reason);
  }

  /** The terminal report is on its way to the agent. Called by ExecutionTelemetry. */
  ended(update: ExecutionUpdate): void {
    const startedAt = this.#startedAt;
    const metrics = this.#scope.metrics;
    if (metrics !== undefined) metrics.ended(this.context.job, update.state, startedAt === undefined ? undefined : (this.#scope.clock() - startedAt) / 1000);
    const span = this.#span;
    if (span === undefined) return;
    this.#span = undefined;
    span.setAttribute(SPAN_ATTRIBUTES.outcome, executionStateName(update.state));
    // A cancel is asked for; every other outcome but success is the execution failing.
    if (update.state !== ExecutionState.SUCCEEDED && update.state !== ExecutionState.CANCELLED) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: update.error });
    }
    span.end();
  }
}

/**
 * Whether the time from the fire instant to this start says how punctual the agent was: not for
 * a retry or a failover run (started later on purpose), nor for a completion hook (after the
 * whole fire).
 */
function isOnTimeMeasure(context: ExecutionContext): boolean {
  return context.attempt <= 1 && context.fireOutcome === undefined;
}

function spanAttributes(context: ExecutionContext, agentId: string): Attributes {
  const attributes: Attributes = {
    [SPAN_ATTRIBUTES.job]: context.job,
    [SPAN_ATTRIBUTES.shardCount]: context.shardCount,
    [SPAN_ATTRIBUTES.fireTime]: fireTimeIso(context),
    [SPAN_ATTRIBUTES.fireTimeUnixMs]: Number(context.fireTimeUnixMs),
    [SPAN_ATTRIBUTES.attempt]: context.attempt,
    [SPAN_ATTRIBUTES.jobRevision]: Number(context.revision),
    [SPAN_ATTRIBUTES.executionId]: context.executionId,
    [SPAN_ATTRIBUTES.agentId]: agentId,
    [SPAN_ATTRIBUTES.executor]: context.script ? "script" : context.http ? "http" : "handler",
  };
  if (context.fireOutcome === undefined) attributes[SPAN_ATTRIBUTES.shard] = context.shard;
  else attributes[SPAN_ATTRIBUTES.fireComplete] = true;
  if (!context.script && !context.http) attributes[SPAN_ATTRIBUTES.handler] = context.handler;
  return attributes;
}
