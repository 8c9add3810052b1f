import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderKustomization, type Manifest } from "./harness/kustomize.js";
import { shardline } from "./harness/processes.js";
import { ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";

const EXAMPLE = join(dirname(fileURLToPath(import.meta.url)), "..", "examples", "kubernetes-handlers");

/** The orders the handler's service holds, by region. */
const ORDERS: Record<string, { id: string; amount: number }[]> = {
  eu: [
    { id: "eu-1", amount: 120 },
    { id: "eu-2", amount: 80 },
  ],
  us: [{ id: "us-1", amount: 45 }],
  ap: [],
};

type Container = { args: string[]; env?: { name: string; value?: string }[]; volumeMounts?: { name: string; mountPath: string }[] };
type Volume = { name: string; configMap?: { name: string; defaultMode?: number } };
type DaemonSet = Manifest & { spec: { template: { spec: { containers: Container[]; volumes: Volume[] } } } };
type Execution = { shard: number; state: string; result: string; fireTime: string; error: string };

/**
 * The agent of examples/kubernetes-handlers as its DaemonSet runs it, on this machine: the flags
 * its patch adds, the module at its checkout path (test/deploy-manifests.test.ts checks that the
 * Dockerfile puts that file where --handlers points), and its ConfigMap written out as the kubelet
 * mounts one, a file per key with the volume's mode.
 */
describe("examples/kubernetes-handlers in a real agent", () => {
  let env: ShardlineTestEnv<SqliteController>;
  let orders: Server;
  const asked: URLSearchParams[] = [];
  let cli: Record<string, string>;

  beforeAll(async () => {
    const objects = await renderKustomization(EXAMPLE);
    const daemonSet = objects.find((o): o is DaemonSet => o.kind === "DaemonSet")!;
    const pod = daemonSet.spec.template.spec;
    const container = pod.containers[0]!;
    const flag = (name: string) => container.args.find((arg) => arg.startsWith(`${name}=`))!.slice(name.length + 1);

    orders = createServer((request, response) => {
      const query = new URL(request.url!, "http://orders").searchParams;
      asked.push(query);
      response.setHeader("content-type", "application/json");
      response.end(JSON.stringify(ORDERS[query.get("region")!] ?? []));
    });
    await new Promise<void>((resolve) => orders.listen(0, "127.0.0.1", resolve));

    env = await ShardlineTestEnv.single({ name: "kubernetes-handlers", handlers: join(EXAMPLE, basename(flag("--handlers"))) });
    await env.settingUp(async () => {
      // The script volume, mounted in the world's directory instead of at its mountPath.
      const mount = container.volumeMounts!.find((m) => pod.volumes.find((v) => v.name === m.name)?.configMap?.name.startsWith("shardline-agent-scripts"))!;
      const volume = pod.volumes.find((v) => v.name === mount.name)!.configMap!;
      const mounted = join(env.dir, "scripts");
      await mkdir(mounted);
      const configMap = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === volume.name)! as Manifest & { data: Record<string, string> };
      for (const [key, text] of Object.entries(configMap.data)) {
        await writeFile(join(mounted, key), text);
        await chmod(join(mounted, key), volume.defaultMode ?? 0o644);
      }
      const local = (path: string) => path.replace(`${mount.mountPath}/`, `${mounted}/`);
      const jobs = (await readFile(join(EXAMPLE, "jobs.yaml"), "utf8")).replaceAll(`${mount.mountPath}/`, `${mounted}/`);
      await writeFile(join(env.dir, "jobs.yaml"), jobs);

      const { port } = orders.address() as AddressInfo;
      expect(container.env?.map((v) => v.name)).toContain("ORDERS_API_URL");
      env.startAgent("local.node-1", { args: [`--allow-script=${local(flag("--allow-script"))}`], env: { ORDERS_API_URL: `http://127.0.0.1:${port}` } });
      await env.agentsReady(1, "the example's agent");
      cli = { SHARDLINE_CONTROLLER: env.controller.addresses };
      const applied = await shardline(["apply", "-f", join(env.dir, "jobs.yaml")], cli);
      expect(applied.code, applied.stderr).toBe(0);
    });
  }, 120_000);

  afterAll(async () => {
    await env?.close();
    await new Promise((resolve) => orders?.close(resolve));
  });

  /** `shardline run JOB --wait -o json`: the final executions, by shard; fails the test naming the output unless all succeeded. */
  const run = async (job: string): Promise<Execution[]> => {
    const result = await shardline(["run", job, "--wait", "--timeout", "60", "-o", "json"], cli);
    if (result.code !== 0) env.failed = true;
    expect(result.code, `${result.stdout}${result.stderr}`).toBe(0);
    return (JSON.parse(result.stdout) as Execution[]).sort((a, b) => a.shard - b.shard);
  };

  it("runs orders-rollup in the module --handlers loads: each shard sums its region's orders over the window ending at its fire", async () => {
    const executions = await run("orders-rollup");
    expect(executions.map((e) => [e.shard, e.state])).toEqual([
      [0, "succeeded"],
      [1, "succeeded"],
      [2, "succeeded"],
    ]);
    const results = executions.map((e) => ({ fire: e.fireTime, result: JSON.parse(e.result) as { region: string; from: string; to: string; orders: number; total: number } }));
    expect(results.map((r) => [r.result.region, r.result.orders, r.result.total])).toEqual([
      ["eu", 2, 200],
      ["us", 1, 45],
      ["ap", 0, 0],
    ]);
    for (const { fire, result } of results) {
      // spec.parameter window=15m: the quarter of an hour before the fire instant.
      expect(Date.parse(result.to)).toBe(Date.parse(fire));
      expect(Date.parse(result.to) - Date.parse(result.from)).toBe(15 * 60_000);
    }
    expect(asked.map((q) => q.get("region")).sort()).toEqual(["ap", "eu", "us"]);
  });

  it("runs orders-export's script from the ConfigMap, allowed by the exact path --allow-script names", async () => {
    const executions = await run("orders-export");
    expect(executions.map((e) => [e.state, e.result.trim()])).toEqual([
      ["succeeded", "exported 1 row(s) of region eu as csv (shard 0 of 3, revision 1)"],
      ["succeeded", "exported 1 row(s) of region us as csv (shard 1 of 3, revision 1)"],
      ["succeeded", "exported 1 row(s) of region ap as csv (shard 2 of 3, revision 1)"],
    ]);
  });
});
