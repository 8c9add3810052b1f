import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { parsePrometheusText, type PrometheusSample, sampleValue } from "../shared/telemetry/testing/prometheus-text.js";
import { type AdminClient, adminClient, CliProcess, freePort, requireBuiltCli, shardline, startAgent, waitFor } from "./harness/processes.js";

// Traces, metrics and the dashboard, end to end: a real controller and a real agent process
// export their spans over OTLP/HTTP to a receiver in this test, and serve /metrics.

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const HANDLERS = join(ROOT, "test", "fixtures", "traced-handlers.mjs");
const DASHBOARD = join(ROOT, "deploy", "grafana", "shardline-dashboard.json");

const TRACED_JOB = "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: traced}\nspec: {shards: 2, handler: work}\n";
const BROKEN_JOB = "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: broken}\nspec: {shards: 2, handler: broken}\n";

/** A span as received, whichever OTLP encoding carried it. */
interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  name: string;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string }[];
}

/** A minimal OTLP/HTTP trace receiver: what a collector would get, decoded. */
class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly contentTypes = new Set<string>();
  /** The raw protobuf bodies received, to look for bytes in. */
  readonly protobufBodies: Buffer[] = [];
  private server!: Server;
  endpoint = "";

  async start(): Promise<void> {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const body = Buffer.concat(chunks);
        const type = (request.headers["content-type"] ?? "").split(";")[0]!.trim();
        this.contentTypes.add(type);
        if (request.url !== "/v1/traces") {
          response.writeHead(404).end();
          return;
        }
        if (type === "application/json") {
          this.spans.push(...spansFromJson(JSON.parse(body.toString("utf8"))));
          response.writeHead(200, { "content-type": "application/json" }).end("{}");
        } else {
          this.protobufBodies.push(body);
          this.spans.push(...spansFromProtobuf(body));
          // An empty ExportTraceServiceResponse.
          response.writeHead(200, { "content-type": "application/x-protobuf" }).end();
        }
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  named(name: string, service?: string): ReceivedSpan[] {
    return this.spans.filter((span) => span.name === name && (service === undefined || span.service === service));
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** The OTLP JSON encoding: ids as hex strings, attributes as {key, value: {stringValue | intValue | ...}}. */
function spansFromJson(body: unknown): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  type Json = Record<string, unknown>;
  for (const resourceSpans of ((body as Json).resourceSpans ?? []) as Json[]) {
    const resource = jsonAttributes(((resourceSpans.resource as Json | undefined)?.attributes ?? []) as Json[]);
    for (const scopeSpans of (resourceSpans.scopeSpans ?? []) as Json[]) {
      for (const span of (scopeSpans.spans ?? []) as Json[]) {
        out.push({
          service: String(resource["service.name"]),
          traceId: span.traceId as string,
          spanId: span.spanId as string,
          parentSpanId: (span.parentSpanId as string | undefined) ?? "",
          name: span.name as string,
          attributes: jsonAttributes((span.attributes ?? []) as Json[]),
          links: ((span.links ?? []) as Json[]).map((link) => ({ traceId: link.traceId as string, spanId: link.spanId as string })),
        });
      }
    }
  }
  return out;
}

function jsonAttributes(list: Record<string, unknown>[]): Record<string, unknown> {
  const attributes: Record<string, unknown> = {};
  for (const { key, value } of list as { key: string; value: Record<string, unknown> }[]) {
    const [kind, raw] = Object.entries(value)[0] ?? [];
    attributes[key] = kind === "intValue" ? Number(raw) : raw;
  }
  return attributes;
}

/**
 * The OTLP protobuf encoding, read with a minimal wire-format reader: ExportTraceServiceRequest
 * (1: ResourceSpans) > ResourceSpans (1: Resource, 2: ScopeSpans) > ScopeSpans (2: Span) > Span
 * (1: trace_id, 2: span_id, 4: parent_span_id, 5: name, 9: attributes, 13: links).
 */
function spansFromProtobuf(body: Buffer): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const resourceSpans of fieldsOf(body).filter((f) => f.number === 1)) {
    const parts = fieldsOf(resourceSpans.bytes!);
    const resource = parts.find((f) => f.number === 1);
    const resourceAttributes = resource === undefined ? {} : protobufAttributes(fieldsOf(resource.bytes!).filter((f) => f.number === 1));
    for (const scopeSpans of parts.filter((f) => f.number === 2)) {
      for (const span of fieldsOf(scopeSpans.bytes!).filter((f) => f.number === 2)) {
        const fields = fieldsOf(span.bytes!);
        const bytes = (n: number): Buffer | undefined => fields.find((f) => f.number === n)?.bytes;
        out.push({
          service: String(resourceAttributes["service.name"]),
          traceId: bytes(1)!.toString("hex"),
          spanId: bytes(2)!.toString("hex"),
          parentSpanId: bytes(4)?.toString("hex") ?? "",
          name: bytes(5)!.toString("utf8"),
          attributes: protobufAttributes(fields.filter((f) => f.number === 9)),
          links: fields
            .filter((f) => f.number === 13)
            .map((link) => {
              const linkFields = fieldsOf(link.bytes!);
              return { traceId: linkFields.find((f) => f.number === 1)!.bytes!.toString("hex"), spanId: linkFields.find((f) => f.number === 2)!.bytes!.toString("hex") };
            }),
        });
      }
    }
  }
  return out;
}

