import { context, isSpanContextValid, isValidSpanId, isValidTraceId, trace } from "@opentelemetry/api";
import type { Logger } from "pino";

/** Where a logger keeps the trace context its lines fall back to; children inherit it (pino children are prototype-chained). */
const FALLBACK_TRACE_CONTEXT = Symbol("shardline.log.traceContext");

type TracedLogger = Logger & { [FALLBACK_TRACE_CONTEXT]?: Readonly<Record<string, string>> };

/** Returned when there is nothing to add; never mutated (see traceLogMixinMergeStrategy). */
const NOTHING: Readonly<Record<string, never>> = Object.freeze({});

/**
 * A pino `mixin`: adds `trace_id` and `span_id` of the active span to every line logged inside
 * one, else of the trace context attached to the logger with attachTraceContext, else nothing.
 * Cheap when tracing is off: the no-op context manager has no span to find.
 */
export function traceLogMixin(_mergeObject: object, _level: number, logger: Logger): object {
  const span = trace.getSpan(context.active());
  if (span !== undefined) {
    const spanContext = span.spanContext();
    if (isSpanContextValid(spanContext)) return { trace_id: spanContext.traceId, span_id: spanContext.spanId };
  }
  const fallback = (logger as TracedLogger)[FALLBACK_TRACE_CONTEXT];
  return fallback === undefined ? NOTHING : traceparentFields(fallback.traceparent);
}

/**
 * The `mixinMergeStrategy` to go with traceLogMixin: the line's own fields win, and a line
 * without trace ids is logged as it is, without copying it into a fresh object.
 */
export function traceLogMixinMergeStrategy(mergeObject: object, mixinObject: object): object {
  return mixinObject === NOTHING ? mergeObject : Object.assign(mixinObject, mergeObject);
}

/**
 * Makes the lines of `logger` (and of its children) that are logged outside any active span carry
 * the ids of a W3C trace context (`traceparent`): for the lines about one execution that the
 * agent logs from its own callbacks (a cancel, a timeout). Inside an active span, that span's ids
 * win. `logger` must be a child made for the purpose; the traceparent is read only when a line is
 * logged. Only loggers made with createLogger add the fields.
 */
export function attachTraceContext(logger: Logger, traceContext: Readonly<Record<string, string>>): void {
  if (traceContext.traceparent !== undefined) (logger as TracedLogger)[FALLBACK_TRACE_CONTEXT] = traceContext;
}

/** trace_id and span_id of a version-00 traceparent ("00-TRACEID-SPANID-FLAGS"); nothing when malformed. */
function traceparentFields(traceparent: string | undefined): object {
  if (traceparent === undefined || traceparent.length < 55 || traceparent[2] !== "-" || traceparent[35] !== "-" || traceparent[52] !== "-") return NOTHING;
  const traceId = traceparent.slice(3, 35);
  const spanId = traceparent.slice(36, 52);
  return isValidTraceId(traceId) && isValidSpanId(spanId) ? { trace_id: traceId, span_id: spanId } : NOTHING;
}
