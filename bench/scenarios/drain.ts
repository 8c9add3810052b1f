import { join } from "node:path";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { agentsReady, ControllerProcess, manifest, startLoad, until } from "../harness.js";
import { sleep } from "./fire-lag.js";

export interface DrainResult {
  /** Shard fires due while the drain happened. */
  expected: number;
  /** Of those, how many did not succeed exactly once (missed, misfired, failed or doubled). */
  missed: number;
}

/**
 * Graceful drain: a job fires every second on agents each in its own process; one agent drains
 * (as on SIGTERM) in the middle, and every shard of every fire around it is accounted for.
 */
export async function shardlineDrainMisses(dir: string, options: { agents: number; shards: number; seconds: number }): Promise<DrainResult> {
  const controller = await ControllerProcess.start(`sqlite:${join(dir, "drain.db")}`);
  const loads = await startLoad(controller.address, "dr", options.agents, options.agents);
  try {
    await agentsReady(controller.admin, options.agents);
    await controller.admin.applyJob({ manifest: manifest("tick", { schedule: "* * * * * *", shards: options.shards, handler: "noop" }) });
    await until("every shard to be assigned", async () =>
      (await controller.admin.listAssignments({ job: "tick" })).assignments.length >= options.shards ? true : undefined,
    );
    await sleep(1_500);
    const from = Math.ceil(Date.now() / 1000) * 1000;
    await sleep(options.seconds * 500);
    await loads[0]!.ask({ type: "drain" }, "drained");
    await sleep(options.seconds * 500);
    const to = Math.floor(Date.now() / 1000) * 1000 - 1000;
    await sleep(1_000);
    const { executions } = await controller.admin.listExecutions({ job: "tick", sinceUnixMs: BigInt(from), untilUnixMs: BigInt(to + 1), limit: 10_000 });
    const succeeded = new Map<string, number>();
    for (const e of executions) {
      if (e.state !== ExecutionState.SUCCEEDED) continue;
      const key = `${e.fireTimeUnixMs}/${e.shard}`;
      succeeded.set(key, (succeeded.get(key) ?? 0) + 1);
    }
    const expected = ((to - from) / 1000 + 1) * options.shards;
    let exactlyOnce = 0;
    for (const count of succeeded.values()) if (count === 1) exactlyOnce++;
    return { expected, missed: expected - exactlyOnce };
  } finally {
    await Promise.all(loads.map((load) => load.stop()));
    await controller.stop();
  }
}