/** KeyValue (1: key, 2: AnyValue (1: string_value, 3: int_value)); other value kinds are left out. */
function protobufAttributes(keyValues: { bytes?: Buffer }[]): Record<string, unknown> {
  const attributes: Record<string, unknown> = {};
  for (const keyValue of keyValues) {
    const fields = fieldsOf(keyValue.bytes!);
    const key = fields.find((f) => f.number === 1)!.bytes!.toString("utf8");
    const value = fieldsOf(fields.find((f) => f.number === 2)?.bytes ?? Buffer.alloc(0))[0];
    if (value?.number === 1) attributes[key] = value.bytes!.toString("utf8");
    if (value?.number === 3) attributes[key] = Number(value.varint);
  }
  return attributes;
}

/** The top-level fields of a protobuf message: numbers with their varint or length-delimited bytes. */
function fieldsOf(buffer: Buffer): { number: number; varint?: bigint; bytes?: Buffer }[] {
  const fields: { number: number; varint?: bigint; bytes?: Buffer }[] = [];
  let at = 0;
  const varint = (): bigint => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = buffer[at++]!;
      value |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return value;
    }
  };
  while (at < buffer.length) {
    const tag = Number(varint());
    const number = tag >>> 3;
    switch (tag & 7) {
      case 0:
        fields.push({ number, varint: varint() });
        break;
      case 1:
        at += 8;
        fields.push({ number });
        break;
      case 2: {
        const length = Number(varint());
        fields.push({ number, bytes: buffer.subarray(at, at + length) });
        at += length;
        break;
      }
      case 5:
        at += 4;
        fields.push({ number });
        break;
      default:
        throw new Error(`unexpected protobuf wire type ${tag & 7} at byte ${at}`);
    }
  }
  return fields;
}

/** A controller and an agent process exporting spans to `receiver` with the given OTLP protocol. */
class TracedCluster {
  dir = "";
  controller!: CliProcess;
  agent!: CliProcess;
  admin!: AdminClient;
  controllerHttp = "";
  agentHttp = "";
  grpc = "";

  async start(receiver: OtlpReceiver, protocol: "http/json" | "http/protobuf"): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), "shardline-telemetry-"));
    const env = {
      OTEL_TRACES_EXPORTER: "otlp",
      OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      // Export each batch of spans soon, rather than every 5 s.
      OTEL_BSP_SCHEDULE_DELAY: "50",
    };
    const grpc = `127.0.0.1:${await freePort()}`;
    this.grpc = grpc;
    this.controllerHttp = `127.0.0.1:${await freePort()}`;
    this.agentHttp = `127.0.0.1:${await freePort()}`;
    this.controller = new CliProcess("controller", ["controller", "--listen", grpc, "--http", this.controllerHttp, "--store", `sqlite:${join(this.dir, "state.db")}`], env);
    this.admin = adminClient(grpc);
    await waitFor("the controller to answer", async () => {
      if (!this.controller.running) throw new Error(`controller exited:\n${this.controller.output}`);
      await this.admin.listJobs({});
      return true;
    });
    this.agent = startAgent(grpc, "agent-1", HANDLERS, env, ["--http", this.agentHttp]);
  }

  /** Applies the manifests and waits until the agent owns every shard of them. */
  async apply(...manifests: string[]): Promise<void> {
    let shards = 0;
    for (const manifest of manifests) {
      await this.admin.applyJob({ manifest });
      shards += Number(/shards: (\d+)/.exec(manifest)![1]);
    }
    await waitFor("the agent to own every shard", async () => {
      if (!this.agent.running) throw new Error(`agent exited:\n${this.agent.output}`);
      const [agent] = (await this.admin.listAgents({})).agents;
      return agent !== undefined && agent.shards.length === shards ? true : undefined;
    });
  }

  /** Triggers a job and waits until all its executions of that fire have finished. */
  async fire(job: string): Promise<string[]> {
    const { executionIds } = await this.admin.triggerJob({ name: job });
    await waitFor(`${job}'s executions to finish`, async () => {
      const executions = (await this.admin.listExecutions({ job, limit: 1000 })).executions.filter((e) => executionIds.includes(e.id));
      return executions.length === executionIds.length && executions.every((e) => e.state !== ExecutionState.PENDING && e.state !== ExecutionState.RUNNING) ? true : undefined;
    });
    return executionIds;
  }

  async scrape(address: string): Promise<Map<string, PrometheusSample[]>> {
    const response = await fetch(`http://${address}/metrics`);
    expect(response.status).toBe(200);
    return parsePrometheusText(await response.text());
  }

  async stop(): Promise<void> {
    this.admin?.close();
    await this.agent?.stop();
    await this.controller?.stop();
    if (this.dir !== "") await rm(this.dir, { recursive: true, force: true });
  }
}

