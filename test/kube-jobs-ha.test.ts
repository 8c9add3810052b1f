import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningController, startController } from "../controller/shell/controller.js";
import { silentLogger } from "../shared/logging.js";
import { EtcdServer } from "./harness/etcd.js";
import { FakeKubeApiServer, grantNeeded } from "./harness/fake-kube-api-server.js";
import { controllerRbacRules, rbacGrants } from "./harness/kustomize.js";
import { waitFor } from "./harness/processes.js";

/** Two replicas on etcd following ShardedJobs: only the leader writes, and the next leader takes over. */
describe("--jobs-from kubernetes with replicas", () => {
  let etcd: EtcdServer;
  let fake: FakeKubeApiServer;
  let dir = "";
  const controllers: RunningController[] = [];

  beforeAll(async () => {
    etcd = await EtcdServer.start();
    fake = await FakeKubeApiServer.start();
    dir = await mkdtemp(join(tmpdir(), "shardline-kube-ha-"));
  }, 30_000);

  afterAll(async () => {
    for (const controller of controllers) await controller.stop().catch(() => undefined);
    await fake?.stop();
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("writes status from the leader only; after the leader stops, the new one follows the objects and writes", async () => {
    const replica = async (token: string): Promise<RunningController> => {
      const kubeconfig = join(dir, `${token}.kubeconfig`);
      await fake.kubeconfig("default", kubeconfig, token);
      const controller = await startController({
        listen: "127.0.0.1:0",
        http: "127.0.0.1:0",
        store: `etcd://${etcd.endpoint}/kube-ha-${process.pid}/`,
        logger: silentLogger(),
        jobsFrom: { kind: "kubernetes", namespaces: ["team-a"], kubeconfig, statusEveryMs: 200 },
      });
      controllers.push(controller);
      return controller;
    };
    const first = await replica("replica-one");
    await first.elected;
    const second = await replica("replica-two");
    expect(second.term).toBe(0);

    fake.applyShardedJob("team-a", { metadata: { name: "rollup" }, spec: { shards: 2, handler: "work" } });
    await waitFor("the leader's status", () => ((fake.shardedJob("team-a", "rollup")?.status as { observedGeneration?: number } | undefined)?.observedGeneration === 1 ? true : undefined));
    const writesBy = (token: string) => fake.requests.filter((r) => r.token === token && r.method !== "GET").length;
    expect(writesBy("replica-one")).toBeGreaterThan(0);
    // The follower read nothing it acts on, and wrote nothing.
    expect(writesBy("replica-two")).toBe(0);

    await first.stop();
    await second.elected;
    fake.applyShardedJob("team-a", { metadata: { name: "rollup" }, spec: { shards: 3, handler: "work" } });
    await waitFor("the new leader's status", () => ((fake.shardedJob("team-a", "rollup")?.status as { observedGeneration?: number } | undefined)?.observedGeneration === 2 ? true : undefined), 30_000);
    const after = fake.requests.filter((r) => r.method === "PATCH" && r.path.endsWith("/status")).at(-1);
    expect(after?.token).toBe("replica-two");

    // Following one namespace, the controllers asked only for what a Role in it grants: a
    // namespace-scoped install works.
    expect(fake.requests.every((r) => r.path.includes("/namespaces/team-a/"))).toBe(true);
    const granted = rbacGrants(await controllerRbacRules("namespaced"));
    expect(fake.requests.map(grantNeeded).filter((grant) => !granted.has(grant))).toEqual([]);
  }, 90_000);
});
