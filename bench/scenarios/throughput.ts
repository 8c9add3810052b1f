import { join } from "node:path";
import { agentsReady, ControllerProcess, manifest, startLoad, until } from "../harness.js";

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
 * Dispatch throughput: one job of many shards with no-op handlers, triggered back to back; time
 * from the first trigger until the agents have run every execution.
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
    for (let i = 0; i < triggers; i++) await controller.admin.triggerJob({ name: "throughput" });
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
