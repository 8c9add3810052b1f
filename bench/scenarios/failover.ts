import { join } from "node:path";
import { agentsReady, ControllerProcess, LoadProcess, manifest, until } from "../harness.js";
import type { LoadReport } from "../load-agents.js";
import { sleep } from "./fire-lag.js";

export interface FailoverOptions {
  rounds: number;
  agents: number;
  shards: number;
}

export interface FailoverResult {
  /** SIGKILL of an agent's process to its shard running on another agent, one per moved shard. */
  failoverMs: number[];
  leaseTtlMs: number;
}

const LEASE_TTL_MS = 2_000;

/**
 * Hard-crash failover: a daemon job's shards run on agents, each in its own process; each round
 * SIGKILLs one of them and times, per shard it held, from the kill until that shard's run starts
 * on a survivor. The killed agent is restarted (same id) and takes its share back before the
 * next round.
 */
export async function shardlineFailover(dir: string, options: FailoverOptions): Promise<FailoverResult> {
  const controller = await ControllerProcess.start(`sqlite:${join(dir, "failover.db")}`, ["--lease-ttl", String(LEASE_TTL_MS)]);
  const loads: LoadProcess[] = [];
  const starts: Extract<LoadReport, { type: "run-start" }>[] = [];
  const spawnAgent = (index: number): LoadProcess => {
    const load = new LoadProcess(controller.address, [`fo-${index}`]);
    load.onReport((report) => {
      if (report.type === "run-start") starts.push(report);
    });
    loads[index] = load;
    return load;
  };
  const now = (): number => performance.timeOrigin + performance.now();
  try {
    for (let i = 0; i < options.agents; i++) spawnAgent(i);
    await agentsReady(controller.admin, options.agents);
    await controller.admin.applyJob({ manifest: manifest("hold", { daemon: true, shards: options.shards, handler: "hold" }) });
    await until("every shard to run", () => (new Set(starts.map((s) => s.shard)).size >= options.shards ? true : undefined));
    const failoverMs: number[] = [];
    for (let round = 0; round < options.rounds; round++) {
      const victim = `fo-${round % options.agents}`;
      const index = round % options.agents;
      const held = (await controller.admin.listAssignments({ job: "hold" })).assignments.filter((a) => a.agent === victim).map((a) => a.shard);
      const killedAt = now();
      loads[index]!.kill("SIGKILL");
      await loads[index]!.exited;
      const moved = await until(
        `the shards of ${victim} to run elsewhere`,
        () => {
          const after = held.map((shard) => starts.find((s) => s.shard === shard && s.at > killedAt && s.agent !== victim));
          return after.every((s) => s !== undefined) ? after : undefined;
        },
        30_000,
        5,
      );
      failoverMs.push(...moved.map((s) => s!.at - killedAt));
      const restartedAt = now();
      spawnAgent(index);
      // Sticky hands a joining agent its share: wait until it runs what it was given.
      await until(`${victim} to take its share back`, async () => {
        const mine = (await controller.admin.listAssignments({ job: "hold" })).assignments.filter((a) => a.agent === victim && !a.revoking);
        const running = new Set(starts.filter((s) => s.agent === victim && s.at > restartedAt).map((s) => s.shard));
        return mine.length > 0 && mine.every((a) => running.has(a.shard)) ? true : undefined;
      });
      await sleep(200);
    }
    return { failoverMs, leaseTtlMs: LEASE_TTL_MS };
  } finally {
    await Promise.all(loads.map((load) => load.stop()));
    await controller.stop();
  }
}
