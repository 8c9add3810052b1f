import {
  ROOT_CONTEXT,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  isSpanContextValid,
  propagation,
  trace,
  ProxyTracerProvider,
  type Context,
  type SpanContext,
  type Tracer,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { ShardlineError } from "../errors.js";

/** What startTracing set up; shut it down before the process exits, or spans are lost. */
export interface TracingHandle {
  /** True when spans are recorded and exported; false when nothing was registered. */
  readonly enabled: boolean;
  /** Exports the spans still buffered and unregisters the tracer provider. Idempotent. */
  shutdown(): Promise<void>;
}

/** What startTracing needs to know about the process. */
export interface TracingOptions {
  /** service.name of the spans, unless OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says otherwise. */
  serviceName: string;
  /** service.instance.id of the spans, e.g. the agent's id. */
  serviceInstanceId?: string;
  /** The environment to read the OTEL_* variables from. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** The trace exporters OTEL_TRACES_EXPORTER may name: the ones NodeSDK builds. */
export const TRACES_EXPORTERS = ["otlp", "console", "zipkin", "none"] as const;

/** The OTLP protocols OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL may name: the ones NodeSDK builds. */
export const OTLP_PROTOCOLS = ["http/protobuf", "http/json", "grpc"] as const;

/** How the OTEL_* variables configure tracing, once checked. */
export interface TracingDecision {
  /** Whether to register a tracer provider at all. */
  enabled: boolean;
  /** Why, in words, for a startup log line. */
  reason: string;
}

/**
 * Decides from the OTEL_* variables whether to trace, and rejects values NodeSDK would only
 * warn about (through a diagnostic logger that is silent unless OTEL_LOG_LEVEL is set) and then
 * ignore, so a typo would silently export nowhere or somewhere else.
 *
 * Tracing is on only when asked for: OTEL_TRACES_EXPORTER names an exporter other than `none`,
 * or an OTLP endpoint variable is set. The OpenTelemetry default would be the OTLP exporter to
 * localhost:4318; a scheduler run without a collector would then retry exporting there forever
 * and pay for recording every span. OTEL_SDK_DISABLED=true turns it off whatever else is set.
 */
export function tracingDecision(env: NodeJS.ProcessEnv): TracingDecision {
  const disabled = booleanVariable(env, "OTEL_SDK_DISABLED");
  const exporters = listVariable(env, "OTEL_TRACES_EXPORTER");
  for (const name of exporters ?? []) {
    if (!(TRACES_EXPORTERS as readonly string[]).includes(name)) {
      throw ShardlineError.invalid("OTEL_TRACES_EXPORTER", env.OTEL_TRACES_EXPORTER, `a comma-separated list of ${TRACES_EXPORTERS.join(", ")}`);
    }
  }
  if (exporters !== undefined && exporters.includes("none") && exporters.length > 1) {
    // NodeSDK would fall back to the OTLP exporter: the opposite of what "none" asks.
    throw ShardlineError.invalid("OTEL_TRACES_EXPORTER", env.OTEL_TRACES_EXPORTER, `"none" alone, or a list of ${TRACES_EXPORTERS.filter((e) => e !== "none").join(", ")}`);
  }
  for (const name of ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]) {
    const value = stringVariable(env, name);
    if (value !== undefined && !(OTLP_PROTOCOLS as readonly string[]).includes(value)) {
      throw ShardlineError.invalid(name, env[name], `one of ${OTLP_PROTOCOLS.join(", ")}`);
    }
  }
  const endpoints = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"].filter((name) => stringVariable(env, name) !== undefined);
  for (const name of endpoints) {
    if (!isHttpUrl(stringVariable(env, name)!)) throw ShardlineError.invalid(name, env[name], "an http:// or https:// URL, e.g. http://collector:4318");
  }
  if (disabled) return { enabled: false, reason: "OTEL_SDK_DISABLED is true" };
  if (exporters !== undefined) {
    return exporters[0] === "none"
      ? { enabled: false, reason: "OTEL_TRACES_EXPORTER is none" }
      : { enabled: true, reason: `OTEL_TRACES_EXPORTER is ${exporters.join(",")}` };
  }
  if (endpoints.length > 0) return { enabled: true, reason: `${endpoints[0]} is set` };
  return { enabled: false, reason: "neither OTEL_TRACES_EXPORTER nor an OTLP endpoint is set" };
}

/** The handle of the tracing this process registered, and how many startTracing calls share it. */
let registered: { handle: Promise<TracingHandle>; users: number } | undefined;

/**
 * Sets up tracing for the process from the standard OTEL_* variables, through OpenTelemetry's
 * NodeSDK: OTEL_TRACES_EXPORTER (otlp, console, zipkin, none), OTEL_EXPORTER_OTLP_ENDPOINT and
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL and
 * OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (http/protobuf, the default, http/json, grpc),
 * OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_PROPAGATORS,
 * OTEL_BSP_*, OTEL_SDK_DISABLED. See tracingDecision for when it is on. When on, it registers
 * the global tracer provider, an AsyncLocalStorage context manager and the propagators (W3C
 * trace context and baggage unless OTEL_PROPAGATORS says otherwise); no instrumentations, and
 * no metrics or logs (metrics are MetricsRegistry's). When off, nothing is registered: the API's
 * tracer is a no-op and costs next to nothing.
 *
 * Fails with an invalid-argument ShardlineError naming the variable when one holds a value that
 * is not allowed. A second call while tracing is registered (a controller and an agent in one
 * process) shares the first one's setup, service name included; it is shut down with the last
 * handle.
 */
export async function startTracing(options: TracingOptions): Promise<TracingHandle> {
  const env = options.env ?? process.env;
  const decision = tracingDecision(env);
  if (!decision.enabled) return { enabled: false, shutdown: () => Promise.resolve() };
  if (registered !== undefined) {
    registered.users++;
    const shared = await registered.handle;
    return sharedHandle(shared);
  }
  const entry: { handle: Promise<TracingHandle>; users: number } = { handle: registerSdk(options, env), users: 1 };
  registered = entry;
  try {
    return sharedHandle(await entry.handle);
  } catch (error) {
    registered = undefined;
    throw error;
  }
}

/** One user's handle on the shared registration: the last shutdown shuts it down. */
function sharedHandle(inner: TracingHandle): TracingHandle {
  let done = false;
  return {
    enabled: inner.enabled,
    shutdown: async () => {
      if (done) return;
      done = true;
      const entry = registered;
      if (entry === undefined || --entry.users > 0) return;
      registered = undefined;
      await inner.shutdown();
    },
  };
}

async function registerSdk(options: TracingOptions, env: NodeJS.ProcessEnv): Promise<TracingHandle> {
  // Loaded only when tracing is on: the SDK pulls in every exporter it knows.
  const [{ NodeSDK }, { AsyncLocalStorageContextManager }, { defaultResource, resourceFromAttributes }, { ATTR_SERVICE_NAME }] = await Promise.all([
    import("@opentelemetry/sdk-node"),
    import("@opentelemetry/context-async-hooks"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/semantic-conventions"),
  ]);
  // Ours are the base: the env detector (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) merges over them.
  const resource = defaultResource().merge(
    resourceFromAttributes({
      [ATTR_SERVICE_NAME]: options.serviceName,
      // service.instance.id is still in the incubating semantic conventions.
      ...(options.serviceInstanceId === undefined ? {} : { "service.instance.id": options.serviceInstanceId }),
    }),
  );
  const sdk = withOtelVariables(env, () => {
    const created = new NodeSDK({
      resource,
      contextManager: new AsyncLocalStorageContextManager(),
      instrumentations: [],
      // Empty lists rather than nothing: left out, NodeSDK would start OTLP metric and log exporters.
      metricReaders: [],
      logRecordProcessors: [],
    });
    created.start();
    return created;
  });
  let shut: Promise<void> | undefined;
  return {
    enabled: true,
    shutdown: () =>
      (shut ??= sdk.shutdown().finally(() => {
        // Unregistered so that a later startTracing (the next test, say) can register again.
        trace.disable();
        context.disable();
        propagation.disable();
      })),
  };
}

/**
 * Runs `build` with process.env's OTEL_* variables replaced by `env`'s, when they differ. NodeSDK
 * and its exporters read process.env itself, and only while they are constructed and started,
 * which is synchronous: nothing else runs before the originals are back.
 */
function withOtelVariables<T>(env: NodeJS.ProcessEnv, build: () => T): T {
  if (env === process.env) return build();
  const saved: Record<string, string | undefined> = {};
  const names = new Set([...Object.keys(process.env), ...Object.keys(env)].filter((name) => name.startsWith("OTEL_")));
  for (const name of names) {
    saved[name] = process.env[name];
    if (env[name] === undefined) delete process.env[name];
    else process.env[name] = env[name];
  }
  try {
    return build();
  } finally {
    for (const name of names) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  }
}

/**
 * The tracer `name` of the registered tracer provider, or undefined when none is registered
 * (tracing is off): a hot path can then skip building spans, extracting parents and injecting
 * carriers altogether, where the API's no-op tracer would still do part of it.
 */
export function registeredTracer(name: string, version?: string): Tracer | undefined {
  const provider = trace.getTracerProvider();
  return provider instanceof ProxyTracerProvider ? provider.getDelegateTracer(name, version) : provider.getTracer(name, version);
}

// Used directly rather than through the global propagator: it works whether or not tracing is
// registered, and OTEL_PROPAGATORS must not change what the execute message carries.
const w3c = new W3CTraceContextPropagator();

/**
 * The W3C trace context (`traceparent`, and `tracestate` when there is one) of `ctx`'s span,
 * default the active one: what the execute message, a script's TRACEPARENT or an HTTP call's
 * headers carry. Empty when the context has no valid span.
 */
export function injectTraceContext(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  w3c.inject(ctx, carrier, defaultTextMapSetter);
  return carrier;
}

/**
 * `base` (default the active context) with the remote span of a W3C carrier as its parent: spans
 * started in it are children of that span. `base` itself when the carrier holds no valid
 * traceparent.
 */
export function extractTraceContext(carrier: Readonly<Record<string, string>>, base: Context = context.active()): Context {
  return w3c.extract(base, carrier, defaultTextMapGetter);
}

/** The span context a W3C carrier names, for a span link; undefined when it names none. */
export function spanContextFromCarrier(carrier: Readonly<Record<string, string>>): SpanContext | undefined {
  const spanContext = trace.getSpanContext(extractTraceContext(carrier, ROOT_CONTEXT));
  return spanContext !== undefined && isSpanContextValid(spanContext) ? spanContext : undefined;
}

/** A variable's trimmed value; undefined when unset or blank, as OpenTelemetry reads them. */
function stringVariable(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

function listVariable(env: NodeJS.ProcessEnv, name: string): string[] | undefined {
  const value = stringVariable(env, name);
  const items = [...new Set((value ?? "").split(",").map((item) => item.trim()).filter((item) => item !== ""))];
  return items.length === 0 ? undefined : items;
}

function booleanVariable(env: NodeJS.ProcessEnv, name: string): boolean {
  const value = stringVariable(env, name)?.toLowerCase();
  if (value === undefined || value === "false") return false;
  if (value === "true") return true;
  throw ShardlineError.invalid(name, env[name], "true or false");
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:";
  } catch {
    return false;
  }
}
