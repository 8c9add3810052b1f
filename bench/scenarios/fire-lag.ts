import { join } from "node:path";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { agentsReady, ControllerProcess, manifest, rssBytes, startLoad, until } from "../harness.js";

export interface FireLagOptions {
  /** Shard fires per second: jobs of up to 100 shards, each firing every second. */
  firesPerSecond: number;
  /** Fires are all of `firesPerSecond / shardsPerJob` jobs; 100 unless fewer fires are asked for. */
  shardsPerJob?: number;
  agents: number;
  processes: number;
  seconds: number;
  warmupSeconds: number;
  /**
   * For a soak: collect lags and sample memory this often, rather than once at the end, so the
   * load processes do not hold every lag of a long run.
   */
  sampleEverySeconds?: number;
}

/** Resident set sizes at one instant of a run. */
export interface RssSample {
  /** Seconds since measuring began. */
  atSeconds: number;
  controllerBytes: number;
  /** Every load process together. */
  agentsBytes: number;
}

export interface FireLagResult {
  /** Handler start minus scheduled instant, one per execution measured. */
  lagsMs: number[];
  /** Executions recorded as misfired while measuring (fires the controller could not start). */
  misfired: number;
  /** Memory when measuring began, at every sample, and at the end. */
  rss: RssSample[];
}

/**
 * Fire lag: jobs scheduled every second, with no-op handlers; each agent records the instant its
 * handler starts minus the fire instant. Fresh controller and store.
 */
export async function shardlineFireLag(dir: string, options: FireLagOptions): Promise<FireLagResult> {
  const controller = await ControllerProcess.start(`sqlite:${join(dir, `fire-lag-${options.firesPerSecond}.db`)}`);
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
    const rss: RssSample[] = [];
    const sampleRss = (): void => {
      const agentsBytes = loads.reduce((sum, load) => sum + rssBytes(load.pid), 0);
      rss.push({ atSeconds: (Date.now() - since) / 1000, controllerBytes: rssBytes(controller.pid), agentsBytes });
    };
    sampleRss();
    const lagsMs: number[] = [];
    let misfired = 0;
    const every = Math.min(options.seconds, options.sampleEverySeconds ?? options.seconds) * 1000;
    for (let from = since; from < since + options.seconds * 1000; ) {
      const to = Math.min(from + every, since + options.seconds * 1000);
      await sleep(to - Date.now());
      for (const reply of await Promise.all(loads.map((load) => load.ask({ type: "lags", reset: true }, "lags")))) {
        for (const lag of reply.lagsMs) lagsMs.push(lag);
      }
      // Counted per period: retention prunes old history during a long soak.
      const query = { state: ExecutionState.MISFIRED, sinceUnixMs: BigInt(from), untilUnixMs: BigInt(to), limit: 10_000 };
      misfired += (await controller.admin.listExecutions(query)).executions.length;
      sampleRss();
      from = to;
    }
    return { lagsMs, misfired, rss };
  } finally {
    await Promise.all(loads.map((load) => load.stop()));
    await controller.stop();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
