import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Agent } from "../agent/runtime/agent.js";
import { type RunningController, startController } from "../controller/shell/controller.js";
import { ShardlineError } from "../shared/errors.js";
import { AdminService } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { createClient, type Client } from "../shared/grpc/index.js";
import { silentLogger } from "../shared/logging.js";
import { FakeKubeApiServer, grantNeeded, type KubeObject } from "./harness/fake-kube-api-server.js";
import { argoHealth } from "./harness/argocd-health.js";
import { controllerRbacRules, rbacGrants } from "./harness/kustomize.js";
import { CliProcess, freePort, requireBuiltCli, shardline, startAgent, waitFor } from "./harness/processes.js";

const FIXTURES = join(import.meta.dirname, "fixtures");

interface Status {
  observedGeneration?: number;
  shards?: number;
  readyShards?: number;
  owners?: Record<string, number>;
  lastOutcome?: string | null;
  currentRevision?: number;
  stableRevision?: number;
  conditions?: { type: string; status: string; reason: string; message: string }[];
}

const statusOf = (object: KubeObject | undefined): Status => (object?.status ?? {}) as Status;

const condition = (object: KubeObject | undefined, type: string) => statusOf(object).conditions?.find((c) => c.type === type);

/** ShardedJobs followed from a (fake) API server by a controller started with --jobs-from kubernetes. */
describe("--jobs-from kubernetes: ShardedJob objects are jobs, with their status written back", () => {
  let dir = "";
  let fake: FakeKubeApiServer;
  let controller: RunningController | undefined;
  const cleanup: (() => Promise<void> | void)[] = [];

  afterEach(async () => {
    for (const next of cleanup.splice(0).reverse()) await next();
    await controller?.stop();
    controller = undefined;
    await fake?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function start(release?: Promise<void>): Promise<Client<typeof AdminService>> {
    dir = await mkdtemp(join(tmpdir(), "shardline-kube-jobs-"));
    fake = await FakeKubeApiServer.start();
    const kubeconfig = join(dir, "kubeconfig");
    await fake.kubeconfig("default", kubeconfig);
    controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: silentLogger(),
      jobsFrom: { kind: "kubernetes", namespaces: [], kubeconfig, statusEveryMs: 200, timesEveryMs: 600_000 },
    });
    const client = createClient(AdminService, controller.grpcAddress, { deadlineMs: 10_000 });
    cleanup.push(() => client.close());
    const agent = new Agent({
      controller: controller.grpcAddress,
      id: "w-1",
      handlers: { work: async () => ({ ok: true }), slow: () => release ?? Promise.resolve() },
      capacity: 8,
      reconnect: { initialMs: 10, maxMs: 100 },
      logger: silentLogger(),
    });
    agent.start();
    cleanup.push(() => agent.stop());
    return client;
  }

  it("applies a ShardedJob as NAMESPACE.NAME, follows its changes, writes its status, and refuses changes through the admin API", async () => {
    const client = await start();
    fake.applyShardedJob("team-a", { metadata: { name: "billing" }, spec: { shards: 2, handler: "work" } });
    const job = await waitFor("the job applied", async () => (await client.getJob({ name: "team-a.billing" }).catch(() => undefined))?.job);
    expect(job.revision).toBe(1n);
    // Its finalizer, and a status that says every shard is owned.
    await waitFor("the finalizer and a Ready status", () => {
      const object = fake.shardedJob("team-a", "billing");
      return object?.metadata.finalizers?.includes("shardline.dev/executions") && condition(object, "Ready")?.status === "True" ? true : undefined;
    });
    expect(statusOf(fake.shardedJob("team-a", "billing"))).toMatchObject({ observedGeneration: 1, shards: 2, readyShards: 2, owners: { "w-1": 2 }, currentRevision: 1 });
    // Argo CD's health check (deploy/gitops) reads that as Healthy; and, as long as a newer
    // generation has not been seen by the controller, as Progressing.
    const healthy = fake.shardedJob("team-a", "billing")!;
    expect(await argoHealth(healthy)).toMatchObject({ status: "Healthy" });
    expect(await argoHealth({ ...healthy, metadata: { ...healthy.metadata, generation: 2 } })).toMatchObject({ status: "Progressing" });

    const fired = await client.triggerJob({ name: "team-a.billing", shards: [] });
    await waitFor("the trigger's runs", async () => {
      const executions = await Promise.all(fired.executionIds.map((id) => client.getExecution({ id })));
      return executions.every((e) => e.execution?.state === ExecutionState.SUCCEEDED) ? true : undefined;
    });

    // A change of the object is a new revision.
    fake.applyShardedJob("team-a", { metadata: { name: "billing" }, spec: { shards: 3, handler: "work" } });
    await waitFor("revision 2", async () => ((await client.getJob({ name: "team-a.billing" })).job?.revision === 2n ? true : undefined));
    await waitFor("the status of generation 2", () => {
      const status = statusOf(fake.shardedJob("team-a", "billing"));
      return status.observedGeneration === 2 && status.shards === 3 && status.readyShards === 3 ? true : undefined;
    });

    // An invalid change is not applied: the status and an Event say why.
    fake.applyShardedJob("team-a", { metadata: { name: "billing" }, spec: { shards: 0, handler: "work" } });
    await waitFor("the Degraded status", () => (condition(fake.shardedJob("team-a", "billing"), "Degraded")?.reason === "InvalidSpec" ? true : undefined));
    expect(condition(fake.shardedJob("team-a", "billing"), "Degraded")?.message).toMatch(/^spec\.shards: 0 is not allowed/);
    expect(await argoHealth(fake.shardedJob("team-a", "billing"))).toEqual({ status: "Degraded", message: expect.stringMatching(/^InvalidSpec: spec\.shards: 0 is not allowed/) as string });
    expect(fake.events.map((event) => `${String(event.reason)} ${String((event.regarding as { name: string }).name)}`)).toContain("InvalidSpec billing");
    // Another invalid change soon after is no second Event: one a reason per object per ten minutes.
    fake.applyShardedJob("team-a", { metadata: { name: "billing" }, spec: { shards: -1, handler: "work" } });
    await waitFor("the second invalid change seen", () => (condition(fake.shardedJob("team-a", "billing"), "Degraded")?.message.startsWith("spec.shards: -1") ? true : undefined));
    expect(fake.events.filter((event) => event.reason === "InvalidSpec")).toHaveLength(1);
    expect((await client.getJob({ name: "team-a.billing" })).job?.revision).toBe(2n);

    // The admin API refuses to change it, naming where it is managed.
    const refusal = await client.deleteJob({ name: "team-a.billing" }).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(ShardlineError);
    expect((refusal as ShardlineError).message).toBe(
      "job team-a.billing follows the ShardedJob billing in namespace team-a, and is managed there: it cannot be deleted here; change the object instead (kubectl edit shardedjob billing -n team-a, or your GitOps repository)",
    );
    const applied = await client.applyJob({ manifest: "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: team-a.billing}\nspec: {shards: 1, handler: work}\n" }).catch((error: unknown) => error);
    expect((applied as ShardlineError).message).toMatch(/^job team-a\.billing follows the ShardedJob billing in namespace team-a, and is managed there: it cannot be applied here/);
    // Jobs applied through the CLI keep working beside them.
    await client.applyJob({ manifest: "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: cli-job}\nspec: {shards: 1, handler: work}\n" });
    expect((await client.listJobs({})).jobs.map((j) => j.name).sort()).toEqual(["cli-job", "team-a.billing"]);

    // Its ClusterRole (deploy/kustomize) grants exactly what the controller asked for: every
    // request it made, and nothing it did not use.
    expect(new Set(fake.requests.map(grantNeeded))).toEqual(rbacGrants(await controllerRbacRules("cluster")));
  }, 90_000);

  it("says Progressing while a change rolls out, and Ready again once it is promoted through", async () => {
    const client = await start();
    const spec = (parameter: string) => ({ shards: 4, handler: "work", parameter, rollout: { steps: [{ weight: 50 }, { pause: {} }] } });
    fake.applyShardedJob("team-d", { metadata: { name: "sweep" }, spec: spec("one") });
    await waitFor("Ready at revision 1", () => (condition(fake.shardedJob("team-d", "sweep"), "Ready")?.status === "True" ? true : undefined));
    fake.applyShardedJob("team-d", { metadata: { name: "sweep" }, spec: spec("two") });
    await waitFor("Progressing while the rollout pauses", () => (condition(fake.shardedJob("team-d", "sweep"), "Progressing")?.status === "True" ? true : undefined));
    expect(condition(fake.shardedJob("team-d", "sweep"), "Progressing")).toMatchObject({ reason: "RolloutInProgress", message: expect.stringMatching(/^rollout to revision 2: /) as string });
    expect(statusOf(fake.shardedJob("team-d", "sweep"))).toMatchObject({ currentRevision: 2, stableRevision: 1 });
    expect(await argoHealth(fake.shardedJob("team-d", "sweep"))).toMatchObject({ status: "Progressing" });
    // Steering the rollout is allowed through the admin API: it changes no spec.
    await client.promoteRollout({ job: "team-d.sweep", full: true });
    await waitFor("stable again", () => {
      const status = statusOf(fake.shardedJob("team-d", "sweep"));
      return condition(fake.shardedJob("team-d", "sweep"), "Progressing")?.status === "False" && status.stableRevision === 2 ? true : undefined;
    });
  }, 90_000);

  it("keeps a deleted ShardedJob until its running execution has ended, then lets it go", async () => {
    let letGo!: () => void;
    const client = await start(new Promise<void>((resolve) => (letGo = resolve)));
    cleanup.push(() => letGo());
    fake.applyShardedJob("team-b", { metadata: { name: "slow" }, spec: { shards: 1, handler: "slow" } });
    await waitFor("the job applied and owned", async () => ((await client.listAssignments({ job: "team-b.slow" })).assignments.length === 1 ? true : undefined));
    const [id] = (await client.triggerJob({ name: "team-b.slow", shards: [0] })).executionIds;
    await waitFor("the run started", async () => ((await client.getExecution({ id: id! })).execution?.state === ExecutionState.RUNNING ? true : undefined));

    fake.deleteShardedJob("team-b", "slow");
    await waitFor("the object gone once its run ended", () => (fake.shardedJob("team-b", "slow") === undefined ? true : undefined));
    expect((await client.getJob({ name: "team-b.slow" }).catch((error: unknown) => error)) as ShardlineError).toMatchObject({ code: "not-found" });
    // The run was cancelled on its agent, and the finalizer came off only after that was recorded.
    const run = (await client.getExecution({ id: id! })).execution!;
    expect(run.state).toBe(ExecutionState.CANCELLED);
    const removed = fake.requests.find((r) => r.method === "PATCH" && r.path.endsWith("/namespaces/team-b/shardedjobs/slow") && JSON.stringify(r.body).includes('"finalizers":[]'));
    expect(removed?.at).toBeGreaterThanOrEqual(Number(run.finishedAtUnixMs));
  }, 90_000);

  it("lists again after 410 Gone: an object made while the watch was cut is followed; writes status only when it changed", async () => {
    const client = await start();
    fake.applyShardedJob("team-c", { metadata: { name: "first" }, spec: { shards: 1, handler: "work", schedule: "* * * * * *" } });
    await waitFor("the first job", async () => (await client.getJob({ name: "team-c.first" }).catch(() => undefined))?.job);
    // An object is made, the history compacted past it and the watches cut: the next watch, from
    // before the compaction, gets 410, and only a new list finds the object.
    const watchesBefore = fake.requests.filter((r) => r.query.watch !== undefined).length;
    fake.endWatches();
    fake.applyShardedJob("team-c", { metadata: { name: "second" }, spec: { shards: 1, handler: "work" } });
    fake.compact();
    await waitFor("the watch resumed", () => (fake.requests.filter((r) => r.query.watch !== undefined).length > watchesBefore ? true : undefined));
    await waitFor("the second job, after a new list", async () => (await client.getJob({ name: "team-c.second" }).catch(() => undefined))?.job);

    const lists = fake.requests.filter((r) => r.method === "GET" && r.path === "/apis/shardline.dev/v1/shardedjobs" && r.query.watch === undefined);
    expect(lists.length).toBeGreaterThanOrEqual(2);

    // A job firing every second: a change of only its fire times is coalesced (here, into none
    // for ten minutes), while a change that matters is written at once.
    await waitFor("the first job Ready", () => (condition(fake.shardedJob("team-c", "first"), "Ready")?.status === "True" ? true : undefined));
    const writes = () => fake.requests.filter((r) => r.method === "PATCH" && r.path.endsWith("/team-c/shardedjobs/first/status")).length;
    const before = writes();
    const lastFire = (await client.getJob({ name: "team-c.first" })).job!.lastFireUnixMs;
    await waitFor("three more fires", async () => ((await client.getJob({ name: "team-c.first" })).job!.lastFireUnixMs >= lastFire + 3000n ? true : undefined), 30_000);
    // Statuses are looked at every 200 ms: without the coalescing these fires would have been written.
    expect(writes()).toBe(before);
    fake.applyShardedJob("team-c", { metadata: { name: "first" }, spec: { shards: 2, handler: "work", schedule: "* * * * * *" } });
    await waitFor("the new generation written at once", () => (statusOf(fake.shardedJob("team-c", "first")).observedGeneration === 2 ? true : undefined));
    expect(writes()).toBeGreaterThan(before);
  }, 90_000);
});

