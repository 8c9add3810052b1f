import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeKubeApiServer } from "./harness/fake-kube-api-server.js";
import { CliProcess, ControllerProcess, freePort, requireBuiltCli, shardline, waitFor } from "./harness/processes.js";

const NS = "batch-work";

const MANIFEST = `apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: export}
spec:
  shards: 2
  kubernetes:
    template:
      spec:
        containers:
          - {name: main, image: "busybox:1.36", command: [sh, -c, "echo exported $SHARDLINE_SHARD"]}
`;

describe("jobs with spec.kubernetes, through the shardline binary and a fake API server", () => {
  let dir: string;
  let fake: FakeKubeApiServer;
  let controller: ControllerProcess;
  const agents: CliProcess[] = [];
  let env: Record<string, string>;
  const executions = async () => JSON.parse((await shardline(["get", "executions", "--job", "export", "-o", "json"], env)).stdout) as Record<string, unknown>[];
  const agent = (id: string) => {
    const process = new CliProcess(id, ["agent", "--controller", controller.address, "--id", id, "--kubernetes"], { KUBECONFIG: join(dir, "kubeconfig") });
    agents.push(process);
    return process;
  };

  beforeEach(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-k8s-"));
    fake = await FakeKubeApiServer.start();
    await fake.kubeconfig(NS, join(dir, "kubeconfig"));
    controller = new ControllerProcess(await freePort(), join(dir, "state.db"));
    await controller.start();
    env = { SHARDLINE_CONTROLLER: controller.address };
    await writeFile(join(dir, "export.yaml"), MANIFEST);
    expect((await shardline(["apply", "-f", join(dir, "export.yaml")], env)).code).toBe(0);
  });

  afterEach(async () => {
    for (const process of agents.splice(0)) await process.stop();
    await controller?.process?.stop();
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("runs each shard as a Kubernetes Job and records the pod's log as the result", async () => {
    agent("k8s-1");
    await waitFor("the agent to hold the shards", async () => ((await shardline(["get", "assignments", "-o", "json"], env)).stdout.includes("k8s-1") ? true : undefined));
    expect((await shardline(["trigger", "export"], env)).code).toBe(0);
    const jobs = await waitFor("two Kubernetes Jobs", async () => (fake.jobs(NS).length === 2 ? fake.jobs(NS) : undefined));
    for (const job of jobs) fake.succeed(NS, job.metadata.name, { log: `exported ${job.metadata.labels!["shardline.dev/shard"]}\n` });
    const done = await waitFor("both executions to succeed", async () => {
      const list = await executions();
      return list.length === 2 && list.every((e) => e.state === "succeeded") ? list : undefined;
    });
    expect(done.map((e) => e.result).sort()).toEqual(["exported 0", "exported 1"]);
  });

  it("fails an execution whose pod cannot pull its image once spec.kubernetes.startTimeoutSeconds is over, with the reason", async () => {
    await writeFile(join(dir, "stuck.yaml"), MANIFEST.replace("name: export", "name: stuck").replace("shards: 2", "shards: 1").replace("  kubernetes:\n", "  kubernetes:\n    startTimeoutSeconds: 1\n"));
    expect((await shardline(["apply", "-f", join(dir, "stuck.yaml")], env)).code).toBe(0);
    agent("k8s-1");
    await waitFor("the agent to hold the shard", async () => ((await shardline(["get", "assignments", "-o", "json"], env)).stdout.includes("stuck") ? true : undefined));
    expect((await shardline(["trigger", "stuck"], env)).code).toBe(0);
    const [job] = await waitFor("the Kubernetes Job", async () => (fake.jobs(NS).length === 1 ? fake.jobs(NS) : undefined));
    fake.startPod(NS, job!.metadata.name, { waiting: { reason: "ImagePullBackOff", message: 'Back-off pulling image "busybox:1.36"' } });

    const [failed] = await waitFor("the execution to fail", async () => {
      const list = JSON.parse((await shardline(["get", "executions", "--job", "stuck", "-o", "json"], env)).stdout) as Record<string, unknown>[];
      return list.length === 1 && list[0]!.state === "failed" ? list : undefined;
    });
    expect(failed!.error).toContain("did not start within 1 s (spec.kubernetes.startTimeoutSeconds): ImagePullBackOff");
    expect(fake.jobs(NS)).toEqual([]);
  });

  it("an agent killed mid-execution takes its Jobs back when it comes back, and nothing runs twice", async () => {
    const first = agent("k8s-1");
    await waitFor("the agent to hold the shards", async () => ((await shardline(["get", "assignments", "-o", "json"], env)).stdout.includes("k8s-1") ? true : undefined));
    expect((await shardline(["trigger", "export"], env)).code).toBe(0);
    await waitFor("the executions to run", async () => ((await executions()).filter((e) => e.state === "running").length === 2 ? true : undefined));
    first.kill("SIGKILL");
    await first.exited;
    agent("k8s-1");
    await waitFor("the Jobs to be watched again", async () => (fake.watchCount > 0 ? true : undefined));
    for (const job of fake.jobs(NS)) fake.succeed(NS, job.metadata.name, { log: "ok\n" });
    const done = await waitFor("both executions to succeed", async () => {
      const list = await executions();
      return list.filter((e) => e.state === "succeeded").length === 2 ? list : undefined;
    });
    expect(done.map((e) => [e.attempt, e.state])).toEqual([
      [1, "succeeded"],
      [1, "succeeded"],
    ]);
    expect(fake.jobs(NS)).toHaveLength(2);
  });

  it("an agent back too late, after its shards moved on and its executions ran again elsewhere, deletes its old Jobs", async () => {
    const first = agent("k8s-1");
    await waitFor("the agent to hold the shards", async () => ((await shardline(["get", "assignments", "-o", "json"], env)).stdout.includes("k8s-1") ? true : undefined));
    expect((await shardline(["trigger", "export"], env)).code).toBe(0);
    await waitFor("the executions to run", async () => ((await executions()).filter((e) => e.state === "running").length === 2 ? true : undefined));
    const before = fake.jobs(NS).map((job) => job.metadata.name);
    first.kill("SIGKILL");
    await first.exited;
    agent("k8s-2");
    // Recorded lost once k8s-1's lease is over, and run again (attempt 2) on k8s-2.
    await waitFor("the re-runs' Jobs", async () => (fake.jobs(NS).length === 4 ? true : undefined));
    agent("k8s-1");
    await waitFor("the old Jobs to be deleted", async () => (fake.jobs(NS).every((job) => !before.includes(job.metadata.name)) ? true : undefined));
    for (const job of fake.jobs(NS)) fake.succeed(NS, job.metadata.name, { log: "ok\n" });
    const done = await waitFor("the re-runs to succeed", async () => {
      const list = await executions();
      return list.filter((e) => e.state === "succeeded").length === 2 ? list : undefined;
    });
    expect(done.filter((e) => e.state === "succeeded").map((e) => e.attempt)).toEqual([2, 2]);
  });

  it("an agent back after its executions were recorded lost stops its old Jobs, and only the re-runs run", async () => {
    const first = agent("k8s-1");
    await waitFor("the agent to hold the shards", async () => ((await shardline(["get", "assignments", "-o", "json"], env)).stdout.includes("k8s-1") ? true : undefined));
    expect((await shardline(["trigger", "export"], env)).code).toBe(0);
    await waitFor("the executions to run", async () => ((await executions()).filter((e) => e.state === "running").length === 2 ? true : undefined));
    const before = fake.jobs(NS).map((job) => job.metadata.name);
    first.kill("SIGKILL");
    await first.exited;
    await waitFor("the executions to be recorded lost", async () => ((await executions()).filter((e) => e.state === "lost").length === 2 ? true : undefined));
    agent("k8s-1");
    await waitFor("the re-runs' Jobs", async () => (fake.jobs(NS).filter((job) => !before.includes(job.metadata.name)).length === 2 ? true : undefined));
    await waitFor("the old Jobs to be deleted", async () => (fake.jobs(NS).every((job) => !before.includes(job.metadata.name)) ? true : undefined), 10_000);
  });
});

describe("agents that copy their Node's zone (--label-from-node), against a fake API server", () => {
  let dir: string;
  let fake: FakeKubeApiServer;
  let controller: ControllerProcess;
  const agents: CliProcess[] = [];
  let env: Record<string, string>;
  const agent = (id: string, node: string) => {
    const args = ["agent", "--controller", controller.address, "--id", id, "--kubernetes", "--node", node, "--label-from-node", "topology.kubernetes.io/zone=zone"];
    const process = new CliProcess(id, args, { KUBECONFIG: join(dir, "kubeconfig") });
    agents.push(process);
    return process;
  };

  beforeEach(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-zones-"));
    fake = await FakeKubeApiServer.start();
    await fake.kubeconfig(NS, join(dir, "kubeconfig"));
    fake.setNode("node-a", { "topology.kubernetes.io/zone": "eu-1a" });
    fake.setNode("node-b", { "topology.kubernetes.io/zone": "eu-1b" });
    fake.setNode("node-c", {});
    controller = new ControllerProcess(await freePort(), join(dir, "state.db"));
    await controller.start();
    env = { SHARDLINE_CONTROLLER: controller.address };
  });

  afterEach(async () => {
    for (const process of agents.splice(0)) await process.stop();
    await controller?.process?.stop();
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("spreads a job's shards evenly over the zones read from the Nodes, and none to an agent whose Node has no zone", async () => {
    agent("a1", "node-a");
    agent("a2", "node-a");
    agent("b1", "node-b");
    agent("c1", "node-c");
    await writeFile(join(dir, "zoned.yaml"), MANIFEST.replace("name: export", "name: zoned").replace("shards: 2", "shards: 4\n  placement: {spreadBy: [zone]}"));
    expect((await shardline(["apply", "-f", join(dir, "zoned.yaml")], env)).code).toBe(0);

    const owners = await waitFor("the four agents, and the zoned job's four shards placed", async () => {
      const listed = JSON.parse((await shardline(["get", "agents", "-o", "json"], env)).stdout) as { id: string }[];
      if (listed.length < 4) return undefined;
      const assignments = JSON.parse((await shardline(["get", "assignments", "-o", "json"], env)).stdout) as { job: string; agent: string }[];
      const zoned = assignments.filter((a) => a.job === "zoned");
      return zoned.length === 4 ? zoned.map((a) => a.agent) : undefined;
    });
    const count = (id: string) => owners.filter((owner) => owner === id).length;
    expect([count("a1") + count("a2"), count("b1"), count("c1")]).toEqual([2, 2, 0]);
    const listed = JSON.parse((await shardline(["get", "agents", "-o", "json"], env)).stdout) as { id: string; labels: Record<string, string> }[];
    expect(Object.fromEntries(listed.map((a) => [a.id, a.labels.zone]))).toEqual({ a1: "eu-1a", a2: "eu-1a", b1: "eu-1b", c1: undefined });
  });

  it("refuses to start on a Node Kubernetes does not know, saying which flag to fix", async () => {
    const wrong = agent("x1", "node-x");
    expect((await wrong.exited).code).not.toBe(0);
    expect(wrong.output).toContain("--node: Kubernetes has no Node node-x");
  });
});