/** The metric and label names starting `shardline_` that a Grafana dashboard's queries use. */
function dashboardMetricNames(dashboard: unknown): Set<string> {
  const names = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(visit);
    else if (node !== null && typeof node === "object") {
      for (const [key, value] of Object.entries(node)) {
        if (key === "expr" && typeof value === "string") for (const match of value.matchAll(/\bshardline_[a-z0-9_]+/g)) names.add(match[0]);
        else visit(value);
      }
    }
  };
  visit(dashboard);
  return names;
}

beforeAll(() => requireBuiltCli());

describe("telemetry of a real controller and agent", () => {
  let receiver: OtlpReceiver;
  let cluster: TracedCluster;

  afterEach(async () => {
    await cluster?.stop();
    await receiver?.stop();
  });

  it("exports the fire span and the agent's execution spans of one fire in one trace over OTLP http/json, and counts them at /metrics", async () => {
    receiver = new OtlpReceiver();
    await receiver.start();
    cluster = new TracedCluster();
    await cluster.start(receiver, "http/json");
    await cluster.apply(TRACED_JOB, BROKEN_JOB);
    const traced = await cluster.fire("traced");
    await cluster.fire("broken");
    await cluster.fire("traced");

    // Spans: one fire span per fire; each execution's agent span is its child; the handler's own
    // span nests under the agent's.
    const executionSpans = await waitFor("the agent's spans of the first fire", async () => {
      const spans = receiver.named("shardline.execution", "shardline-agent").filter((span) => traced.includes(span.attributes["shardline.execution_id"] as string));
      return spans.length === traced.length ? spans : undefined;
    });
    // Each process exports on its own schedule: the fire spans may come after the agent's.
    const fires = await waitFor("the three fire spans", async () => {
      const spans = receiver.named("shardline.fire", "shardline-controller");
      return spans.length === 3 ? spans : undefined;
    });
    const [fire, ...others] = fires.filter((span) => span.traceId === executionSpans[0]!.traceId);
    expect(others).toEqual([]);
    expect(fire!.parentSpanId).toBe("");
    expect(fire!.attributes).toMatchObject({ "shardline.job": "traced", "shardline.shard_count": 2, "shardline.cause": "trigger" });
    for (const span of executionSpans) {
      expect(span.traceId).toBe(fire!.traceId);
      expect(span.parentSpanId).toBe(fire!.spanId);
      expect(span.attributes).toMatchObject({ "shardline.job": "traced", "shardline.attempt": 1, "shardline.agent_id": "agent-1", "shardline.outcome": "succeeded" });
    }
    const handlerSpans = await waitFor("the handler's own spans", async () => {
      const spans = receiver.named("fixture.work").filter((span) => span.traceId === fire!.traceId);
      return spans.length === traced.length ? spans : undefined;
    });
    expect(handlerSpans.map((span) => span.parentSpanId).sort()).toEqual(executionSpans.map((span) => span.spanId).sort());
    // Three fires, three traces.
    expect(new Set(fires.map((span) => span.traceId)).size).toBe(3);

    // The trace id is in the API and the CLI: get -o json and -o wide, and describe, with a link.
    const cli = (...args: string[]) => shardline(args, { SHARDLINE_CONTROLLER: cluster.grpc });
    const printed = JSON.parse((await cli("get", "executions", "--job", "traced", "-o", "json")).stdout) as { id: string; traceId: string | null }[];
    for (const id of traced) expect(printed.find((execution) => execution.id === id)?.traceId).toBe(fire!.traceId);
    const wide = (await cli("get", "executions", "--job", "traced", "-o", "wide")).stdout.split("\n");
    expect(wide[0]).toMatch(/\bTRACE$/);
    expect(wide.find((line) => line.startsWith(`${traced[0]!} `))).toMatch(new RegExp(`\\s${fire!.traceId}$`));
    const described = await cli("describe", "execution", traced[0]!, "--trace-url-template", "http://jaeger.example:16686/trace/{traceId}");
    expect(described.stdout).toContain(`Trace:        ${fire!.traceId}\nTrace link:   http://jaeger.example:16686/trace/${fire!.traceId}\n`);
    const fromEnv = await shardline(["describe", "execution", traced[0]!], { SHARDLINE_CONTROLLER: cluster.grpc, SHARDLINE_TRACE_URL_TEMPLATE: "https://tempo.example/t/{traceId}" });
    expect(fromEnv.stdout).toContain(`Trace link:   https://tempo.example/t/${fire!.traceId}\n`);

    // Metrics: what the controller counted is what its history holds.
    const listed = (await cluster.admin.listExecutions({ limit: 1000 })).executions;
    const metrics = await cluster.scrape(cluster.controllerHttp);
    for (const job of ["traced", "broken"]) {
      const ofJob = listed.filter((e) => e.job === job);
      expect(sampleValue(metrics, "shardline_fires_total", { shardline_job: job })).toBe(new Set(ofJob.map((e) => e.fireTimeUnixMs)).size);
      for (const [state, outcome] of [[ExecutionState.SUCCEEDED, "succeeded"], [ExecutionState.FAILED, "failed"]] as const) {
        expect(sampleValue(metrics, "shardline_executions_total", { shardline_job: job, outcome })).toBe(ofJob.filter((e) => e.state === state).length);
      }
      const durations = (metrics.get("shardline_execution_duration_seconds_count") ?? []).filter((sample) => sample.labels.shardline_job === job);
      expect(durations.reduce((sum, sample) => sum + sample.value, 0)).toBe(ofJob.length);
      expect(sampleValue(metrics, "shardline_fire_lag_seconds_count", { shardline_job: job })).toBe(ofJob.length);
    }
    expect(sampleValue(metrics, "shardline_executions_total", { shardline_job: "traced", outcome: "succeeded" })).toBe(4);
    expect(sampleValue(metrics, "shardline_executions_total", { shardline_job: "broken", outcome: "failed" })).toBe(2);
    expect(sampleValue(metrics, "shardline_agents_connected")).toBe(1);
    expect(sampleValue(metrics, "shardline_shards_assigned", { agent: "agent-1" })).toBe(4);

    // The dashboard asks only for series that exist after such a run.
    const agentMetrics = await cluster.scrape(cluster.agentHttp);
    const dashboard: unknown = JSON.parse(readFileSync(DASHBOARD, "utf8"));
    const used = dashboardMetricNames(dashboard);
    expect(used.size).toBeGreaterThan(10);
    // A name in a query is a metric of the controller or the agent, or a label their series carry (shardline_job).
    const labels = new Set([...metrics.values(), ...agentMetrics.values()].flatMap((samples) => samples.flatMap((sample) => Object.keys(sample.labels))));
    const missing = [...used].filter((name) => !(name.startsWith("shardline_agent_") ? agentMetrics : metrics).has(name) && !labels.has(name));
    expect(missing).toEqual([]);
    expect(used).toContain("shardline_job");
  });

  it("exports the same over OTLP http/protobuf", async () => {
    receiver = new OtlpReceiver();
    await receiver.start();
    cluster = new TracedCluster();
    await cluster.start(receiver, "http/protobuf");
    await cluster.apply(TRACED_JOB);
    const traced = await cluster.fire("traced");

    const executionSpans = await waitFor("the agent's spans", async () => {
      const spans = receiver.named("shardline.execution", "shardline-agent").filter((span) => traced.includes(span.attributes["shardline.execution_id"] as string));
      return spans.length === traced.length ? spans : undefined;
    });
    const fire = await waitFor("the fire span", async () => receiver.named("shardline.fire", "shardline-controller")[0]);
    expect(receiver.contentTypes).toEqual(new Set(["application/x-protobuf"]));
    expect(receiver.protobufBodies.some((body) => body.includes(Buffer.from(fire!.traceId, "hex")))).toBe(true);
    for (const span of executionSpans) {
      expect(span.traceId).toBe(fire!.traceId);
      expect(span.parentSpanId).toBe(fire!.spanId);
    }
  });
});
