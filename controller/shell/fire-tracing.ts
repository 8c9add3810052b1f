import { type Attributes, type Link, ROOT_CONTEXT, SpanKind, trace, type Tracer } from "@opentelemetry/api";
import { SPAN_ATTRIBUTES } from "../../shared/telemetry/span-attributes.js";
import { extractTraceContext, injectTraceContext, spanContextFromCarrier } from "../../shared/telemetry/tracing.js";
import { VERSION } from "../../shared/version.js";
import type { ExecutionTracing, TraceCarrier, TracedExecution } from "../core/execution-tracing.js";

/** The span made once per fire (job, fire instant); every execution of the fire runs under it. */
export const FIRE_SPAN = "shardline.fire";
/** The span of a failover run, linked to the execution it replaces. */
export const FAILOVER_SPAN = "shardline.failover";
/** The span of a retry, linked to the attempt that failed. */
export const RETRY_SPAN = "shardline.retry";

const ATTR = SPAN_ATTRIBUTES;

/** Fires whose span context is remembered, so later executions of a fire join its trace. */
const DEFAULT_REMEMBERED_FIRES = 4096;

/**
 * The controller's ExecutionTracing: one `shardline.fire` span per fire, and one short span per
 * run that replaces another (failover, retry), linked to the replaced run's stored context.
 *
 * A fire's span is made with its first execution and ended at once: it marks the fire, it does
 * not wait for the runs (each agent's span does). Its context is kept for the last fires made,
 * so every shard's execution of a fire, and the fire's completion hook, share one trace and one
 * parent. Only spans that end at once are made here: none lives for the life of a stream.
 *
 * Use it only when a tracer provider is registered (startTracing said `enabled`); otherwise give
 * the core NO_TRACING, which costs nothing.
 */
export class FireTracing implements ExecutionTracing {
  private readonly tracer: Tracer;
  /** Fire span contexts by job, then fire instant. */
  private readonly fires = new Map<string, Map<number, TraceCarrier>>();
  /** The remembered fires, oldest first from `head`, as a ring: [job, fire instant]. */
  private readonly ringJobs: string[] = [];
  private readonly ringTimes: number[] = [];
  private head = 0;

  constructor(private readonly rememberedFires = DEFAULT_REMEMBERED_FIRES) {
    this.tracer = trace.getTracer("shardline-controller", VERSION);
  }

  contextFor(execution: TracedExecution, replaces?: Readonly<TraceCarrier>): TraceCarrier {
    if (execution.cause === "failover" || execution.cause === "retry") return this.rerun(execution, replaces);
    return this.fireContext(execution);
  }

  /** The context of the execution's fire, making the fire's span if this is its first execution. */
  private fireContext(execution: TracedExecution): TraceCarrier {
    const known = this.fires.get(execution.job)?.get(execution.fireTime);
    if (known !== undefined) return known;
    const span = this.tracer.startSpan(
      FIRE_SPAN,
      {
        kind: SpanKind.PRODUCER,
        root: true,
        attributes: {
          [ATTR.job]: execution.job,
          [ATTR.fireTime]: new Date(execution.fireTime).toISOString(),
          [ATTR.fireTimeUnixMs]: execution.fireTime,
          [ATTR.shardCount]: execution.shardCount,
          [ATTR.cause]: execution.cause,
        },
      },
      ROOT_CONTEXT,
    );
    span.end();
    const carrier = Object.freeze(injectTraceContext(trace.setSpan(ROOT_CONTEXT, span))) as TraceCarrier;
    this.remember(execution.job, execution.fireTime, carrier);
    return carrier;
  }

  /**
   * A run that replaces another gets a span of its own in the same trace: a child of the context
   * the replaced run carried (else of its fire's span, if still remembered), linked to it.
   */
  private rerun(execution: TracedExecution, replaces: Readonly<TraceCarrier> | undefined): TraceCarrier {
    const replaced = replaces === undefined ? undefined : spanContextFromCarrier(replaces);
    const links: Link[] = [];
    if (replaced !== undefined) {
      const id = execution.id;
      links.push({ context: replaced, attributes: { [ATTR.executionId]: `${id.slice(0, id.lastIndexOf("/") + 1)}${execution.attempt - 1}` } });
    }
    const fire = this.fires.get(execution.job)?.get(execution.fireTime);
    const parent = replaced !== undefined ? extractTraceContext(replaces!, ROOT_CONTEXT) : fire !== undefined ? extractTraceContext(fire, ROOT_CONTEXT) : ROOT_CONTEXT;
    const attributes: Attributes = {
      [ATTR.job]: execution.job,
      [ATTR.shard]: execution.shard,
      [ATTR.fireTime]: new Date(execution.fireTime).toISOString(),
      [ATTR.fireTimeUnixMs]: execution.fireTime,
      [ATTR.attempt]: execution.attempt,
      [ATTR.cause]: execution.cause,
      [ATTR.executionId]: execution.id,
      // A fire's shards may run two revisions during a rollout: the fire's span has none, a run's has its own.
      ...(execution.revision === undefined ? {} : { [ATTR.jobRevision]: execution.revision }),
    };
    const span = this.tracer.startSpan(
      execution.cause === "failover" ? FAILOVER_SPAN : RETRY_SPAN,
      { kind: SpanKind.PRODUCER, root: parent === ROOT_CONTEXT, attributes, links },
      parent,
    );
    span.end();
    return injectTraceContext(trace.setSpan(ROOT_CONTEXT, span));
  }

  private remember(job: string, fireTime: number, carrier: TraceCarrier): void {
    let byTime = this.fires.get(job);
    if (byTime === undefined) {
      byTime = new Map();
      this.fires.set(job, byTime);
    }
    byTime.set(fireTime, carrier);
    if (this.ringJobs.length < this.rememberedFires) {
      this.ringJobs.push(job);
      this.ringTimes.push(fireTime);
      return;
    }
    // Full: the oldest fire makes room.
    const oldJob = this.ringJobs[this.head]!;
    const oldTimes = this.fires.get(oldJob);
    oldTimes?.delete(this.ringTimes[this.head]!);
    if (oldTimes?.size === 0) this.fires.delete(oldJob);
    this.ringJobs[this.head] = job;
    this.ringTimes[this.head] = fireTime;
    this.head = (this.head + 1) % this.rememberedFires;
  }
}

/**
 * The `trace_id` and `span_id` a log line about an execution carries: those of the trace context
 * it runs under (its fire's span, or its re-run's). Empty when it is not traced.
 */
export function traceLogFields(traceContext: Readonly<TraceCarrier> | undefined): { trace_id?: string; span_id?: string } {
  const span = traceContext === undefined ? undefined : spanContextFromCarrier(traceContext);
  return span === undefined ? {} : { trace_id: span.traceId, span_id: span.spanId };
}
