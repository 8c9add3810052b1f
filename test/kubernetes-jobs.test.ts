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
    await writeFile(join(dir, "export.yaml"), MANIFEST);
    await startController("state.db");
  });

  /** Starts a controller on a new store in `dir`, with `flags`, and applies the export job to it. */
  const startController = async (store: string, flags: string[] = []) => {
    controller = new ControllerProcess(await freePort(), join(dir, store), flags);
    await controller.start();
    env = { SHARDLINE_CONTROLLER: controller.address };
    expect((await shardline(["apply", "-f", join(dir, "export.yaml")], env)).code).toBe(0);
  };

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

  /**
   * Kills agent k8s-1 while both executions run as Kubernetes Jobs, and starts a new process under
   * its id once `beforeComingBack` resolves. The new process lists the Jobs its predecessor left
   * before it says Hello; once the controller has welcomed it (its Hello reported their runs), the
   * Jobs succeed. Both executions must end as attempt 1, from the Jobs made before the kill: none
   * deleted, none made again.
   */
  const killAndComeBack = async (beforeComingBack: () => Promise<void>) => {
    const first = agent("k8s-1");
    await waitFor("the agent to hold the shards", async () => ((await shardline(["get", "assignments", "-o", "json"], env)).stdout.includes("k8s-1") ? true : undefined));
    const instanceOf = async () => (JSON.parse((await shardline(["get", "agents", "-o", "json"], env)).stdout) as { id: string; state: string; instanceId: string | null }[]).find((a) => a.id === "k8s-1");
    const killed = (await instanceOf())!.instanceId;
    expect((await shardline(["trigger", "export"], env)).code).toBe(0);
    await waitFor("the executions to run", async () => ((await executions()).filter((e) => e.state === "running").length === 2 ? true : undefined));
    const made = fake.jobs(NS).map((job) => job.metadata.name);
    expect(made).toHaveLength(2);
    first.kill("SIGKILL");
    await first.exited;
    await beforeComingBack();
    agent("k8s-1");
    await waitFor("the new process to be welcomed", async () => {
      const view = await instanceOf();
      return view !== undefined && view.state === "ready" && view.instanceId !== null && view.instanceId !== killed ? true : undefined;
    });
    for (const job of fake.jobs(NS)) fake.succeed(NS, job.metadata.name, { log: "ok\n" });
    const done = await waitFor("both executions to succeed", async () => {
      const list = await executions();
      return list.filter((e) => e.state === "succeeded").length === 2 ? list : undefined;
    });
    expect(done.map((e) => [e.attempt, e.state])).toEqual([
      [1, "succeeded"],
      [1, "succeeded"],
    ]);
    expect(fake.jobs(NS).map((job) => job.metadata.name)).toEqual(made);
    expect(fake.requests.filter((r) => r.method === "DELETE")).toEqual([]);
  };

  it("an agent killed mid-execution takes its Jobs back when it comes back after its lease lapsed, and nothing runs twice", async () => {
    await killAndComeBack(async () => {
      // Unknown for their disconnect grace: only a report of a process of the same agent settles them.
      await waitFor("the executions to be unknown", async () => ((await executions()).filter((e) => e.state === "unknown").length === 2 ? true : undefined));
    });
  });

  it("an agent killed mid-execution takes its Jobs back when it comes back within its old lease, and nothing runs twice", async () => {
    // A lease the new process says Hello within however slowly it starts: it takes the id over
    // while the old process's shards stay fenced, and the runs it reports are its own at once.
    // On a new store: a controller restarted on the old one would give out no shard for a lease.
    await controller.process!.stop();
    await startController("long-lease.db", ["--lease-ttl", "10000"]);
    await killAndComeBack(async () => {});
    expect(controller.process!.output).toContain('"event":"agent.replaced"');
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
