import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { type Client, createClient } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { MetricsRegistry, PROMETHEUS_CONTENT_TYPE } from "../../shared/telemetry/metrics.js";
import { type PrometheusSample, parsePrometheusText, sampleValue } from "../../shared/telemetry/testing/prometheus-text.js";
import type { ControllerCore } from "../core/controller-core.js";
import type { ExecutionRecord, JobRecord } from "../store/store.js";
import { type RunningController, startController } from "./controller.js";
import { ControllerMetrics } from "./controller-metrics.js";
import { rawAgent } from "./testing/raw-agent.js";

const ROLLUP = "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: rollup}\nspec: {shards: 2, handler: work}\n";
/** Fires every second; a run its agent never finishes makes the next fires misfire (skip). */
const TICKER = 'apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ticker}\nspec: {schedule: "* * * * * *", shards: 1, handler: tick, misfire: skip}\n';

type RawAgent = ReturnType<typeof rawAgent>;

let dir: string;
let controller: RunningController;
let admin: Client<typeof AdminService>;
const agents: RawAgent[] = [];
const timers: NodeJS.Timeout[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "shardline-metrics-"));
  controller = await startController({ listen: "127.0.0.1:0", http: "127.0.0.1:0", store: `sqlite:${join(dir, "state.db")}`, logger: silentLogger() });
  admin = createClient(AdminService, controller.grpcAddress);
});

afterEach(async () => {
  for (const timer of timers.splice(0)) clearInterval(timer);
  for (const agent of agents.splice(0)) agent.close();
  admin.close();
  await controller.stop();
  await rm(dir, { recursive: true, force: true });
});

