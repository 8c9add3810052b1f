import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ExecutionContextSchema, type ExecutionContext, type ExecutionUpdate } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { FakeKubeApiServer, type KubeObject } from "../../../test/harness/fake-kube-api-server.js";
import type { ExecutionRun } from "../execution-run.js";
import { connectKubernetes, type KubernetesAccess } from "./kube-config.js";
import { jobNameFor, type KubernetesRunConfig } from "./job-manifest.js";
import { KubernetesExecutor, type KubernetesExecutorOptions } from "./kubernetes-executor.js";

const NS = "batch-work";
const FIRE = 1_700_000_000_000n;
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

const CONFIG: KubernetesRunConfig = {
  podTemplateJson: JSON.stringify({
    metadata: { labels: { team: "finance" } },
    spec: { containers: [{ name: "rollup", image: "busybox:1.36", command: ["sh", "-c", "echo $SHARDLINE_SHARD"], env: [{ name: "REGION", value: "eu-1" }] }], restartPolicy: "Never" },
  }),
  backoffLimit: 0,
  ttlSecondsAfterFinished: 600,
  logContainer: "rollup",
};

let fake: FakeKubeApiServer;
let access: KubernetesAccess;
let dir: string;
const cleanups: (() => Promise<void> | void)[] = [];

beforeEach(async () => {
  fake = await FakeKubeApiServer.start();
  dir = await mkdtemp(join(tmpdir(), "shardline-kube-"));
  await fake.kubeconfig(NS, join(dir, "kubeconfig"));
  access = await connectKubernetes({ kubeconfig: join(dir, "kubeconfig") });
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  access.client.close();
  await fake.stop();
  await rm(dir, { recursive: true, force: true });
});

/** An executor of agent `agentId` whose reports are collected per execution. */
function agent(agentId = "node-a", options: Partial<KubernetesExecutorOptions> = {}) {
  const reports: ExecutionUpdate[] = [];
  const executor = new KubernetesExecutor({
    agentId,
    logger: pino({ level: "silent" }),
    client: access.client,
    namespace: access.namespace,
    configOf: () => CONFIG,
    maxResultBytes: 4096,
    report: (update) => reports.push(update),
    retry: { initialMs: 20, maxMs: 200 },
    stopWaitMs: 5_000,
    ...options,
  });
  cleanups.push(() => executor.close());
  const terminal = (executionId: string): Promise<ExecutionUpdate> =>
    until(() => reports.find((r) => r.executionId === executionId && r.state !== ExecutionState.RUNNING), `a terminal report of ${executionId}`);
  const running = (executionId: string): Promise<ExecutionUpdate> =>
    until(() => reports.find((r) => r.executionId === executionId && r.state === ExecutionState.RUNNING), `RUNNING of ${executionId}`);
  return { executor, reports, terminal, running };
}

function context(shard = 3, init: { timeoutMs?: number; attempt?: number; job?: string } = {}): ExecutionContext {
  const job = init.job ?? "billing-rollup";
  const attempt = init.attempt ?? 1;
  return create(ExecutionContextSchema, {
    executionId: `${job}/${FIRE}/${shard}/${attempt}`,
    job,
    shard,
    shardCount: 8,
    shardParameter: "shanghai",
    parameter: "cost=$(total)",
    fireTimeUnixMs: FIRE,
    attempt,
    timeoutMs: init.timeoutMs ?? 0,
    assignment: { shard: { job, shard }, term: 1n, generation: 7n },
    // term * 2^32 + generation of the assignment, as the controller makes it.
    fencingToken: (1n << 32n) + 7n,
    revision: 4n,
    traceContext: { traceparent: TRACEPARENT },
  });
}

/** Starts a run and waits until its Job exists. */
async function started(executor: KubernetesExecutor, ctx: ExecutionContext): Promise<{ run: ExecutionRun; name: string }> {
  const run = executor.create(ctx);
  run.start();
  const name = jobNameFor(ctx);
  await until(() => fake.job(NS, name), `Job ${name}`);
  return { run, name };
}

