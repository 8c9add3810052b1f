import type { ExecutionContext, ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { LeaseLostError } from "../sdk.js";
import { truncateUtf8 } from "./output-tail.js";
import { DEFAULT_LOG_BOUNDS, ExecutionLogBuffer, type ExecutionLogBounds } from "./execution-log-buffer.js";

/** The states an execution can be stopped with from outside. */
export type StopState = ExecutionState.CANCELLED | ExecutionState.LOST;

/** The states a run ends in when it is aborted: from outside, or by its own timeout. */
export type AbortState = StopState | ExecutionState.TIMED_OUT;

/**
 * One execution on its way. Every executor (handler, script, HTTP, Kubernetes) hands the agent
 * one of these; the agent only starts and stops it and listens to its reports.
 */
export interface ExecutionRun {
  /** The context it was dispatched with. */
  readonly context: ExecutionContext;
  /** True once its terminal state was reported. */
  readonly finished: boolean;
  /**
   * What the work produced, richer than the reported result text, once it succeeded: a
   * handler's return value. Undefined for executors whose result is text anyway.
   */
  readonly value?: unknown;
  /**
   * Reports RUNNING and starts the work. `traceContext` is the W3C trace context the work runs
   * under and passes on (HandlerContext.traceContext, a script's TRACEPARENT, an HTTP call's
   * traceparent header): the agent's execution span's when tracing is on; default the one the
   * execution was dispatched with.
   */
  start(traceContext?: Readonly<Record<string, string>>): void;
  /**
   * Aborts it and reports `state` with `reason`, unless it already finished. A handler's run
   * reports at once; a script's once its processes are gone (after SIGTERM, then SIGKILL after
   * the kill grace), since until then the work is still going. What the work does after the
   * report is no longer reported.
   */
  stop(state: StopState, reason: string): void;
  /**
   * Ships the lines the run wrote since the last time, with a RUNNING update, while it runs; the
   * agent calls it on a short timer (--log-flush-interval) so a follower sees them live. The
   * terminal update carries the last lines by itself.
   */
  flushLog?(): void;
}

/** Turns execution contexts into runs: one executor per kind of work. */
export interface Executor {
  /** Prepares one execution; call start() on the result to run it. */
  create(context: ExecutionContext): ExecutionRun;
}

/** Receives RUNNING, then exactly one terminal update, synchronously as they happen. */
export type ReportSink = (update: ExecutionUpdate) => void;

/** What every run needs in order to report. */
export interface ReportOptions {
  /** Longest result (and error) text reported, in UTF-8 bytes. */
  maxResultBytes: number;
  /** Receives RUNNING, then exactly one terminal update. */
  report: ReportSink;
  /** Wall clock in Unix ms, for started/finished stamps. Default Date.now. */
  wallClock?: () => number;
  /** How much of each execution's log to keep (--log-max-bytes, --log-max-lines). Default DEFAULT_LOG_BOUNDS. */
  logBounds?: ExecutionLogBounds;
}

/**
 * The reporting half of a run, the same for every executor: RUNNING at most once, then exactly
 * one terminal update, stamped with the wall clock and cut to the contract's size limit.
 */
export class RunReports {
  readonly #context: ExecutionContext;
  readonly #options: ReportOptions;
  readonly #wallClock: () => number;
  /** When RUNNING was reported, as every later update of the run carries it. */
  #startedAt = 0n;
  #running = false;
  #finished = false;
  /** Made at the first line written: a run that writes nothing costs nothing. */
  #log: ExecutionLogBuffer | undefined;

  constructor(context: ExecutionContext, options: ReportOptions) {
    this.#context = context;
    this.#options = options;
    this.#wallClock = options.wallClock ?? Date.now;
  }

  /** True once RUNNING was reported. */
  get started(): boolean {
    return this.#running;
  }

  /** True once the terminal state was reported. */
  get finished(): boolean {
    return this.#finished;
  }

  /** The longest text a report carries, in UTF-8 bytes. */
  get maxBytes(): number {
    return this.#options.maxResultBytes;
  }

  /** The wall clock now, for a RUNNING report made just after the work started. */
  stampStart(): number {
    return this.#wallClock();
  }

  /** Reports RUNNING, stamped `startedAt` (default now). */
  running(startedAt = this.#wallClock()): void {
    if (this.#finished || this.#running) return;
    this.#running = true;
    this.#startedAt = BigInt(Math.trunc(startedAt));
    this.#options.report(this.#update(ExecutionState.RUNNING, {}));
  }

  /** The run's log, for its executor to write lines into (made on first use). */
  get log(): ExecutionLogBuffer {
    return (this.#log ??= new ExecutionLogBuffer(this.#options.logBounds ?? DEFAULT_LOG_BOUNDS, this.#wallClock));
  }

  /** Reports RUNNING again with the lines written since the last report, if any (ExecutionRun.flushLog). */
  flushLog(): void {
    if (this.#finished || !this.#running || this.#log === undefined || !this.#log.pending) return;
    const update = this.#update(ExecutionState.RUNNING, {});
    update.log = this.#log.takeUnsent();
    if (update.log !== undefined) this.#options.report(update);
  }

  /** Reports the terminal state; false when one was reported already. */
  finish(state: ExecutionState, fields: { error?: string; result?: string }): boolean {
    if (this.#finished) return false;
    this.#finished = true;
    const update = this.#update(state, fields);
    update.finishedAtUnixMs = BigInt(Math.trunc(this.#wallClock()));
    update.log = this.#log?.takeUnsent(true);
    this.#options.report(update);
    return true;
  }

  #update(state: ExecutionState, fields: { error?: string; result?: string }): ExecutionUpdate {
    const limit = this.#options.maxResultBytes;
    // The message as a literal of its generated type (which lists every field, so a new one
    // fails to compile here): create() reflects over the schema, and this runs twice per run.
    const update: ExecutionUpdate = {
      $typeName: "shardline.v1.ExecutionUpdate",
      executionId: this.#context.executionId,
      state,
      startedAtUnixMs: this.#startedAt,
      finishedAtUnixMs: 0n,
      error: truncateUtf8(fields.error ?? "", limit),
      result: truncateUtf8(fields.result ?? "", limit),
      log: undefined,
    };
    return update;
  }
}

/**
 * The execution context as scripts (on stdin) and HTTP endpoints (as the default body) receive
 * it: the same fields a handler's HandlerContext has, in JSON. The fencing token is a decimal
 * string, as protobuf's JSON writes a uint64: past 2^53 a JSON number loses digits; the
 * revision, always small, is a number.
 */
export function executionPayload(context: ExecutionContext, agentId: string): string {
  return JSON.stringify({
    executionId: context.executionId,
    job: context.job,
    shard: context.shard,
    shardCount: context.shardCount,
    shardParameter: context.shardParameter,
    parameter: context.parameter,
    fireTime: fireTimeIso(context),
    attempt: context.attempt,
    agentId,
    fencingToken: String(context.fencingToken),
    revision: Number(context.revision),
  });
}

/** What every log line about a run carries, so that a line can be traced to its execution and revision. */
export function runLogFields(context: ExecutionContext): { executionId: string; job: string; shard: number; revision: number } {
  return { executionId: context.executionId, job: context.job, shard: context.shard, revision: Number(context.revision) };
}

/**
 * Whether the agent holds a valid lease now, by its own monotonic clock: what
 * HandlerContext.assertLease asks the agent.
 */
export type LeaseCheck = () => boolean;

/** True when `error`, or an error it wraps as its cause, is this execution's LeaseLostError. */
export function isLeaseLost(error: unknown, executionId: string): boolean {
  // A handler may wrap the refusal as another error's cause; bounded, should a chain loop.
  for (let depth = 0; depth < 8 && error instanceof Error; depth++, error = error.cause) {
    if (error instanceof LeaseLostError && error.executionId === executionId) return true;
  }
  return false;
}

/** The fire time as ISO 8601 text, e.g. 2023-11-14T22:13:20.000Z. */
export function fireTimeIso(context: ExecutionContext): string {
  const fireTime = context.fireTimeUnixMs;
  // The shards of one fire come together, and toISOString costs a microsecond: the last is kept.
  if (fireTime !== lastIso.fireTime) lastIso = { fireTime, text: new Date(Number(fireTime)).toISOString() };
  return lastIso.text;
}

let lastIso: { fireTime: bigint | undefined; text: string } = { fireTime: undefined, text: "" };

/**
 * The execution context as environment variables, for work that runs outside this process (a
 * script, a Kubernetes Job): SHARDLINE_* (SHARDLINE_FENCING_TOKEN and SHARDLINE_REVISION in decimal), and
 * TRACEPARENT/TRACESTATE, the OpenTelemetry convention for carrying trace context into a child
 * process, so its spans nest under the run's.
 */
export function executionEnvironment(context: ExecutionContext, agentId: string, traceContext: Readonly<Record<string, string>>): Record<string, string> {
  const env: Record<string, string> = {
    SHARDLINE_EXECUTION_ID: context.executionId,
    SHARDLINE_JOB: context.job,
    SHARDLINE_SHARD: String(context.shard),
    SHARDLINE_SHARD_COUNT: String(context.shardCount),
    SHARDLINE_SHARD_PARAMETER: context.shardParameter,
    SHARDLINE_PARAMETER: context.parameter,
    SHARDLINE_FIRE_TIME: fireTimeIso(context),
    SHARDLINE_ATTEMPT: String(context.attempt),
    SHARDLINE_AGENT_ID: agentId,
    SHARDLINE_FENCING_TOKEN: String(context.fencingToken),
    SHARDLINE_REVISION: String(context.revision),
  };
  const { traceparent, tracestate } = traceContext;
  if (traceparent) env.TRACEPARENT = traceparent;
  if (traceparent && tracestate) env.TRACESTATE = tracestate;
  return env;
}