async function scrape(): Promise<Map<string, PrometheusSample[]>> {
  const response = await fetch(`http://${controller.httpAddress}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe(PROMETHEUS_CONTENT_TYPE);
  return parsePrometheusText(await response.text());
}

/** Connects a raw agent that heartbeats every 200 ms, and waits for its Welcome. */
async function connect(id: string, handlers: string[]): Promise<RawAgent> {
  const agent = rawAgent(controller.grpcAddress);
  agents.push(agent);
  agent.stream.send({ kind: { case: "hello", value: { agentId: id, handlers, capacity: 1 } } });
  await agent.next("welcome");
  let seq = 0n;
  timers.push(setInterval(() => agent.stream.send({ kind: { case: "heartbeat", value: { seq: ++seq } } }), 200));
  return agent;
}

/** Resolves once the controller has processed, and counted, everything the agent sent before. */
async function settled(agent: RawAgent): Promise<void> {
  agent.stream.send({ kind: { case: "heartbeat", value: { seq: 1_000_000n } } });
  for (;;) if ((await agent.next("heartbeatAck")).seq === 1_000_000n) return;
}

describe("the controller's /metrics", () => {
  it("counts fires, executions by outcome, their durations and fire lag, and shows the agents and their shards", async () => {
    await admin.applyJob({ manifest: ROLLUP });
    const agent = await connect("py-1", ["work"]);
    const fired = await admin.triggerJob({ name: "rollup" });
    const executions = [];
    while (executions.length < 2) executions.push(...(await agent.next("dispatch")).executions);
    const fireTime = Number(fired.fireTimeUnixMs);
    const [first, second] = executions.sort((a, b) => a.shard - b.shard) as [(typeof executions)[0], (typeof executions)[0]];
    const update = (executionId: string, state: ExecutionState, startedAt: number, finishedAt = 0) =>
      agent.stream.send({
        kind: { case: "executionUpdates", value: { updates: [{ executionId, state, startedAtUnixMs: BigInt(startedAt), finishedAtUnixMs: BigInt(finishedAt) }] } },
      });
    update(first.executionId, ExecutionState.RUNNING, fireTime + 3);
    await settled(agent);
    update(first.executionId, ExecutionState.SUCCEEDED, fireTime + 3, fireTime + 503);
    update(second.executionId, ExecutionState.FAILED, fireTime + 7, fireTime + 1007);
    await settled(agent);

    const metrics = await scrape();
    expect(sampleValue(metrics, "shardline_fires_total", { shardline_job: "rollup" })).toBe(1);
    expect(sampleValue(metrics, "shardline_executions_total", { shardline_job: "rollup", outcome: "succeeded" })).toBe(1);
    expect(sampleValue(metrics, "shardline_executions_total", { shardline_job: "rollup", outcome: "failed" })).toBe(1);
    expect(sampleValue(metrics, "shardline_execution_duration_seconds_count", { shardline_job: "rollup", outcome: "succeeded" })).toBe(1);
    expect(sampleValue(metrics, "shardline_execution_duration_seconds_sum", { shardline_job: "rollup", outcome: "succeeded" })).toBeCloseTo(0.5, 6);
    expect(sampleValue(metrics, "shardline_execution_duration_seconds_sum", { shardline_job: "rollup", outcome: "failed" })).toBeCloseTo(1, 6);
    // Once each: when the first reported running, and when the second was reported finished.
    expect(sampleValue(metrics, "shardline_fire_lag_seconds_count", { shardline_job: "rollup" })).toBe(2);
    expect(sampleValue(metrics, "shardline_fire_lag_seconds_sum", { shardline_job: "rollup" })).toBeCloseTo(0.01, 6);
    expect(sampleValue(metrics, "shardline_fire_lag_seconds_bucket", { shardline_job: "rollup", le: "0.005" })).toBe(1);
    expect(sampleValue(metrics, "shardline_agents_connected")).toBe(1);
    expect(sampleValue(metrics, "shardline_shards_assigned", { agent: "py-1" })).toBe(2);
    expect(metrics.get("shardline_send_queue_messages")?.map((s) => s.labels.agent)).toEqual(["py-1"]);
    expect(sampleValue(metrics, "shardline_leader")).toBe(1);
    expect(sampleValue(metrics, "shardline_term")).toBe(controller.term);
  });

  it("counts shards moved, lease expiries and failovers when an agent joins and another is lost", async () => {
    await admin.applyJob({ manifest: ROLLUP });
    const first = await connect("py-1", ["work"]);
    await settled(first);
    const second = await connect("py-2", ["work"]);
    // The newcomer takes one shard: the first agent is asked to give it back, and does.
    let revoke;
    do revoke = (await first.next("assignmentUpdate")).revoke;
    while (revoke.length === 0);
    first.stream.send({ kind: { case: "release", value: { assignments: revoke } } });
    const moved = revoke[0]!.shard!.shard;
    let added;
    do added = (await second.next("assignmentUpdate")).add;
    while (!added.some((a) => a.shard?.shard === moved));
    expect(sampleValue(await scrape(), "shardline_shards_moved_total", { shardline_job: "rollup" })).toBe(1);

    // The second agent runs a shard's execution, then its stream drops: once its lease expires
    // the run is lost and runs again on the first agent.
    await admin.triggerJob({ name: "rollup", shards: [moved] });
    const [run] = (await second.next("dispatch")).executions;
    second.stream.send({ kind: { case: "executionUpdates", value: { updates: [{ executionId: run!.executionId, state: ExecutionState.RUNNING, startedAtUnixMs: BigInt(Date.now()) }] } } });
    await settled(second);
    clearInterval(timers[1]!);
    second.close();
    const rerun = (await first.next("dispatch")).executions[0]!;
    expect(rerun.attempt).toBe(2);
    await settled(first);

    const metrics = await scrape();
    expect(sampleValue(metrics, "shardline_lease_expiries_total")).toBe(1);
    expect(sampleValue(metrics, "shardline_failovers_total", { shardline_job: "rollup" })).toBe(1);
    expect(sampleValue(metrics, "shardline_executions_total", { shardline_job: "rollup", outcome: "lost" })).toBe(1);
    // Back on the first agent: a second move.
    expect(sampleValue(metrics, "shardline_shards_moved_total", { shardline_job: "rollup" })).toBe(2);
    expect(sampleValue(metrics, "shardline_shards_assigned", { agent: "py-1" })).toBe(2);
    expect(sampleValue(metrics, "shardline_agents_connected")).toBe(1);
  });

  it("counts misfires as the executions recorded misfired", async () => {
    await admin.applyJob({ manifest: TICKER });
    const agent = await connect("py-1", ["tick"]);
    // The first run never finishes, so the fires after it misfire.
    await agent.next("dispatch");
    await expect.poll(async () => sampleValue(await scrape(), "shardline_misfires_total", { shardline_job: "ticker", reason: "shard" }), { timeout: 10_000, interval: 200 }).toBeGreaterThan(0);
    await admin.pauseJob({ name: "ticker" });
    await settled(agent);

    const metrics = await scrape();
    const misfired = (await admin.listExecutions({ job: "ticker", state: ExecutionState.MISFIRED, limit: 1000 })).executions.length;
    expect(sampleValue(metrics, "shardline_misfires_total", { shardline_job: "ticker", reason: "shard" })).toBe(misfired);
    // Each reason's series exists from 0: the shard was busy, neither behind nor down.
    expect(sampleValue(metrics, "shardline_misfires_total", { shardline_job: "ticker", reason: "behind" })).toBe(0);
    expect((metrics.get("shardline_misfires_total") ?? []).filter((s) => s.labels.shardline_job === "ticker").map((s) => s.labels.reason).sort()).toEqual(["behind", "down", "shard"]);
    expect(sampleValue(metrics, "shardline_executions_total", { shardline_job: "ticker", outcome: "misfired" })).toBe(misfired);
    expect(sampleValue(metrics, "shardline_fires_total", { shardline_job: "ticker" })).toBe(misfired + 1);
  });

  it("shows each job's rollout step and phase, and counts finished executions by revision", async () => {
    const sweep = (parameter: string) =>
      `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: sweep}\nspec: {shards: 2, handler: work, parameter: ${parameter}, rollout: {steps: [{weight: 50}, {pause: {}}]}}\n`;
    await admin.applyJob({ manifest: sweep("v1") });
    let metrics = await scrape();
    expect(sampleValue(metrics, "shardline_rollout_step", { shardline_job: "sweep" })).toBe(0);
    expect(sampleValue(metrics, "shardline_rollout_phase", { shardline_job: "sweep", phase: "none" })).toBe(1);
    await admin.applyJob({ manifest: sweep("v2") });
    const agent = await connect("py-1", ["work"]);
    await admin.triggerJob({ name: "sweep" });
    const executions = [];
    while (executions.length < 2) executions.push(...(await agent.next("dispatch")).executions);
    const now = BigInt(Date.now());
    agent.stream.send({
      kind: {
        case: "executionUpdates",
        value: { updates: executions.map((e) => ({ executionId: e.executionId, state: e.revision === 2n ? ExecutionState.FAILED : ExecutionState.SUCCEEDED, startedAtUnixMs: now, finishedAtUnixMs: now })) },
      },
    });
    await settled(agent);

    metrics = await scrape();
    expect(sampleValue(metrics, "shardline_rollout_step", { shardline_job: "sweep" })).toBe(2);
    expect(Object.fromEntries(metrics.get("shardline_rollout_phase")!.map((sample) => [sample.labels.phase, sample.value]))).toEqual({
      none: 0,
      progressing: 0,
      paused: 1,
      completed: 0,
      aborted: 0,
    });
    expect(sampleValue(metrics, "shardline_revision_executions_total", { shardline_job: "sweep", revision: "1", outcome: "succeeded" })).toBe(1);
    expect(sampleValue(metrics, "shardline_revision_executions_total", { shardline_job: "sweep", revision: "2", outcome: "failed" })).toBe(1);

    await admin.abortRollout({ job: "sweep" });
    metrics = await scrape();
    expect(sampleValue(metrics, "shardline_rollout_phase", { shardline_job: "sweep", phase: "aborted" })).toBe(1);
    expect(sampleValue(metrics, "shardline_rollout_phase", { shardline_job: "sweep", phase: "paused" })).toBe(0);
    // A deleted job's series say no phase at all.
    await admin.deleteJob({ name: "sweep" });
    metrics = await scrape();
    expect(sampleValue(metrics, "shardline_rollout_step", { shardline_job: "sweep" })).toBe(0);
    expect(metrics.get("shardline_rollout_phase")!.map((sample) => sample.value)).toEqual([0, 0, 0, 0, 0]);
  });

  it("counts the time its event loop could not run, and the agent leases it extended for it", async () => {
    await admin.applyJob({ manifest: ROLLUP });
    await connect("py-1", ["work"]);
    // The controller runs in this process: holding the event loop is a stall it must notice.
    const until = Date.now() + 600;
    while (Date.now() < until) {
      // Busy on purpose: nothing else in this process may run meanwhile.
    }
    await expect.poll(async () => sampleValue(await scrape(), "shardline_leases_extended_total"), { timeout: 10_000, interval: 100 }).toBeGreaterThanOrEqual(1);
    expect(sampleValue(await scrape(), "shardline_controller_stall_seconds_total")).toBeGreaterThanOrEqual(0.35);
  });
});

describe("ControllerMetrics", () => {
  const record = (fields: Partial<ExecutionRecord> & { fireTime: number }): ExecutionRecord => ({
    id: `j/${fields.fireTime}/${fields.shard ?? 0}/${fields.attempt ?? 1}`,
    job: "j",
    shard: 0,
    attempt: 1,
    agent: "a",
    state: "pending",
    cause: "schedule",
    parameter: "",
    ...fields,
  });

  it("does not count again the fires a new leader restored, and counts the ones it makes", async () => {
    const registry = new MetricsRegistry({ serviceName: "test" });
    const metrics = new ControllerMetrics(registry, { core: () => undefined, sessions: () => undefined });
    const restored = record({ fireTime: 1500, cause: "trigger", state: "running", startedAt: 1501 });
    metrics.lead({ term: 2, jobs: [], cursors: new Map([["j", 1000]]), openExecutions: [restored], settledOfOpenFires: [], revisions: [] });
    const observe = (...executions: ExecutionRecord[]): void => metrics.observe({ persist: { executions }, messages: [], closes: [], events: [] });

    observe({ ...restored, state: "succeeded", finishedAt: 1600 });
    observe(record({ fireTime: 2000 }), record({ fireTime: 2000, shard: 1 }));
    observe(record({ fireTime: 2000, state: "running", startedAt: 2002 }), record({ fireTime: 2000, shard: 1, state: "misfired" }));
    observe(record({ fireTime: 2000, attempt: 2, cause: "retry" }));

    const text = parsePrometheusText(await registry.text());
    expect(sampleValue(text, "shardline_fires_total", { shardline_job: "j" })).toBe(1);
    expect(sampleValue(text, "shardline_executions_total", { shardline_job: "j", outcome: "succeeded" })).toBe(1);
    expect(sampleValue(text, "shardline_executions_total", { shardline_job: "j", outcome: "misfired" })).toBe(1);
    // The restored trigger's start when it finished, and the new fire's when it started.
    expect(sampleValue(text, "shardline_fire_lag_seconds_count", { shardline_job: "j" })).toBe(2);
    expect(sampleValue(text, "shardline_fire_lag_seconds_sum", { shardline_job: "j" })).toBeCloseTo(0.003, 6);
    await registry.shutdown();
  });

  it("keeps series of each job's newest revisions only, and shows rollouts only while it leads", async () => {
    const registry = new MetricsRegistry({ serviceName: "test" });
    let leading = false;
    const core = { term: 3, agentLoads: () => [] } as unknown as ControllerCore;
    const metrics = new ControllerMetrics(registry, { core: () => (leading ? core : undefined), sessions: () => undefined });
    const job = (rollout?: JobRecord["rollout"]): JobRecord => ({ name: "j", manifest: "", spec: {} as JobRecord["spec"], paused: false, revision: 12, disabledShards: [], ...(rollout ? { rollout } : {}) });
    const tally = { runs: 0, failures: 0, durationsMs: [] };
    const paused = job({ stableRevision: 11, targetRevision: 12, phase: "paused", step: 3, stepStartedAt: 0, stepFires: 0, selectors: [], shards: [], since: 0, target: tally, stable: tally });
    metrics.lead({ term: 3, jobs: [paused], cursors: new Map(), openExecutions: [], settledOfOpenFires: [], revisions: [] });
    let text = parsePrometheusText(await registry.text());
    expect(sampleValue(text, "shardline_rollout_step", { shardline_job: "j" })).toBe(0);
    expect(sampleValue(text, "shardline_rollout_phase", { shardline_job: "j", phase: "paused" })).toBe(0);
    leading = true;
    text = parsePrometheusText(await registry.text());
    expect(sampleValue(text, "shardline_rollout_step", { shardline_job: "j" })).toBe(4);
    expect(sampleValue(text, "shardline_rollout_phase", { shardline_job: "j", phase: "paused" })).toBe(1);

    // Revisions 1 to 12, one failed run each: the newest ten are kept; an older one seen later is not counted.
    const runs = Array.from({ length: 12 }, (_, i) => record({ fireTime: 1000 + i, revision: i + 1, state: "failed" }));
    metrics.observe({ persist: { executions: runs, jobs: [job()] }, messages: [], closes: [], events: [] });
    metrics.observe({ persist: { executions: [record({ fireTime: 2000, revision: 1, state: "succeeded" })] }, messages: [], closes: [], events: [] });
    text = parsePrometheusText(await registry.text());
    expect(text.get("shardline_revision_executions_total")!.map((sample) => Number(sample.labels.revision)).sort((a, b) => a - b)).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(sampleValue(text, "shardline_rollout_step", { shardline_job: "j" })).toBe(0);
    expect(sampleValue(text, "shardline_rollout_phase", { shardline_job: "j", phase: "none" })).toBe(1);
    await registry.shutdown();
  });
});
