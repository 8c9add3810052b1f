import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SpanKind } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { createLogger } from "../../shared/logging.js";
import { type InMemoryTracing, startInMemoryTracing } from "../../shared/telemetry/testing/in-memory-tracing.js";
import { spanContextFromCarrier } from "../../shared/telemetry/tracing.js";
import { DEFAULT_CORE_CONFIG } from "../core/config.js";
import { CoreHarness, testSpec } from "../core/testing/core-harness.js";
import { startController } from "./controller.js";
import { FAILOVER_SPAN, FIRE_SPAN, FireTracing, RETRY_SPAN, traceLogFields } from "./fire-tracing.js";
import { rawAgent } from "./testing/raw-agent.js";

const LEASE = DEFAULT_CORE_CONFIG.leaseTtlMs;
/** The default disconnect grace, and the margin the controller adds to it: a lost run re-runs after both. */
const GRACE = DEFAULT_CORE_CONFIG.disconnectGraceMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

let tracing: InMemoryTracing;
beforeEach(() => {
  tracing = startInMemoryTracing();
});
afterEach(async () => {
  await tracing.shutdown();
});

function traceIdOf(carrier: Record<string, string>): string | undefined {
  return spanContextFromCarrier(carrier)?.traceId;
}

function spanIdOf(carrier: Record<string, string>): string | undefined {
  return spanContextFromCarrier(carrier)?.spanId;
}

/** A harness whose core traces with FireTracing, with two agents and a manual-only job. */
function traced(spec = testSpec("job", { schedule: undefined, shards: 4 }), fireTracing = new FireTracing()) {
  const h = new CoreHarness(DEFAULT_CORE_CONFIG, fireTracing);
  const a = h.connect("a");
  const b = h.connect("b");
  h.apply(spec);
  return { h, a, b };
}

