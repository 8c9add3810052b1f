import type { ExecutionCause } from "./store-port.js";

/** A W3C trace context as carried in the execute message and the execution record: `traceparent`, `tracestate`. */
export type TraceCarrier = Record<string, string>;

/** What the core says about an execution it has just created. */
export interface TracedExecution {
  readonly id: string;
  readonly job: string;
  readonly shard: number;
  /** The job's shard count when the execution was made. */
  readonly shardCount: number;
  readonly fireTime: number;
  readonly attempt: number;
  readonly cause: ExecutionCause;
  /** The job revision it runs; absent when unknown. */
  readonly revision?: number;
}

/**
 * The port through which the core gets a trace context for each execution it creates, as it gets
 * the time: injected, so that the core stays free of OpenTelemetry and deterministic. The shell's
 * implementation opens the fire's span; the simulator and the core's tests use NO_TRACING.
 */
export interface ExecutionTracing {
  /**
   * The trace context the execution runs under, sent to its agent and stored with its record.
   * `replaces`: the stored context of the execution this one runs again (a failover run, a
   * retry), so that the new run's span can link to it, after a controller restart too.
   * An empty carrier means "not traced".
   */
  contextFor(execution: TracedExecution, replaces?: Readonly<TraceCarrier>): TraceCarrier;
}

/**
 * The carrier of an execution that is not traced: one object, so that every execution of a fire
 * carries the same one and the Dispatch encoder, which compares a fire's fields by identity,
 * encodes the fire's part once (controller/shell/dispatch-encoding.ts).
 */
export const NOT_TRACED: TraceCarrier = Object.freeze({}) as TraceCarrier;

/** Traces nothing, at no cost: every execution gets the empty carrier. */
export const NO_TRACING: ExecutionTracing = {
  contextFor: () => NOT_TRACED,
};
