import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ShardlineError } from "../../../shared/errors.js";
import { FakeKubeApiServer } from "../../../test/harness/fake-kube-api-server.js";
import { connectKubernetes, type KubernetesAccess } from "./kube-config.js";
import { readNodeLabels } from "./node-labels.js";

let fake: FakeKubeApiServer;
let access: KubernetesAccess;
let dir: string;

beforeEach(async () => {
  fake = await FakeKubeApiServer.start();
  dir = await mkdtemp(join(tmpdir(), "shardline-node-"));
  await fake.kubeconfig("shardline", join(dir, "kubeconfig"));
  access = await connectKubernetes({ kubeconfig: join(dir, "kubeconfig") });
});

afterEach(async () => {
  access.client.close();
  await fake.stop();
  await rm(dir, { recursive: true, force: true });
});

const ZONE = { from: "topology.kubernetes.io/zone", to: "zone" };
const read = (node: string, copies = [ZONE]) =>
  readNodeLabels({ client: access.client, node, copies, logger: pino({ level: "silent" }), retry: { initialMs: 20, maxMs: 100 } });

describe("readNodeLabels", () => {
  it("copies the Node's labels it is asked for, under the agent's names", async () => {
    fake.setNode("node-7", { "topology.kubernetes.io/zone": "eu-1a", "topology.kubernetes.io/region": "eu-1", "kubernetes.io/os": "linux" });

    const labels = await read("node-7", [ZONE, { from: "topology.kubernetes.io/region", to: "topology.kubernetes.io/region" }]);

    expect(labels).toEqual({ zone: "eu-1a", "topology.kubernetes.io/region": "eu-1" });
    expect(fake.requests.map((r) => `${r.method} ${r.path}`)).toEqual(["GET /api/v1/nodes/node-7"]);
  });

  it("leaves out a label the Node does not carry", async () => {
    fake.setNode("node-7", { "kubernetes.io/os": "linux" });
    expect(await read("node-7")).toEqual({});
  });

  it("fails naming --node when the Node does not exist", async () => {
    const error = await read("node-9").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as ShardlineError).message).toMatch(/^--node: Kubernetes has no Node node-9/);
  });

  it("fails naming the missing permission when RBAC forbids reading nodes", async () => {
    fake.setNode("node-7", { "topology.kubernetes.io/zone": "eu-1a" });
    fake.forbid("nodes");
    const error = await read("node-7").catch((e: unknown) => e);
    expect((error as ShardlineError).message).toContain("needs get on nodes");
  });

  it("waits for an API server that is away and reads the Node once it is back", async () => {
    fake.setNode("node-7", { "topology.kubernetes.io/zone": "eu-1a" });
    await fake.stop();
    let retrying!: () => void;
    const retried = new Promise<void>((resolve) => (retrying = resolve));
    const logger = pino({ level: "warn" }, { write: (line: string) => line.includes("retrying") && retrying() });
    const reading = readNodeLabels({ client: access.client, node: "node-7", copies: [ZONE], logger, retry: { initialMs: 50, maxMs: 100 } });

    await retried;
    await fake.restart();
    expect(await reading).toEqual({ zone: "eu-1a" });
  });

  it("gives up after its attempts when the API server stays away", async () => {
    await fake.stop();
    const error = await readNodeLabels({ client: access.client, node: "node-7", copies: [ZONE], logger: pino({ level: "silent" }), attempts: 3, retry: { initialMs: 10, maxMs: 20 } }).catch((e: unknown) => e);
    expect((error as ShardlineError).code).toBe("unavailable");
    expect((error as ShardlineError).message).toContain("after 3 attempts");
  });
});
