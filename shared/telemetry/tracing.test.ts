import { once } from "node:events";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { ROOT_CONTEXT, SpanKind, trace } from "@opentelemetry/api";
import { afterEach, describe, expect, it } from "vitest";
import { ShardlineError } from "../errors.js";
import { extractTraceContext, injectTraceContext, spanContextFromCarrier, startTracing, tracingDecision } from "./tracing.js";

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function invalid(env: NodeJS.ProcessEnv): ShardlineError {
  try {
    tracingDecision(env);
  } catch (error) {
    if (error instanceof ShardlineError) return error;
    throw error;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
}

describe("tracingDecision", () => {
  it("is off when no exporter and no OTLP endpoint is named: nothing exports to a collector that is not there", () => {
    expect(tracingDecision({}).enabled).toBe(false);
    expect(tracingDecision({ OTEL_SERVICE_NAME: "x", OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }).enabled).toBe(false);
  });

  it("is on when OTEL_TRACES_EXPORTER names an exporter, and off when it says none", () => {
    expect(tracingDecision({ OTEL_TRACES_EXPORTER: "otlp" }).enabled).toBe(true);
    expect(tracingDecision({ OTEL_TRACES_EXPORTER: " console , otlp " }).enabled).toBe(true);
    expect(tracingDecision({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }).enabled).toBe(false);
  });

  it("is on when an OTLP endpoint is set, for traces or for every signal", () => {
    expect(tracingDecision({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }).enabled).toBe(true);
    expect(tracingDecision({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://collector/v1/traces" }).enabled).toBe(true);
  });

  it("is off when OTEL_SDK_DISABLED is true, whatever else is set", () => {
    expect(tracingDecision({ OTEL_SDK_DISABLED: "TRUE", OTEL_TRACES_EXPORTER: "console" })).toEqual({ enabled: false, reason: "OTEL_SDK_DISABLED is true" });
    expect(tracingDecision({ OTEL_SDK_DISABLED: "false", OTEL_TRACES_EXPORTER: "console" }).enabled).toBe(true);
  });

  it("rejects an unknown exporter, naming the variable and the exporters allowed", () => {
    const error = invalid({ OTEL_TRACES_EXPORTER: "otlp,jaeger" });
    expect(error.code).toBe("invalid-argument");
    expect(error.message).toBe('OTEL_TRACES_EXPORTER: "otlp,jaeger" is not allowed; expected a comma-separated list of otlp, console, zipkin, none');
  });

  it("rejects none beside another exporter, which the SDK would read as otlp", () => {
    expect(invalid({ OTEL_TRACES_EXPORTER: "none,console" }).details.field).toBe("OTEL_TRACES_EXPORTER");
  });

  it("rejects an unknown OTLP protocol in either variable, naming the protocols allowed", () => {
    expect(invalid({ OTEL_EXPORTER_OTLP_PROTOCOL: "http" }).message).toBe(
      'OTEL_EXPORTER_OTLP_PROTOCOL: "http" is not allowed; expected one of http/protobuf, http/json, grpc',
    );
    expect(invalid({ OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "json", OTEL_TRACES_EXPORTER: "none" }).details.field).toBe("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
  });

  it("rejects an endpoint that is not an http or https URL", () => {
    expect(invalid({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }).details).toMatchObject({ field: "OTEL_EXPORTER_OTLP_ENDPOINT", value: '"collector:4318"' });
  });

  it("rejects an OTEL_SDK_DISABLED that is neither true nor false", () => {
    expect(invalid({ OTEL_SDK_DISABLED: "yes" }).details.allowed).toBe("true or false");
  });
});

describe("startTracing", () => {
  it("registers nothing when tracing is off: spans are the API's no-op", async () => {
    const handle = await startTracing({ serviceName: "shardline-test", env: {} });
    cleanups.push(() => handle.shutdown());
    expect(handle.enabled).toBe(false);
    expect(trace.getTracer("test").startSpan("nothing").isRecording()).toBe(false);
  });

  it("fails before registering anything when a variable is wrong", async () => {
    await expect(startTracing({ serviceName: "shardline-test", env: { OTEL_TRACES_EXPORTER: "jeager" } })).rejects.toThrow(/OTEL_TRACES_EXPORTER/);
    expect(trace.getTracer("test").startSpan("nothing").isRecording()).toBe(false);
  });

  it("exports spans over OTLP/HTTP JSON to the endpoint the environment names, with the service's name and instance", async () => {
    const receiver = await startReceiver();
    const handle = await startTracing({
      serviceName: "shardline-test",
      serviceInstanceId: "agent-7",
      // Not process.env: the SDK must still read these.
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" },
    });
    cleanups.push(() => handle.shutdown());
    expect(handle.enabled).toBe(true);
    const span = trace.getTracer("test").startSpan("shardline.test", { kind: SpanKind.CONSUMER });
    expect(span.isRecording()).toBe(true);
    span.end();
    await handle.shutdown();
    expect(receiver.requests).toHaveLength(1);
    expect(receiver.requests[0]).toMatchObject({ path: "/v1/traces", contentType: "application/json" });
    const body = receiver.requests[0]!.body;
    expect(body).toContain('"shardline.test"');
    expect(body).toContain('{"key":"service.name","value":{"stringValue":"shardline-test"}}');
    expect(body).toContain('{"key":"service.instance.id","value":{"stringValue":"agent-7"}}');
    // Shut down: the API is a no-op again.
    expect(trace.getTracer("test").startSpan("after").isRecording()).toBe(false);
  });

  it("lets OTEL_SERVICE_NAME override the service name given", async () => {
    const receiver = await startReceiver();
    const handle = await startTracing({
      serviceName: "shardline-agent",
      env: {
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.url}/v1/traces`,
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json",
        OTEL_SERVICE_NAME: "billing-agents",
      },
    });
    cleanups.push(() => handle.shutdown());
    trace.getTracer("test").startSpan("named").end();
    await handle.shutdown();
    expect(receiver.requests[0]?.body).toContain('{"key":"service.name","value":{"stringValue":"billing-agents"}}');
  });

  it("shares one registration between two callers, shut down with the last", async () => {
    const env = { OTEL_TRACES_EXPORTER: "console", OTEL_BSP_SCHEDULE_DELAY: "60000" };
    const first = await startTracing({ serviceName: "shardline-controller", env });
    const second = await startTracing({ serviceName: "shardline-agent", env });
    cleanups.push(() => first.shutdown(), () => second.shutdown());
    await first.shutdown();
    // Not ended: the console exporter would print it.
    expect(trace.getTracer("test").startSpan("still on").isRecording()).toBe(true);
    await second.shutdown();
    expect(trace.getTracer("test").startSpan("off").isRecording()).toBe(false);
  });
});

/** A stand-in OTLP/HTTP receiver: keeps every request and answers 200. */
async function startReceiver(): Promise<{ url: string; requests: { path: string; contentType: string; body: string }[] }> {
  const requests: { path: string; contentType: string; body: string }[] = [];
  const server = createServer((request: IncomingMessage, response) => {
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk: string) => (body += chunk));
    request.on("end", () => {
      requests.push({ path: request.url ?? "", contentType: request.headers["content-type"] ?? "", body });
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(() => new Promise((done) => server.close(() => done())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

describe("trace context carriers", () => {
  it("carry a traceparent through extract and inject unchanged, without any SDK registered", () => {
    const carrier = { traceparent: TRACEPARENT, tracestate: "vendor=1" };
    expect(injectTraceContext(extractTraceContext(carrier, ROOT_CONTEXT))).toEqual(carrier);
  });

  it("inject nothing from a context without a span", () => {
    expect(injectTraceContext(ROOT_CONTEXT)).toEqual({});
    expect(injectTraceContext()).toEqual({});
  });

  it("give the span context of a carrier for a link, and nothing for a malformed one", () => {
    expect(spanContextFromCarrier({ traceparent: TRACEPARENT })).toMatchObject({
      traceId: "0af7651916cd43dd8448eb211c80319c",
      spanId: "b7ad6b7169203331",
      isRemote: true,
    });
    expect(spanContextFromCarrier({ traceparent: "00-garbage" })).toBeUndefined();
    expect(spanContextFromCarrier({})).toBeUndefined();
  });
});