async function until<T>(probe: () => T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function envOf(job: KubeObject): Record<string, string> {
  const containers = ((job.spec!.template as { spec: { containers: { env: { name: string; value: string }[] }[] } }).spec.containers);
  return Object.fromEntries(containers[0]!.env.map((variable) => [variable.name, variable.value]));
}

describe("KubernetesExecutor", () => {
  it("creates a batch/v1 Job named after the execution, labelled for its job, shard, fire and revision, with the execution context in its environment", async () => {
    const { executor, running } = agent("node-a", { owner: { name: "shardline-agent-x7k2p", uid: "3f1c", namespace: NS } });
    const ctx = context(3, { timeoutMs: 120_000 });
    const { name } = await started(executor, ctx);
    expect(name).toMatch(/^billing-rollup-3-[a-z2-7]{10}$/);
    const job = fake.job(NS, name)!;
    expect(job.metadata.labels).toEqual({
      "app.kubernetes.io/managed-by": "shardline",
      "shardline.dev/job": "billing-rollup",
      "shardline.dev/shard": "3",
      "shardline.dev/fire-time": String(FIRE),
      "shardline.dev/attempt": "1",
      "shardline.dev/revision": "4",
      "shardline.dev/agent": "node-a",
    });
    expect(job.metadata.annotations?.["shardline.dev/execution-id"]).toBe(ctx.executionId);
    expect(job.metadata.ownerReferences).toEqual([{ apiVersion: "v1", kind: "Pod", name: "shardline-agent-x7k2p", uid: "3f1c", controller: false, blockOwnerDeletion: false }]);
    expect(job.spec).toMatchObject({ backoffLimit: 0, ttlSecondsAfterFinished: 600, activeDeadlineSeconds: 180 });
    const template = job.spec!.template as { metadata: { labels: Record<string, string> }; spec: { restartPolicy: string } };
    expect(template.metadata.labels).toMatchObject({ team: "finance", "shardline.dev/job": "billing-rollup", "shardline.dev/execution": name });
    expect(envOf(job)).toEqual({
      REGION: "eu-1",
      SHARDLINE_EXECUTION_ID: ctx.executionId,
      SHARDLINE_JOB: "billing-rollup",
      SHARDLINE_SHARD: "3",
      SHARDLINE_SHARD_COUNT: "8",
      SHARDLINE_SHARD_PARAMETER: "shanghai",
      // Doubled, so that Kubernetes' $(VAR) expansion gives the container "cost=$(total)".
      SHARDLINE_PARAMETER: "cost=$$(total)",
      SHARDLINE_FIRE_TIME: "2023-11-14T22:13:20.000Z",
      SHARDLINE_ATTEMPT: "1",
      SHARDLINE_AGENT_ID: "node-a",
      SHARDLINE_FENCING_TOKEN: "4294967303",
      SHARDLINE_REVISION: "4",
      TRACEPARENT,
    });
    expect((await running(ctx.executionId)).state).toBe(ExecutionState.RUNNING);
  });

  it("reports SUCCEEDED with the tail of the pod's log, and labels the Job reported", async () => {
    const { executor, terminal, reports } = agent();
    const ctx = context();
    const { name } = await started(executor, ctx);
    const pod = fake.startPod(NS, name);
    fake.writeLog(NS, pod, `${"x".repeat(5000)}\nrows: 1234\n`);
    fake.succeed(NS, name);
    const update = await terminal(ctx.executionId);
    expect(update.state).toBe(ExecutionState.SUCCEEDED);
    expect(update.result.endsWith("\nrows: 1234")).toBe(true);
    expect(Buffer.byteLength(update.result)).toBeLessThanOrEqual(4096);
    expect(reports.map((r) => r.state)).toEqual([ExecutionState.RUNNING, ExecutionState.SUCCEEDED]);
    await until(() => fake.job(NS, name)?.metadata.labels?.["shardline.dev/reported"] === "true", "the reported label");
  });

  it("reports FAILED with the Job's reason, the container's exit and the log tail", async () => {
    const { executor, terminal } = agent();
    const ctx = context();
    const { name } = await started(executor, ctx);
    fake.startPod(NS, name);
    fake.fail(NS, name, { exitCode: 3, log: "reading ledger\nerror: ledger locked\n" });
    const update = await terminal(ctx.executionId);
    expect(update.state).toBe(ExecutionState.FAILED);
    expect(update.error).toBe(
      `the Job ${name} failed: BackoffLimitExceeded: Job has reached the specified backoff limit; container rollup exited with code 3: reading ledger\nerror: ledger locked`,
    );
  });

  it("names an OOMKilled container and the Job's deadline in the error", async () => {
    const { executor, terminal } = agent();
    const ctx = context();
    const { name } = await started(executor, ctx);
    fake.fail(NS, name, { exitCode: 137, containerReason: "OOMKilled", reason: "DeadlineExceeded", message: "Job was active longer than specified deadline" });
    const update = await terminal(ctx.executionId);
    expect(update.error).toContain("DeadlineExceeded: Job was active longer than specified deadline; container rollup exited with code 137 (OOMKilled)");
  });

  it("on a timeout deletes the Job with Foreground propagation and reports TIMED_OUT once its pods are gone", async () => {
    const { executor, terminal } = agent();
    const ctx = context(3, { timeoutMs: 300 });
    const { name } = await started(executor, ctx);
    const pod = fake.startPod(NS, name);
    fake.writeLog(NS, pod, "still working\n");
    fake.podTerminationMs = 300;
    const update = await terminal(ctx.executionId);
    expect(update.state).toBe(ExecutionState.TIMED_OUT);
    expect(update.error).toBe(`timed out after 300 ms; the Job ${name} and its pods were deleted: still working`);
    expect(fake.requests.filter((r) => r.method === "DELETE").map((r) => r.query.propagationPolicy)).toEqual(["Foreground"]);
    // Reported only once the pod had terminated and the Job was gone.
    expect(fake.job(NS, name)).toBeUndefined();
    expect(fake.pods(NS)).toEqual([]);
  });

  it("on a cancel deletes the Job and its pods and reports CANCELLED", async () => {
    const { executor, terminal, running } = agent();
    const ctx = context();
    const { run, name } = await started(executor, ctx);
    await running(ctx.executionId);
    fake.startPod(NS, name);
    run.stop(ExecutionState.CANCELLED, "cancelled by admin");
    const update = await terminal(ctx.executionId);
    expect(update.state).toBe(ExecutionState.CANCELLED);
    expect(update.error).toBe(`cancelled by admin; the Job ${name} and its pods were deleted`);
    expect(fake.jobs(NS)).toEqual([]);
    expect(fake.pods(NS)).toEqual([]);
  });

  it("reports a stop without waiting forever when the deletion is never seen done", async () => {
    const { executor, terminal, running } = agent("node-a", { stopWaitMs: 300 });
    const ctx = context();
    const { run, name } = await started(executor, ctx);
    await running(ctx.executionId);
    fake.startPod(NS, name);
    fake.podTerminationMs = 60_000;
    run.stop(ExecutionState.LOST, "the agent is fenced");
    const update = await terminal(ctx.executionId);
    expect(update.state).toBe(ExecutionState.LOST);
    expect(update.error).toBe("the agent is fenced; it was not seen gone within 300 ms");
  });

  it("treats a 409 on create as the Job already made for this execution, and adopts it", async () => {
    const first = agent();
    const ctx = context();
    const { name } = await started(first.executor, ctx);
    await first.running(ctx.executionId);
    // The same execution again, on a fresh executor (an agent whose process restarted, a repeated dispatch).
    const second = agent();
    second.executor.create(ctx).start();
    await second.running(ctx.executionId);
    expect(fake.requests.filter((r) => r.method === "POST")).toHaveLength(2);
    expect(fake.jobs(NS).map((job) => job.metadata.name)).toEqual([name]);
    fake.succeed(NS, name, { log: "done\n" });
    expect((await second.terminal(ctx.executionId)).result).toBe("done");
  });

  it("fails when a Job of the same name belongs to something else", async () => {
    const ctx = context();
    const name = jobNameFor(ctx);
    await access.client.json({
      method: "POST",
      path: `/apis/batch/v1/namespaces/${NS}/jobs`,
      body: { apiVersion: "batch/v1", kind: "Job", metadata: { name }, spec: { template: { spec: { containers: [{ name: "x", image: "x" }], restartPolicy: "Never" } } } },
    });
    const { executor, terminal } = agent();
    executor.create(ctx).start();
    const update = await terminal(ctx.executionId);
    expect(update.state).toBe(ExecutionState.FAILED);
    expect(update.error).toBe(`a Job named ${name} already exists in namespace ${NS} and was not made by Shardline`);
  });

  it("fails at once, with the API server's message, when Kubernetes refuses the Job", async () => {
    const { executor, terminal, reports } = agent("node-a", {
      configOf: () => ({ ...CONFIG, podTemplateJson: JSON.stringify({ spec: { containers: [{ name: "a", image: "x" }], restartPolicy: "Always" } }) }),
    });
    const ctx = context();
    executor.create(ctx).start();
    const update = await terminal(ctx.executionId);
    expect(update.state).toBe(ExecutionState.FAILED);
    expect(update.error).toContain("Kubernetes refused the Job");
    expect(update.error).toContain('spec.template.spec.restartPolicy: Unsupported value: "Always"');
    expect(reports).toHaveLength(1);
  });

  it("fails an execution whose Job someone else deleted", async () => {
    const { executor, terminal } = agent();
    const ctx = context();
    const { name } = await started(executor, ctx);
    await until(() => fake.watchCount > 0, "the watch");
    fake.deleteJob(NS, name);
    const update = await terminal(ctx.executionId);
    expect(update.state).toBe(ExecutionState.FAILED);
    expect(update.error).toBe(`the Job ${name} was deleted before it finished, by someone other than this agent`);
  });

  it("fails an execution that names no pod template", async () => {
    const { executor, terminal } = agent("node-a", { configOf: () => undefined });
    const ctx = context();
    executor.create(ctx).start();
    expect((await terminal(ctx.executionId)).error).toBe("the execution names no Kubernetes pod template (spec.kubernetes)");
    expect(fake.requests.filter((r) => r.method === "POST")).toEqual([]);
  });

  describe("after the agent restarts", () => {
    it("recovers the Jobs it created and did not report: a finished one reports at once, a running one when it ends", async () => {
      const before = agent();
      const done = context(1);
      const going = context(2);
      const { name: doneName } = await started(before.executor, done);
      const { name: goingName } = await started(before.executor, going);
      await before.running(going.executionId);
      // The process dies: nothing is stopped, nothing more is reported.
      before.executor.close();
      fake.succeed(NS, doneName, { log: "finished while the agent was away\n" });
      fake.startPod(NS, goingName);

      const after = agent();
      const recovered = await after.executor.recover();
      expect(recovered.map((c) => c.executionId)).toEqual([done.executionId, going.executionId]);
      // The contexts come back whole: the runtime can claim their assignments again.
      expect(recovered[1]).toMatchObject({ job: "billing-rollup", shard: 2, attempt: 1, assignment: { shard: { job: "billing-rollup", shard: 2 }, term: 1n, generation: 7n }, traceContext: { traceparent: TRACEPARENT } });
      const posts = fake.requests.filter((r) => r.method === "POST").length;
      for (const ctx of recovered) after.executor.create(ctx).start();
      expect((await after.terminal(done.executionId)).result).toBe("finished while the agent was away");
      const running = await after.running(going.executionId);
      expect(Number(running.startedAtUnixMs)).toBeLessThanOrEqual(Date.now());
      fake.fail(NS, goingName, { log: "boom\n" });
      expect((await after.terminal(going.executionId)).state).toBe(ExecutionState.FAILED);
      // Adopted, not created again.
      expect(fake.requests.filter((r) => r.method === "POST").length).toBe(posts);
      // Both are reported now: a later restart finds nothing to adopt.
      await until(() => fake.jobs(NS).every((job) => job.metadata.labels?.["shardline.dev/reported"] === "true"), "both Jobs labelled reported");
      expect(await agent().executor.recover()).toEqual([]);
    });

    it("deletes a recovered Job whose run is stopped before it starts again (its shard moved on)", async () => {
      const before = agent();
      const ctx = context();
      const { name } = await started(before.executor, ctx);
      before.executor.close();
      const after = agent();
      const [recovered] = await after.executor.recover();
      after.executor.create(recovered!).stop(ExecutionState.LOST, "the shard is no longer this agent's");
      const update = await after.terminal(ctx.executionId);
      expect(update.state).toBe(ExecutionState.LOST);
      expect(update.error).toBe(`the shard is no longer this agent's; the Job ${name} and its pods were deleted`);
      expect(fake.jobs(NS)).toEqual([]);
    });

    it("leaves other agents' Jobs alone", async () => {
      const other = agent("node-b");
      await started(other.executor, context());
      expect(await agent("node-a").executor.recover()).toEqual([]);
      expect(await agent("node-b").executor.recover()).toHaveLength(1);
    });

    it("recovers the Jobs of an agent whose id is too long for a label value", async () => {
      const id = `ip-10-0-1-23.eu-west-1.compute.internal.${"a".repeat(40)}`;
      const before = agent(id);
      const ctx = context();
      const { name } = await started(before.executor, ctx);
      expect(fake.job(NS, name)!.metadata.labels!["shardline.dev/agent"]).toMatch(/^ip-10-0-1-23\.eu-west-1\.compute\.internal\.a+-[a-z2-7]{10}$/);
      before.executor.close();
      expect((await agent(id).executor.recover()).map((c) => c.executionId)).toEqual([ctx.executionId]);
    });
  });

  describe("when the API server goes away", () => {
    it("survives the API server stopping and restarting mid-watch: lists again after 410 Gone and reports the outcome", async () => {
      const { executor, terminal, running } = agent();
      const ctx = context();
      const { name } = await started(executor, ctx);
      await running(ctx.executionId);
      await until(() => fake.watchCount > 0, "the watch");
      await fake.stop();
      // The Job ends while the agent cannot see it.
      fake.succeed(NS, name, { log: "ended during the outage\n" });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const lists = fake.requests.filter((r) => r.method === "GET" && r.path.endsWith("/jobs") && r.query.watch === undefined).length;
      // A restarted API server keeps no events from before: resuming gets 410 Expired.
      await fake.restart();
      const update = await terminal(ctx.executionId);
      expect(update.state).toBe(ExecutionState.SUCCEEDED);
      expect(update.result).toBe("ended during the outage");
      const watches = fake.requests.filter((r) => r.query.watch === "1");
      expect(watches.some((r) => r.query.resourceVersion !== undefined)).toBe(true);
      expect(fake.requests.filter((r) => r.method === "GET" && r.path.endsWith("/jobs") && r.query.watch === undefined).length).toBeGreaterThan(lists);
    });

    it("resumes a watch the API server ended from its last resourceVersion, without listing again", async () => {
      const { executor, terminal, running } = agent();
      const ctx = context();
      const { name } = await started(executor, ctx);
      await running(ctx.executionId);
      await until(() => fake.watchCount > 0, "the watch");
      const lists = fake.requests.filter((r) => r.path.endsWith("/jobs") && r.method === "GET" && r.query.watch === undefined).length;
      fake.endWatches();
      await until(() => fake.watchCount > 0, "the resumed watch");
      fake.succeed(NS, name, { log: "ok\n" });
      expect((await terminal(ctx.executionId)).result).toBe("ok");
      expect(fake.requests.filter((r) => r.path.endsWith("/jobs") && r.method === "GET" && r.query.watch === undefined).length).toBe(lists);
      const resumed = fake.requests.filter((r) => r.query.watch === "1").at(-1)!;
      expect(Number(resumed.query.resourceVersion)).toBeGreaterThan(1);
    });

    it("creates the Job once the API server answers again", async () => {
      const { executor, terminal, running, reports } = agent();
      await fake.stop();
      const ctx = context();
      executor.create(ctx).start();
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(reports).toEqual([]);
      await fake.restart();
      await running(ctx.executionId);
      const name = jobNameFor(ctx);
      fake.succeed(NS, name, { log: "late but fine\n" });
      expect((await terminal(ctx.executionId)).result).toBe("late but fine");
    });

    it("deletes a cancelled execution's Job once the API server is back", async () => {
      const { executor, terminal, running } = agent();
      const ctx = context();
      const { run, name } = await started(executor, ctx);
      await running(ctx.executionId);
      await fake.stop();
      run.stop(ExecutionState.CANCELLED, "cancelled by admin");
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(fake.job(NS, name)).toBeDefined();
      await fake.restart();
      const update = await terminal(ctx.executionId);
      expect(update.state).toBe(ExecutionState.CANCELLED);
      expect(fake.job(NS, name)).toBeUndefined();
    });
  });
});

describe("connectKubernetes", () => {
  it("reads KUBECONFIG, taking the namespace of its current context", async () => {
    const found = await connectKubernetes({ env: { KUBECONFIG: join(dir, "kubeconfig") } });
    expect(found).toMatchObject({ namespace: NS, source: join(dir, "kubeconfig") });
    expect(found.client.server).toBe(fake.url);
    found.client.close();
  });

  it("lets the namespace be given", async () => {
    const found = await connectKubernetes({ kubeconfig: join(dir, "kubeconfig"), namespace: "other" });
    expect(found.namespace).toBe("other");
    found.client.close();
  });

  it("says what to set when there is no configuration at all", async () => {
    const home = process.env.HOME;
    process.env.HOME = dir;
    try {
      await expect(connectKubernetes({ env: {} })).rejects.toThrow("no Kubernetes configuration: run the agent in a pod with a service account, or set KUBECONFIG");
    } finally {
      process.env.HOME = home;
    }
  });
});

describe("KubernetesExecutor, when the API server answers late", () => {
  it("does not take its new Job for deleted when the list of Jobs, sent before the create, arrives after it", async () => {
    const { executor, terminal, running } = agent("node-a");
    const ctx = context(6);
    const release = fake.holdLists();
    const run = executor.create(ctx);
    run.start();
    const name = jobNameFor(ctx);
    // The list went out first (its answer held, without the Job); the create is answered.
    await running(ctx.executionId);
    release();
    await until(() => fake.watchCount > 0, "the watch after the list");
    fake.succeed(NS, name, { log: "done\n" });

    const end = await terminal(ctx.executionId);
    expect(end.state).toBe(ExecutionState.SUCCEEDED);
  });
});

describe("KubernetesExecutor, when the Job's pod does not start", () => {
  const withStartTimeout = (seconds: number) => () => ({ ...CONFIG, startTimeoutSeconds: seconds });

  it.each([
    ["pulling its image", { waiting: { reason: "ImagePullBackOff", message: 'Back-off pulling image "busybox:nope"' } }, 'ImagePullBackOff: Back-off pulling image "busybox:nope"'],
    ["missing a Secret", { waiting: { reason: "CreateContainerConfigError", message: 'secret "db" not found' } }, 'CreateContainerConfigError: secret "db" not found'],
    ["unschedulable", { unschedulable: "0/3 nodes are available: 3 Insufficient memory." }, "Unschedulable: 0/3 nodes are available: 3 Insufficient memory."],
  ])("fails an execution whose pod is still %s after startTimeoutSeconds, saying why, and deletes the Job", async (_what, pod, why) => {
    const { executor, terminal } = agent("node-a", { configOf: withStartTimeout(1), startCheckMs: 50 });
    const ctx = context(1);
    const { name } = await started(executor, ctx);
    fake.startPod(NS, name, pod);

    const end = await terminal(ctx.executionId);

    expect(end.state).toBe(ExecutionState.FAILED);
    expect(end.error).toContain(`the Job's pod did not start within 1 s (spec.kubernetes.startTimeoutSeconds): ${why}`);
    expect(end.error).toContain(`the Job ${name} and its pods were deleted`);
    expect(fake.job(NS, name)).toBeUndefined();
  });

  it("fails at once when the image name can never be pulled", async () => {
    const { executor, terminal } = agent("node-a", { configOf: withStartTimeout(3600), startCheckMs: 50 });
    const ctx = context(2);
    const { name } = await started(executor, ctx);
    fake.startPod(NS, name, { waiting: { reason: "InvalidImageName", message: 'couldn\'t parse image name "Busybox"' } });

    const end = await terminal(ctx.executionId);

    expect(end.state).toBe(ExecutionState.FAILED);
    expect(end.error).toContain(`the Job's pod can never start: InvalidImageName: couldn't parse image name "Busybox" (pod ${fake.podsOf(NS, name)[0]?.metadata.name ?? ""}`);
  });

  it("lets a pod that was pulling its image and then starts run to its end", async () => {
    const { executor, terminal } = agent("node-a", { configOf: withStartTimeout(60), startCheckMs: 50 });
    const ctx = context(4);
    const { name } = await started(executor, ctx);
    const pod = fake.startPod(NS, name, { waiting: { reason: "ErrImagePull", message: "registry unavailable" } });
    const podLists = () => fake.requests.filter((r) => r.path === `/api/v1/namespaces/${NS}/pods` && r.query.labelSelector?.includes(name)).length;
    const seen = podLists();
    await until(() => podLists() > seen, "another look at the pod");

    fake.runPod(NS, pod);
    fake.succeed(NS, name, { log: "done\n" });

    const end = await terminal(ctx.executionId);
    expect(end.state).toBe(ExecutionState.SUCCEEDED);
    expect(end.result).toBe("done");
  });

  it("with startTimeoutSeconds 0 leaves a stuck pod to the execution's timeout", async () => {
    const { executor, terminal } = agent("node-a", { configOf: withStartTimeout(0), startCheckMs: 50 });
    const ctx = context(5, { timeoutMs: 1_500 });
    const { name } = await started(executor, ctx);
    fake.startPod(NS, name, { waiting: { reason: "ImagePullBackOff", message: "Back-off" } });

    const end = await terminal(ctx.executionId);

    expect(end.state).toBe(ExecutionState.TIMED_OUT);
    expect(end.error).toContain("timed out after 1500 ms");
  });
});
