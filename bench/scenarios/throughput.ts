import { join } from "node:path";
import { agentsReady, ControllerProcess, manifest, startLoad, until } from "../harness.js";

/** Triggers whose executions may be outstanding at once. */
const IN_FLIGHT = 5;

export interface ThroughputOptions {
  agents: number;
  processes: number;
  /** Executions in all: triggers of a job of `shardsPerTrigger` shards, sent back to back. */
  executions: number;
  shardsPerTrigger: number;
}

export interface ThroughputResult {
  executions: number;
  seconds: number;
  perSecond: number;
}

/**
 * Dispatch throughput: one job of many shards with no-op handlers, triggered again as soon as
 * fewer than IN_FLIGHT triggers' executions are outstanding; time from the first trigger until
 * the agents have run every execution.
 */
export async function shardlineThroughput(dir: string, options: ThroughputOptions): Promise<ThroughputResult> {
  const controller = await ControllerProcess.start(join(dir, `throughput-${options.agents}.db`));
  const loads = await startLoad(controller.address, "tp", options.agents, options.processes);
  try {
    await agentsReady(controller.admin, options.agents);
    await controller.admin.applyJob({
      manifest: manifest("throughput", { shards: options.shardsPerTrigger, handler: "noop", overlap: "allow" }),
    });
    await until("every shard to be assigned", async () =>
      (await controller.admin.listAssignments({ job: "throughput" })).assignments.length >= options.shardsPerTrigger ? true : undefined,
    );
    for (const load of loads) load.send({ type: "reset" });
    const triggers = Math.ceil(options.executions / options.shardsPerTrigger);
    const executions = triggers * options.shardsPerTrigger;
    const started = performance.timeOrigin + performance.now();
    const finished = async (): Promise<number> =>
      (await Promise.all(loads.map((load) => load.ask({ type: "count" }, "count")))).reduce((sum, r) => sum + r.finished, 0);
    // A closed loop: at most IN_FLIGHT triggers' executions outstanding, as a steady producer
    // would keep it, rather than tens of thousands queued at once.
    for (let i = 0; i < triggers; i++) {
      if (i >= IN_FLIGHT) {
        const needed = (i - IN_FLIGHT + 1) * options.shardsPerTrigger;
        await until(`${needed} executions to finish`, async () => ((await finished()) >= needed ? true : undefined), 300_000, 2);
      }
      await controller.admin.triggerJob({ name: "throughput" });
    }
    const counts = await until(
      `${executions} executions to finish`,
      async () => {
        const replies = await Promise.all(loads.map((load) => load.ask({ type: "count" }, "count")));
        return replies.reduce((sum, r) => sum + r.finished, 0) >= executions ? replies : undefined;
      },
      300_000,
      10,
    );
    const seconds = (Math.max(...counts.map((r) => r.lastFinishedAt)) - started) / 1000;
    return { executions, seconds, perSecond: executions / seconds };
  } finally {
    await Promise.all(loads.map((load) => load.stop()));
    await controller.stop();
  }
}
