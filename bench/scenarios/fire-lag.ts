import { join } from "node:path";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { agentsReady, ControllerProcess, manifest, startLoad, until } from "../harness.js";

export interface FireLagOptions {
  /** Shard fires per second: jobs of up to 100 shards, each firing every second. */
  firesPerSecond: number;
  /** Fires are all of `firesPerSecond / shardsPerJob` jobs; 100 unless fewer fires are asked for. */
  shardsPerJob?: number;
  agents: number;
  processes: number;
  seconds: number;
  warmupSeconds: number;
}

export interface FireLagResult {
  /** Handler start minus scheduled instant, one per execution measured. */
  lagsMs: number[];
  /** Executions recorded as misfired while measuring (fires the controller could not start). */
  misfired: number;
}

/**
 * Fire lag: jobs scheduled every second, with no-op handlers; each agent records the instant its
 * handler starts minus the fire instant. Fresh controller and store.
 */
export async function shardlineFireLag(dir: string, options: FireLagOptions): Promise<FireLagResult> {
  const controller = await ControllerProcess.start(join(dir, `fire-lag-${options.firesPerSecond}.db`));
  const loads = await startLoad(controller.address, "lag", options.agents, options.processes);
  try {
    await agentsReady(controller.admin, options.agents);
    const shardsPerJob = Math.min(options.shardsPerJob ?? 100, options.firesPerSecond);
    const jobs = Math.ceil(options.firesPerSecond / shardsPerJob);
    for (let j = 0; j < jobs; j++) {
      await controller.admin.applyJob({
        manifest: manifest(`lag-${j}`, { schedule: "* * * * * *", shards: shardsPerJob, handler: "noop" }),
      });
    }
    const total = jobs * shardsPerJob;
    await until("every shard to be assigned", async () => ((await controller.admin.listAssignments({})).assignments.length >= total ? true : undefined));
    await sleep(options.warmupSeconds * 1000);
    for (const load of loads) load.send({ type: "reset" });
    const since = Date.now();
    await sleep(options.seconds * 1000);
    const lagsMs = (await Promise.all(loads.map((load) => load.ask({ type: "lags" }, "lags")))).flatMap((r) => r.lagsMs);
    const misfired = (
      await controller.admin.listExecutions({ state: ExecutionState.MISFIRED, sinceUnixMs: BigInt(since), limit: 10_000 })
    ).executions.length;
    return { lagsMs, misfired };
  } finally {
    await Promise.all(loads.map((load) => load.stop()));
    await controller.stop();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
