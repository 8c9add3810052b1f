import { once } from "node:events";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { SpanKind, SpanStatusCode, context as otelContext, trace } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterEach, describe, expect, it } from "vitest";
import { ExecutionContextSchema, type ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { createLogger } from "../../shared/logging.js";
import { startInMemoryTracing, type InMemoryTracing } from "../../shared/telemetry/testing/in-memory-tracing.js";
import type { ExecutionListeners, HandlerContext, HandlerMap } from "../sdk.js";
import { ExecutionListening } from "./execution-listeners.js";
import type { ExecutionRun, Executor, ReportSink } from "./execution-run.js";
import { EXECUTION_SPAN, ExecutionTelemetry, type ExecutionMetrics } from "./execution-telemetry.js";
import { HandlerExecutor } from "./handler/handler-executor.js";
import { HttpExecutor } from "./http/http-executor.js";
import { ScriptExecutor } from "./script/script-executor.js";

const FIRE = 1_700_000_000_000n;
const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";
/** The fire's span on the controller, as the execute message carries it. */
const FIRE_SPAN_ID = "b7ad6b7169203331";
const TRACEPARENT = `00-${TRACE_ID}-${FIRE_SPAN_ID}-01`;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function traced(): InMemoryTracing {
  const tracing = startInMemoryTracing();
  cleanups.push(() => tracing.shutdown());
  return tracing;
}

/** A createLogger logger whose JSON lines land in `lines`. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: createLogger({ name: "agent", level: "debug", destination }) };
}

type Kind = "handler" | "script" | "http";

interface RunOptions {
  kind?: Kind;
  handlers?: HandlerMap;
  listeners?: ExecutionListeners;
  script?: { command: string; args: string[] };
  url?: string;
  timeoutMs?: number;
  traceContext?: Record<string, string>;
  start?: boolean;
  metrics?: ExecutionMetrics;
}

/**
 * Runs one execution the way the agent does: its executor wrapped by ExecutionTelemetry (and
 * ExecutionListening when there are listeners), reports going through both. `terminal` resolves
 * with the terminal report, after the telemetry saw it.
 */
function run(options: RunOptions = {}) {
  const { lines, logger } = capturedLogger();
  let onTerminal!: (update: ExecutionUpdate) => void;
  const terminal = new Promise<ExecutionUpdate>((resolve) => (onTerminal = resolve));
  const agentReport: ReportSink = (update) => {
    if (update.state !== ExecutionState.RUNNING) onTerminal(update);
  };
  const telemetry = new ExecutionTelemetry({ agentId: "agent-1", report: agentReport, ...(options.metrics ? { metrics: options.metrics } : {}) });
  const listening = options.listeners && new ExecutionListening({ listeners: options.listeners, report: telemetry.report, agentId: "agent-1", leaseValid: () => true, maxResultBytes: 4096, logger });
  const reporting = { maxResultBytes: 4096, report: listening?.report ?? telemetry.report };
  const kind = options.kind ?? "handler";
  const inner: Executor =
    kind === "handler"
      ? new HandlerExecutor({ ...reporting, agentId: "agent-1", leaseValid: () => true, handlers: options.handlers ?? {}, logger })
      : kind === "script"
        ? new ScriptExecutor({ ...reporting, agentId: "agent-1", allowed: [process.execPath], logger })
        : new HttpExecutor({ ...reporting, agentId: "agent-1" });
  const executor = telemetry.wrap(listening?.wrap(inner) ?? inner);
  const context = create(ExecutionContextSchema, {
    executionId: `billing/${FIRE}/3/1`,
    job: "billing",
    shard: 3,
    shardCount: 8,
    fireTimeUnixMs: FIRE,
    attempt: 1,
    revision: 7n,
    handler: kind === "handler" ? "work" : "",
    timeoutMs: options.timeoutMs ?? 0,
    traceContext: options.traceContext ?? { traceparent: TRACEPARENT, tracestate: "vendor=1" },
    ...(kind === "script" ? { script: { killGraceMs: 0, ...options.script } } : {}),
    ...(kind === "http" ? { http: { url: options.url ?? "", method: "POST" } } : {}),
  });
  const execution: ExecutionRun = executor.create(context);
  cleanups.push(async () => {
    execution.stop(ExecutionState.LOST, "test over");
    await terminal;
  });
  if (options.start ?? true) execution.start();
  return { execution, terminal, lines };
}

function onlyExecutionSpan(tracing: InMemoryTracing): ReadableSpan {
  const spans = tracing.spansNamed(EXECUTION_SPAN);
  expect(spans).toHaveLength(1);
  return spans[0]!;
}

/** The traceparent of a span, as it is passed on. */
function traceparentOf(span: ReadableSpan): string {
  return `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`;
}

describe("ExecutionTelemetry with tracing on", () => {
  it("makes one CONSUMER span per execution, a child of the fire's span, with the execution's attributes and outcome", async () => {
    const tracing = traced();
    const done = await run({ handlers: { work: () => "ok" } }).terminal;
    expect(done.state).toBe(ExecutionState.SUCCEEDED);
    const span = onlyExecutionSpan(tracing);
    expect(span.kind).toBe(SpanKind.CONSUMER);
    expect(span.spanContext().traceId).toBe(TRACE_ID);
    expect(span.parentSpanContext).toMatchObject({ traceId: TRACE_ID, spanId: FIRE_SPAN_ID, isRemote: true });
    expect(span.attributes).toEqual({
      "shardline.job": "billing",
      "shardline.shard": 3,
      "shardline.shard_count": 8,
      "shardline.fire_time": "2023-11-14T22:13:20.000Z",
      "shardline.fire_time_unix_ms": 1_700_000_000_000,
      "shardline.attempt": 1,
      "shardline.job.revision": 7,
      "shardline.execution_id": `billing/${FIRE}/3/1`,
      "shardline.agent_id": "agent-1",
      "shardline.executor": "handler",
      "shardline.handler": "work",
      "shardline.outcome": "succeeded",
    });
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
    expect(span.ended).toBe(true);
  });

  it("runs the handler inside the span: its own spans nest under it, across awaits, and its traceContext is the span's", async () => {
    const tracing = traced();
    let seen: HandlerContext | undefined;
    await run({
      handlers: {
        work: async (ctx) => {
          seen = ctx;
          await new Promise((resolve) => setTimeout(resolve, 1));
          await trace.getTracer("billing").startActiveSpan("load rows", async (own) => {
            await Promise.resolve();
            own.end();
          });
        },
      },
    }).terminal;
    const execution = onlyExecutionSpan(tracing);
    const [own] = tracing.spansNamed("load rows");
    expect(own!.parentSpanContext?.spanId).toBe(execution.spanContext().spanId);
    expect(own!.spanContext().traceId).toBe(TRACE_ID);
    expect(seen!.traceContext).toEqual({ traceparent: traceparentOf(execution), tracestate: "vendor=1" });
  });

  it("ends the span with an error status and the failure's message when the handler throws", async () => {
    const tracing = traced();
    const done = await run({
      handlers: {
        work: () => {
          throw new Error("the ledger is locked");
        },
      },
    }).terminal;
    expect(done.state).toBe(ExecutionState.FAILED);
    const span = onlyExecutionSpan(tracing);
    expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: "the ledger is locked" });
    expect(span.attributes["shardline.outcome"]).toBe("failed");
  });

  it("ends the span as timed-out, an error, when the timeout passes; a cancel is no error", async () => {
    const tracing = traced();
    await run({ handlers: { work: () => new Promise(() => {}) }, timeoutMs: 20 }).terminal;
    expect(onlyExecutionSpan(tracing)).toMatchObject({ status: { code: SpanStatusCode.ERROR, message: "timed out after 20 ms" }, attributes: { "shardline.outcome": "timed-out" } });
    tracing.reset();
    const { execution, terminal } = run({ handlers: { work: () => new Promise(() => {}) } });
    execution.stop(ExecutionState.CANCELLED, "an operator cancelled it");
    await terminal;
    expect(onlyExecutionSpan(tracing)).toMatchObject({ status: { code: SpanStatusCode.UNSET }, attributes: { "shardline.outcome": "cancelled" } });
  });

  it("makes no span for an execution stopped before it started", async () => {
    const tracing = traced();
    const { execution, terminal } = run({ handlers: { work: () => "never" }, start: false });
    execution.stop(ExecutionState.CANCELLED, "cancelled while waiting for its instant");
    await terminal;
    execution.start();
    expect(tracing.spans()).toEqual([]);
  });

  it("starts a new trace when the controller sent no trace context", async () => {
    const tracing = traced();
    await run({ handlers: { work: () => "ok" }, traceContext: {} }).terminal;
    const span = onlyExecutionSpan(tracing);
    expect(span.parentSpanContext).toBeUndefined();
    expect(span.spanContext().traceId).not.toBe(TRACE_ID);
  });

  it("runs beforeExecution inside the span too, with the span's trace context", async () => {
    const tracing = traced();
    let before: { traceparent?: string; active?: string } = {};
    await run({
      handlers: { work: () => "ok" },
      listeners: {
        beforeExecution: async (ctx) => {
          await Promise.resolve();
          before = { traceparent: ctx.traceContext.traceparent, active: trace.getSpan(otelContext.active())?.spanContext().spanId };
        },
      },
    }).terminal;
    const span = onlyExecutionSpan(tracing);
    expect(before).toEqual({ traceparent: traceparentOf(span), active: span.spanContext().spanId });
  });

  it("gives a script TRACEPARENT and TRACESTATE naming the execution's span", async () => {
    const tracing = traced();
    const done = await run({
      kind: "script",
      script: { command: process.execPath, args: ["-e", "process.stdout.write(process.env.TRACEPARENT + ' ' + process.env.TRACESTATE)"] },
    }).terminal;
    const span = onlyExecutionSpan(tracing);
    expect(done.result).toBe(`${traceparentOf(span)} vendor=1`);
    expect(span.attributes["shardline.executor"]).toBe("script");
    expect(span.parentSpanContext?.spanId).toBe(FIRE_SPAN_ID);
  });

  it("sends an HTTP call's traceparent and tracestate headers naming the execution's span", async () => {
    const tracing = traced();
    const received: IncomingHttpHeaders[] = [];
    const server = createServer((request, response) => {
      received.push(request.headers);
      request.resume();
      request.on("end", () => response.end("done"));
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())));
    const done = await run({ kind: "http", url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook` }).terminal;
    expect(done.state).toBe(ExecutionState.SUCCEEDED);
    const span = onlyExecutionSpan(tracing);
    expect(received[0]).toMatchObject({ traceparent: traceparentOf(span), tracestate: "vendor=1" });
    expect(span.attributes).toMatchObject({ "shardline.executor": "http", "shardline.outcome": "succeeded" });
    expect(span.attributes).not.toHaveProperty("shardline.handler");
  });

  it("puts the execution span's ids on the execution's log lines, inside its context and from outside it", async () => {
    const tracing = traced();
    const { execution, terminal, lines } = run({
      kind: "script",
      script: { command: process.execPath, args: ["-e", "setTimeout(() => {}, 60000)"] },
    });
    // A stop comes from the agent's stream, outside the execution's context: the fallback names it.
    execution.stop(ExecutionState.CANCELLED, "an operator cancelled it");
    await terminal;
    const span = onlyExecutionSpan(tracing);
    const stopping = lines.find((line) => String(line.msg).startsWith("stopping the script"));
    expect(stopping).toMatchObject({ executionId: `billing/${FIRE}/3/1`, trace_id: TRACE_ID, span_id: span.spanContext().spanId });

    tracing.reset();
    const handled = run({ handlers: { work: (ctx) => void ctx.log.info({ rows: 3 }, "loaded") } });
    await handled.terminal;
    expect(handled.lines.find((line) => line.msg === "loaded")).toMatchObject({ rows: 3, span_id: onlyExecutionSpan(tracing).spanContext().spanId });
  });
});

describe("ExecutionTelemetry with tracing off", () => {
  it("passes the controller's trace context on unchanged, to handlers, scripts and their log lines", async () => {
    let seen: HandlerContext | undefined;
    const handled = run({
      handlers: {
        work: (ctx) => {
          seen = ctx;
          ctx.log.info("working");
          return trace.getSpan(otelContext.active()) === undefined ? "no span" : "a span";
        },
      },
    });
    expect((await handled.terminal).result).toBe("no span");
    expect(seen!.traceContext).toEqual({ traceparent: TRACEPARENT, tracestate: "vendor=1" });
    expect(handled.lines.find((line) => line.msg === "working")).toMatchObject({ trace_id: TRACE_ID, span_id: FIRE_SPAN_ID });
    const script = await run({ kind: "script", script: { command: process.execPath, args: ["-e", "process.stdout.write(process.env.TRACEPARENT)"] } }).terminal;
    expect(script.result).toBe(TRACEPARENT);
  });
});

describe("ExecutionTelemetry's metrics", () => {
  /** Records what the telemetry counts: starts by job, ends by job and state, with whether a duration came. */
  function recordingMetrics() {
    const counted: string[] = [];
    const metrics: ExecutionMetrics = {
      started: (job) => void counted.push(`started ${job}`),
      ended: (job, state, durationSeconds) =>
        void counted.push(`ended ${job} ${ExecutionState[state]} ${durationSeconds === undefined ? "untimed" : durationSeconds >= 0 ? "timed" : "negative"}`),
    };
    return { counted, metrics };
  }

  it("counts a run that started, with its duration, and one stopped before its start, without", async () => {
    const { counted, metrics } = recordingMetrics();
    await run({ handlers: { work: () => "ok" }, metrics }).terminal;
    const stopped = run({ handlers: { work: () => "never" }, metrics, start: false });
    stopped.execution.stop(ExecutionState.CANCELLED, "cancelled while waiting for its instant");
    await stopped.terminal;
    expect(counted).toEqual(["started billing", "ended billing SUCCEEDED timed", "ended billing CANCELLED untimed"]);
  });

  it("counts traced runs alike, and ends their spans", async () => {
    const tracing = traced();
    const { counted, metrics } = recordingMetrics();
    await run({ handlers: { work: () => "ok" }, metrics }).terminal;
    expect(counted).toEqual(["started billing", "ended billing SUCCEEDED timed"]);
    expect(onlyExecutionSpan(tracing).ended).toBe(true);
  });
});