describe("ShardedJobs and shardline apply side by side, through the binaries", () => {
  it("fires a job from the API server and one from apply; apply and delete of the former fail naming where it is managed", async () => {
    requireBuiltCli();
    const dir = await mkdtemp(join(tmpdir(), "shardline-kube-side-"));
    const fake = await FakeKubeApiServer.start();
    const processes: CliProcess[] = [];
    try {
      const kubeconfig = join(dir, "kubeconfig");
      await fake.kubeconfig("default", kubeconfig);
      const grpc = `127.0.0.1:${await freePort()}`;
      const controller = new CliProcess("controller", ["controller", "--listen", grpc, "--http", `127.0.0.1:${await freePort()}`, "--store", `sqlite:${join(dir, "state.db")}`, "--jobs-from", "kubernetes", "--kubeconfig", kubeconfig]);
      processes.push(controller);
      const env = { SHARDLINE_CONTROLLER: grpc };
      await waitFor("the controller", async () => {
        if (!controller.running) throw new Error(`the controller exited:\n${controller.output}`);
        return (await shardline(["get", "jobs"], env)).code === 0 ? true : undefined;
      });
      processes.push(startAgent(grpc, "w-1", join(FIXTURES, "recording-handlers.mjs"), { SHARDLINE_TEST_RECORD: join(dir, "record.jsonl") }));

      await writeFile(join(dir, "cli.yaml"), "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: from-cli}\nspec: {shards: 1, handler: work}\n");
      expect((await shardline(["apply", "-f", join(dir, "cli.yaml")], env)).stdout).toBe("job/from-cli created\n");
      fake.applyShardedJob("team-a", { metadata: { name: "billing" }, spec: { shards: 2, handler: "work" } });
      await waitFor("the ShardedJob's job", async () => ((await shardline(["get", "job", "team-a.billing"], env)).code === 0 ? true : undefined));

      for (const job of ["from-cli", "team-a.billing"]) {
        const run = await shardline(["run", job, "--wait", "--timeout", "60"], env);
        expect(run.code, run.stderr).toBe(0);
      }

      await writeFile(join(dir, "managed.yaml"), "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: team-a.billing}\nspec: {shards: 5, handler: work}\n");
      const applied = await shardline(["apply", "-f", join(dir, "managed.yaml")], env);
      expect(applied.code).toBe(4);
      expect(applied.stderr).toMatch(/^shardline: job team-a\.billing follows the ShardedJob billing in namespace team-a, and is managed there: it cannot be applied here; change the object instead \(kubectl edit shardedjob billing -n team-a/);
      const deleted = await shardline(["delete", "team-a.billing"], env);
      expect(deleted.code).toBe(4);
      expect(deleted.stderr).toContain("it cannot be deleted here");
    } finally {
      for (const process of processes) await process.stop();
      await fake.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
