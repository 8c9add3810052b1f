import { Writable } from "node:stream";
import { ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../logging.js";
import { attachTraceContext } from "./log-fields.js";
import { injectTraceContext } from "./tracing.js";
import { startInMemoryTracing, type InMemoryTracing } from "./testing/in-memory-tracing.js";

let tracing: InMemoryTracing;
beforeAll(() => {
  tracing = startInMemoryTracing();
});
afterAll(() => tracing.shutdown());

/** A createLogger logger writing JSON lines into an array, synchronously. */
function capture(): { lines: Record<string, unknown>[]; logger: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: createLogger({ name: "test", level: "info", destination }) };
}

describe("trace ids in log lines", () => {
  it("adds trace_id and span_id of the active span, and nothing outside a span", () => {
    const { lines, logger } = capture();
    logger.info("outside");
    trace.getTracer("test").startActiveSpan("work", (active) => {
      logger.info({ job: "billing" }, "inside");
      active.end();
    });
    expect(lines[0]).not.toHaveProperty("trace_id");
    expect(lines[0]).toMatchObject({ msg: "outside" });
    const [active] = tracing.spansNamed("work");
    expect(lines[1]).toMatchObject({ span_id: active!.spanContext().spanId });
    expect(lines[1]).toMatchObject({ msg: "inside", job: "billing", trace_id: active!.spanContext().traceId });
  });

  it("falls back to the trace context attached to a logger, and lets the active span win", () => {
    const { lines, logger } = capture();
    const bound = trace.getTracer("test").startSpan("execution");
    const log = logger.child({ executionId: "billing/1/0/1" });
    const stopping = log.child({ phase: "stop" });
    attachTraceContext(log, injectTraceContext(trace.setSpan(ROOT_CONTEXT, bound)));
    // A child made before the attachment inherits it too.
    stopping.warn("from a callback");
    trace.getTracer("test").startActiveSpan("handler's own", (own) => {
      log.info("inside the handler's span");
      expect(lines[1]).toMatchObject({ span_id: own.spanContext().spanId });
      own.end();
    });
    bound.end();
    expect(lines[0]).toMatchObject({ executionId: "billing/1/0/1", phase: "stop", trace_id: bound.spanContext().traceId, span_id: bound.spanContext().spanId });
    // One of each key: the fallback is not a binding that a mixin would repeat.
    expect(lines).toHaveLength(2);
  });

  it("adds nothing for a malformed attached traceparent", () => {
    const { lines, logger } = capture();
    const log = logger.child({});
    attachTraceContext(log, { traceparent: "00-00000000000000000000000000000000-b7ad6b7169203331-01" });
    log.info("zero trace id");
    expect(lines[0]).not.toHaveProperty("trace_id");
  });

  it("lets a line's own fields win over the mixin's", () => {
    const { lines, logger } = capture();
    trace.getTracer("test").startActiveSpan("work", (span) => {
      logger.info({ trace_id: "given" }, "explicit");
      span.end();
    });
    expect(lines[0]).toMatchObject({ trace_id: "given" });
  });
});