describe("FireTracing", () => {
  it("makes one fire span per fire, and every shard's execution carries its context", () => {
    const { h, a, b } = traced();
    const { fireTime } = h.core.triggerJob("job", [], undefined, h.now);
    h.flush();

    const [fire, ...others] = tracing.spans();
    expect(others).toEqual([]);
    expect(fire!.name).toBe(FIRE_SPAN);
    expect(fire!.kind).toBe(SpanKind.PRODUCER);
    expect(fire!.parentSpanContext).toBeUndefined();
    expect(fire!.ended).toBe(true);
    expect(fire!.attributes).toEqual({
      "shardline.job": "job",
      "shardline.fire_time": new Date(fireTime).toISOString(),
      "shardline.fire_time_unix_ms": fireTime,
      "shardline.shard_count": 4,
      "shardline.cause": "trigger",
    });
    const dispatched = [...a.dispatched, ...b.dispatched];
    expect(dispatched).toHaveLength(4);
    for (const execution of dispatched) {
      expect(traceIdOf(execution.traceContext)).toBe(fire!.spanContext().traceId);
      expect(spanIdOf(execution.traceContext)).toBe(fire!.spanContext().spanId);
      expect(h.execution(execution.executionId)!.traceContext).toEqual(execution.traceContext);
    }
  });

  it("starts a new trace for each fire", () => {
    const { h } = traced(testSpec("job", { shards: 2 }));
    h.run(3000);
    const fires = tracing.spansNamed(FIRE_SPAN);
    expect(fires.length).toBeGreaterThanOrEqual(3);
    expect(new Set(fires.map((span) => span.spanContext().traceId)).size).toBe(fires.length);
    expect(fires.every((span) => span.attributes["shardline.cause"] === "schedule")).toBe(true);
  });

  it("gives a failover run a span in the fire's trace, linked to the context of the run it replaces", () => {
    const { h, a } = traced();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const [fire] = tracing.spansNamed(FIRE_SPAN) as [ReadableSpan];
    const lost = a.dispatched[0]!;
    h.report("a", lost.executionId, "running");

    h.crash("a");
    h.run(LEASE + 1000 + GRACE, ["a"]);

    const rerunId = lost.executionId.replace(/\/1$/, "/2");
    const rerun = tracing.spansNamed(FAILOVER_SPAN).find((span) => span.attributes["shardline.execution_id"] === rerunId)!;
    expect(rerun.spanContext().traceId).toBe(fire.spanContext().traceId);
    expect(rerun.parentSpanContext?.spanId).toBe(fire.spanContext().spanId);
    expect(rerun.links).toHaveLength(1);
    expect(rerun.links[0]!.context.spanId).toBe(spanIdOf(lost.traceContext));
    expect(rerun.links[0]!.attributes).toEqual({ "shardline.execution_id": lost.executionId });
    expect(rerun.attributes).toMatchObject({ "shardline.shard": lost.shard, "shardline.attempt": 2, "shardline.cause": "failover", "shardline.job.revision": 1 });
    const context = h.execution(rerunId)!.traceContext!;
    expect(spanIdOf(context)).toBe(rerun.spanContext().spanId);
    expect(traceLogFields(context)).toEqual({ trace_id: fire.spanContext().traceId, span_id: rerun.spanContext().spanId });
  });

  it("links a failover run made by a restarted controller to the context stored with the run it replaces", () => {
    const { h, a } = traced();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const lost = a.dispatched[0]!;
    h.report("a", lost.executionId, "running");

    // A new controller process: nothing remembered but what the store holds.
    const restarted = new CoreHarness(DEFAULT_CORE_CONFIG, new FireTracing());
    restarted.durable.term = h.durable.term;
    restarted.durable.jobs = h.durable.jobs;
    restarted.durable.cursors = h.durable.cursors;
    restarted.durable.executions = h.durable.executions;
    restarted.now = h.now;
    restarted.start();
    restarted.connect("b");
    restarted.run(2 * LEASE + 1000 + GRACE);

    const rerunId = lost.executionId.replace(/\/1$/, "/2");
    const rerun = tracing.spansNamed(FAILOVER_SPAN).find((span) => span.attributes["shardline.execution_id"] === rerunId)!;
    expect(rerun.links.map((link) => link.context.spanId)).toEqual([spanIdOf(lost.traceContext)]);
    expect(rerun.spanContext().traceId).toBe(traceIdOf(lost.traceContext));
  });

  it("gives a retry a span linked to the attempt that failed", () => {
    const { h, a, b } = traced(testSpec("job", { schedule: undefined, shards: 1, retries: { limit: 1, backoffSeconds: 1 } }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const [first] = [...a.dispatched, ...b.dispatched];
    h.report(a.dispatched.length > 0 ? "a" : "b", first!.executionId, "failed");

    const [retry] = tracing.spansNamed(RETRY_SPAN);
    expect(retry!.links.map((link) => link.context.spanId)).toEqual([spanIdOf(first!.traceContext)]);
    expect(retry!.attributes).toMatchObject({ "shardline.attempt": 2, "shardline.cause": "retry", "shardline.job.revision": 1 });
  });

  it("keeps the context of the latest fires only, and still traces the ones it forgot", () => {
    const { h } = traced(testSpec("job", { schedule: undefined, shards: 1, overlap: "allow", onFireComplete: { handler: "work" } }), new FireTracing(2));
    const fires = [1, 2, 3].map(() => {
      const fire = h.core.triggerJob("job", [], undefined, h.now);
      h.flush();
      h.advance(1);
      return fire;
    });
    // Completing the first fire (forgotten) starts a fire span of its own for its hook run.
    const runner = (id: string): string => [...h.agents.values()].find((agent) => agent.dispatchedIds().includes(id))!.id;
    h.report(runner(fires[0]!.executionIds[0]!), fires[0]!.executionIds[0]!, "succeeded");
    h.report(runner(fires[2]!.executionIds[0]!), fires[2]!.executionIds[0]!, "succeeded");
    const spans = tracing.spansNamed(FIRE_SPAN);
    expect(spans.map((span) => span.attributes["shardline.cause"])).toEqual(["trigger", "trigger", "trigger", "fire-complete"]);
    const hookOfLatest = h.execution(`job/${fires[2]!.fireTime}/complete/1`)!;
    expect(spanIdOf(hookOfLatest.traceContext!)).toBe(spans[2]!.spanContext().spanId);
  });
});

describe("a traced controller over real gRPC", () => {
  it("sends each shard's execute message the W3C trace context of the fire's span, and logs the ids with the execution's events", async () => {
    const dir = await mkdtemp(join(tmpdir(), "shardline-tracing-"));
    const lines: Record<string, unknown>[] = [];
    const controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: createLogger({ name: "controller", level: "debug", destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) } }),
      tracing: true,
    });
    const admin = createClient(AdminService, controller.grpcAddress);
    const agent = rawAgent(controller.grpcAddress);
    try {
      await admin.applyJob({ manifest: "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: rollup}\nspec: {shards: 3, handler: work}\n" });
      agent.stream.send({ kind: { case: "hello", value: { agentId: "py-1", handlers: ["work"], capacity: 1 } } });
      await agent.next("welcome");
      const fired = await admin.triggerJob({ name: "rollup" });
      const executions = [];
      while (executions.length < 3) executions.push(...(await agent.next("dispatch")).executions);

      const [fire, ...others] = tracing.spansNamed(FIRE_SPAN);
      expect(others).toEqual([]);
      expect(executions.map((e) => e.executionId).sort()).toEqual([...fired.executionIds].sort());
      for (const execution of executions) {
        expect(execution.traceContext.traceparent).toBe(`00-${fire!.spanContext().traceId}-${fire!.spanContext().spanId}-01`);
      }

      const finished = executions[0]!.executionId;
      agent.stream.send({ kind: { case: "executionUpdates", value: { updates: [{ executionId: finished, state: ExecutionState.SUCCEEDED, startedAtUnixMs: 1n, finishedAtUnixMs: 2n }] } } });
      agent.stream.send({ kind: { case: "heartbeat", value: { seq: 1n } } });
      await agent.next("heartbeatAck");
      expect(lines.find((line) => line.event === "execution.finished" && line.execution === finished)).toMatchObject({
        trace_id: fire!.spanContext().traceId,
        span_id: fire!.spanContext().spanId,
      });
    } finally {
      agent.close();
      admin.close();
      await controller.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
