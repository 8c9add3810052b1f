import { join } from "node:path";
import { agentsReady, ControllerProcess, manifest, rssBytes, startLoad, until } from "../harness.js";
import { sleep } from "./fire-lag.js";

export interface ScaleOptions {
  /** Heartbeat interval and lease: a fleet this size heartbeats less often than the default. */
  heartbeatIntervalMs: number;
  leaseTtlMs: number;
  agents: number;
  processes: number;
  jobs: number;
  shardsPerJob: number;
}

export interface ScaleResult {
  /** From starting the load processes until the controller lists every agent. */
  connectMs: number;
  /** From the first apply until the agents hold every shard. */
  assignMs: number;
  /** Controller RSS with every agent connected and every shard assigned, settled. */
  rssBytes: number;
  /** From draining one agent until its shards are held by others. */
  reassignMs: number;
  /** From one agent's crash (its stream cut without a goodbye) until its shards are held by others: its lease, then placement. */
  crashReassignMs: number;
}

/**
 * Scale: many agent streams from a few load processes, many shards; the controller's memory,
 * and how long placing and re-placing shards takes.
 */
export async function shardlineScale(dir: string, options: ScaleOptions): Promise<ScaleResult> {
  const controller = await ControllerProcess.start(`sqlite:${join(dir, "scale.db")}`, [
    "--heartbeat-interval",
    String(options.heartbeatIntervalMs),
    "--lease-ttl",
    String(options.leaseTtlMs),
  ]);
  const started = Date.now();
  const loads = await startLoad(controller.address, "sc", options.agents, options.processes);
  const total = options.jobs * options.shardsPerJob;
  const holdings = async () => Promise.all(loads.map((load) => load.ask({ type: "holdings" }, "holdings")));
  try {
    await agentsReady(controller.admin, options.agents, 300_000);
    const connectMs = Date.now() - started;
    const applyAt = Date.now();
    for (let j = 0; j < options.jobs; j++) {
      await controller.admin.applyJob({ manifest: manifest(`scale-${j}`, { shards: options.shardsPerJob, handler: "noop" }) });
    }
    const placed = await until("every shard to be held", async () => {
      const replies = await holdings();
      return replies.reduce((sum, r) => sum + r.total, 0) >= total ? replies : undefined;
    }, 600_000, 100);
    const assignMs = Math.max(...placed.map((r) => r.lastChangeAt)) - applyAt;
    await sleep(2_000);
    const rss = rssBytes(controller.pid);
    const victim = "sc-0";
    const drainAt = performance.timeOrigin + performance.now();
    await controller.admin.drainAgent({ id: victim });
    const moved = await until("the drained agent's shards to be held by others", async () => {
      const replies = await holdings();
      const sum = replies.reduce((s, r) => s + r.total, 0);
      const left = replies.reduce((s, r) => s + (r.perAgent[victim] ?? 0), 0);
      return sum >= total && left === 0 ? replies : undefined;
    }, 600_000, 50);
    const reassignMs = Math.max(...moved.map((r) => r.lastChangeAt)) - drainAt;

    const crashed = "sc-1";
    const crashAt = performance.timeOrigin + performance.now();
    const found = await Promise.all(loads.map((load) => load.ask({ type: "crash", id: crashed }, "crashed")));
    if (!found.some((r) => r.found)) throw new Error(`no load process runs agent ${crashed}`);
    // The crashed agent no longer counts in any process's holdings: every shard held again means its shards moved.
    const recovered = await until("the crashed agent's shards to be held by others", async () => {
      const replies = await holdings();
      return replies.reduce((s, r) => s + r.total, 0) >= total ? replies : undefined;
    }, 600_000, 50);
    const crashReassignMs = Math.max(...recovered.map((r) => r.lastChangeAt)) - crashAt;
    return { connectMs, assignMs, rssBytes: rss, reassignMs, crashReassignMs };
  } finally {
    await Promise.all(loads.map((load) => load.stop()));
    await controller.stop();
  }
}
