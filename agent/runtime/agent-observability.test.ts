import { SpanKind } from "@opentelemetry/api";
import { afterEach, describe, expect, it } from "vitest";
import type { ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { MetricsRegistry, PROMETHEUS_CONTENT_TYPE } from "../../shared/telemetry/metrics.js";
import { startInMemoryTracing } from "../../shared/telemetry/testing/in-memory-tracing.js";
import { parsePrometheusText, sampleValue, type PrometheusSample } from "../../shared/telemetry/testing/prometheus-text.js";
import { EXECUTION_SPAN } from "../executors/execution-telemetry.js";
import type { Agent } from "./agent.js";
import { startAgentHttpServer, type AgentHttpServer } from "./agent-http.js";
import {
  ScriptedController,
  assignment,
  cleanups,
  connected,
  deferred,
  dispatch,
  nextEvent,
  runCleanups,
  startAgent,
} from "./testing/scripted-controller.js";

afterEach(runCleanups);

function registry(): MetricsRegistry {
  const metrics = new MetricsRegistry({ serviceName: "shardline-agent" });
  cleanups.push(() => metrics.shutdown());
  return metrics;
}

async function serve(agent: Agent, metrics?: MetricsRegistry): Promise<AgentHttpServer> {
  const server = await startAgentHttpServer("127.0.0.1:0", agent, metrics);
  cleanups.push(() => server.close());
  return server;
}

async function status(server: AgentHttpServer, path: string): Promise<number> {
  const response = await fetch(`http://${server.address}${path}`);
  await response.arrayBuffer();
  return response.status;
}

async function scrape(server: AgentHttpServer): Promise<Map<string, PrometheusSample[]>> {
  const response = await fetch(`http://${server.address}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe(PROMETHEUS_CONTENT_TYPE);
  return parsePrometheusText(await response.text());
}

/** Terminal updates the controller received, counted by job and outcome name. */
function countOutcomes(updates: ExecutionUpdate[]): Map<string, number> {
  const names: Partial<Record<ExecutionState, string>> = {
    [ExecutionState.SUCCEEDED]: "succeeded",
    [ExecutionState.FAILED]: "failed",
    [ExecutionState.TIMED_OUT]: "timed-out",
    [ExecutionState.CANCELLED]: "cancelled",
    [ExecutionState.LOST]: "lost",
  };
  const counts = new Map<string, number>();
  for (const update of updates) {
    const outcome = names[update.state];
    if (outcome === undefined) continue;
    const key = `${update.executionId.split("/")[0]} ${outcome}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Every `shardline_agent_executions_total` series, as "job outcome" → value. */
function scrapedOutcomes(samples: Map<string, PrometheusSample[]>): Map<string, number> {
  return new Map((samples.get("shardline_agent_executions_total") ?? []).map((sample) => [`${sample.labels.shardline_job} ${sample.labels.outcome}`, sample.value]));
}

describe("an agent's HTTP port", () => {
  it("answers /healthz at once, and /readyz only while welcomed and holding a valid lease", async () => {
    const controller = await ScriptedController.start();
    const agent = startAgent(controller, { work: () => "ok" });
    const server = await serve(agent);
    expect(await status(server, "/healthz")).toBe(200);
    expect(await status(server, "/readyz")).toBe(503);

    const session = await controller.nextSession();
    const welcomed = nextEvent(agent, "connected");
    session.welcome();
    await welcomed;
    expect(await status(server, "/readyz")).toBe(200);

    // The controller stops acking: the lease lapses, the agent fences itself and is not ready.
    const fenced = nextEvent(agent, "fenced");
    session.autoAck = false;
    await fenced;
    expect(await status(server, "/readyz")).toBe(503);
    expect(await status(server, "/healthz")).toBe(200);
    // Without a MetricsRegistry there is nothing to scrape.
    expect(await status(server, "/metrics")).toBe(404);
  });

  it("rejects a malformed --http address, naming the flag", async () => {
    const controller = await ScriptedController.start();
    const agent = startAgent(controller, {});
    await expect(startAgentHttpServer("localhost", agent)).rejects.toThrow(/--http: "localhost" is not allowed/);
  });
});

describe("an agent's /metrics", () => {
  it("counts the executions that happened, by job and outcome, with their durations and fire lag", async () => {
    const metrics = registry();
    const billing0 = assignment("billing", 0, 1n, 1n);
    const billing1 = assignment("billing", 1, 1n, 1n);
    const reports0 = assignment("reports", 0, 1n, 1n);
    const release = deferred();
    const { agent, session } = await connected(
      {
        work: () => "ok",
        fail: () => {
          throw new Error("the ledger is locked");
        },
        wait: () => release.promise,
        forever: () => new Promise(() => {}),
      },
      [billing0, billing1, reports0],
      { metrics },
    );
    const server = await serve(agent, metrics);
    const now = BigInt(Date.now());

    dispatch(session, "billing/1/0/1", billing0, { fireTimeUnixMs: now });
    dispatch(session, "billing/2/0/1", billing0, { fireTimeUnixMs: now });
    dispatch(session, "billing/3/1/1", billing1, { fireTimeUnixMs: now, handler: "fail" });
    // A failover run: started late on purpose, so no fire lag is recorded for it.
    dispatch(session, "billing/4/1/2", billing1, { fireTimeUnixMs: now - 60_000n, attempt: 2 });
    dispatch(session, "reports/1/0/1", reports0, { fireTimeUnixMs: now, handler: "no-such-handler" });
    dispatch(session, "reports/2/0/1", reports0, { fireTimeUnixMs: now, timeoutMs: 20, handler: "forever" });
    // Refused: the agent does not hold shard 3; reported LOST without running.
    dispatch(session, "reports/3/3/1", assignment("reports", 3, 1n, 1n), { fireTimeUnixMs: now });
    dispatch(session, "billing/5/0/1", billing0, { fireTimeUnixMs: now, handler: "wait" });
    // One at a time: each wait consumes the batches it reads.
    for (const [id, state] of [
      ["billing/1/0/1", ExecutionState.SUCCEEDED],
      ["billing/2/0/1", ExecutionState.SUCCEEDED],
      ["billing/3/1/1", ExecutionState.FAILED],
      ["billing/4/1/2", ExecutionState.SUCCEEDED],
      ["reports/1/0/1", ExecutionState.FAILED],
      ["reports/2/0/1", ExecutionState.TIMED_OUT],
      ["reports/3/3/1", ExecutionState.LOST],
    ] as const) {
      await session.update(id, state);
    }

    const during = await scrape(server);
    expect(sampleValue(during, "shardline_agent_running_executions")).toBe(1);
    expect(sampleValue(during, "shardline_agent_assignments")).toBe(3);
    expect(sampleValue(during, "shardline_agent_connected")).toBe(1);

    session.send({ case: "cancel", value: { executionIds: ["billing/5/0/1"], reason: "an operator cancelled it" } });
    await session.update("billing/5/0/1", ExecutionState.CANCELLED);
    release.resolve();

    const samples = await scrape(server);
    const happened = countOutcomes(session.updates());
    expect(happened).toEqual(
      new Map([
        ["billing succeeded", 3],
        ["billing failed", 1],
        ["reports failed", 1],
        ["reports timed-out", 1],
        ["reports lost", 1],
        ["billing cancelled", 1],
      ]),
    );
    expect(scrapedOutcomes(samples)).toEqual(happened);
    // Every execution that started has a duration; the refused one never started.
    expect(sampleValue(samples, "shardline_agent_execution_duration_seconds_count", { shardline_job: "billing", outcome: "succeeded" })).toBe(3);
    expect(sampleValue(samples, "shardline_agent_execution_duration_seconds_count", { shardline_job: "reports", outcome: "timed-out" })).toBe(1);
    // Recorded, not timed: a 20 ms timer may fire a few microseconds short of 20 ms by another clock.
    expect(sampleValue(samples, "shardline_agent_execution_duration_seconds_sum", { shardline_job: "reports", outcome: "timed-out" })).toBeGreaterThan(0);
    expect(sampleValue(samples, "shardline_agent_execution_duration_seconds_count", { shardline_job: "reports", outcome: "lost" })).toBe(0);
    // First attempts only: billing's four, not the failover run; reports' two that started.
    expect(sampleValue(samples, "shardline_agent_fire_lag_seconds_count", { shardline_job: "billing" })).toBe(4);
    expect(sampleValue(samples, "shardline_agent_fire_lag_seconds_count", { shardline_job: "reports" })).toBe(2);
    expect(sampleValue(samples, "shardline_agent_fire_lag_seconds_bucket", { shardline_job: "billing", le: "+Inf" })).toBe(4);
    expect(sampleValue(samples, "shardline_agent_running_executions")).toBe(0);
    expect(sampleValue(samples, "shardline_agent_reconnects_total")).toBe(0);
    expect(sampleValue(samples, "shardline_agent_lease_lapses_total")).toBe(0);
  });

  it("counts lease lapses and reconnects", async () => {
    const metrics = registry();
    const { agent, session, controller } = await connected({ work: () => "ok" }, [], { metrics });
    const server = await serve(agent, metrics);
    const fenced = nextEvent(agent, "fenced");
    session.autoAck = false;
    await fenced;
    await controller.nextSession();
    const samples = await scrape(server);
    expect(sampleValue(samples, "shardline_agent_lease_lapses_total")).toBe(1);
    expect(sampleValue(samples, "shardline_agent_reconnects_total")).toBe(1);
    expect(sampleValue(samples, "shardline_agent_connected")).toBe(0);
  });
});

describe("an agent's execution spans", () => {
  it("ends each execution's span, a child of the dispatched context, before its report reaches the controller", async () => {
    const tracing = startInMemoryTracing();
    cleanups.push(() => tracing.shutdown());
    const held = assignment("billing", 2, 1n, 1n);
    const { session } = await connected({ work: () => "ok" }, [held], { id: "agent-7" });
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    dispatch(session, "billing/1/2/1", held, { traceContext: { traceparent } });
    await session.update("billing/1/2/1", ExecutionState.SUCCEEDED);
    const [span] = tracing.spansNamed(EXECUTION_SPAN);
    expect(span).toMatchObject({
      kind: SpanKind.CONSUMER,
      parentSpanContext: { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" },
      attributes: { "shardline.agent_id": "agent-7", "shardline.execution_id": "billing/1/2/1", "shardline.shard": 2, "shardline.outcome": "succeeded" },
    });
  });
});
