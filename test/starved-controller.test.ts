import { afterEach, describe, expect, it } from "vitest";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { waitFor } from "./harness/processes.js";
import { RECORDING_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";
import type { TrackedProcess } from "./harness/tracked-process.js";

/**
 * Issue 23, item 5: past its capacity a controller makes fewer fires instead of falling further
 * behind. Here its CPU is starved on purpose (SIGSTOP and SIGCONT in a duty cycle, as a CPU
 * limit's throttling does, and once a pause of several schedule periods), and what is checked is
 * behaviour, never a timing: the instants it could not make in time are recorded as misfired
 * with the reason, the misfire policy runs the latest of them, no run is lost, no agent fences,
 * and the job runs on every shard once the CPU is back.
 */

const SHARDS = 6;
const JOB = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: tick}
spec:
  schedule: "* * * * * *"
  shards: ${SHARDS}
  handler: work
`;
/** Longer than the pause, so that the agents' leases outlast it: the pause starves, it does not partition. */
const LEASE_TTL_MS = 10_000;
const PAUSE_MS = 3_500;
const BEHIND = "missed while the controller was behind its schedule";

/** Runs the controller `runMs` of every 100 ms for `forMs`: a starved CPU. */
async function dutyCycle(controller: TrackedProcess, runMs: number, forMs: number): Promise<void> {
  const until = Date.now() + forMs;
  while (Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, runMs));
    controller.freeze();
    await new Promise((resolve) => setTimeout(resolve, 100 - runMs));
    controller.thaw();
  }
}

describe("a controller whose CPU is starved", () => {
  let env: ShardlineTestEnv<SqliteController> | undefined;
  afterEach(async (context) => {
    if (env !== undefined && context.task.result?.state === "fail") env.failed = true;
    await env?.close();
    env = undefined;
  });

  it("records the fires it could not make in time as misfired, runs the latest, and loses nothing", async () => {
    const world = await ShardlineTestEnv.single({
      name: "overload",
      handlers: RECORDING_HANDLERS,
      controllerArgs: ["--lease-ttl", String(LEASE_TTL_MS)],
      agentEnv: { SHARDLINE_TEST_WORK_MS: "20" },
    });
    env = world;
    for (const id of ["agent-a", "agent-b"]) world.startAgent(id);
    const { admin } = world;
    await admin.applyJob({ manifest: JOB });
    await waitFor("a fire to succeed on every shard", async () => {
      const ran = (await admin.listExecutions({ job: "tick", state: ExecutionState.SUCCEEDED, limit: 1000 })).executions;
      return new Set(ran.map((e) => e.shard)).size === SHARDS ? true : undefined;
    }, 60_000);

    const controller = world.controller.process!;
    await dutyCycle(controller, 20, 3_000);
    const pausedAt = Date.now();
    controller.freeze();
    world.note(`SIGSTOPped the controller for ${PAUSE_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
    controller.thaw();
    const resumedAt = Date.now();
    await dutyCycle(controller, 20, 3_000);

    const behind = await waitFor("the instants missed during the pause to be recorded as misfired", async () => {
      const misfired = (await admin.listExecutions({ job: "tick", state: ExecutionState.MISFIRED, limit: 1000 })).executions;
      const found = misfired.filter((e) => e.error.startsWith(BEHIND));
      return found.length > 0 ? found : undefined;
    }, 30_000);
    // Every shard of a missed instant, with the policy that decided it.
    const missedInstants = new Set(behind.map((e) => Number(e.fireTimeUnixMs)));
    for (const instant of missedInstants) {
      expect(behind.filter((e) => Number(e.fireTimeUnixMs) === instant).map((e) => e.shard).sort()).toEqual([0, 1, 2, 3, 4, 5]);
    }
    expect(behind.every((e) => e.error === `${BEHIND} (a starved CPU or a long pause) (spec.misfire: fire-once)`)).toBe(true);
    // spec.misfire fire-once: of the instants due while paused, only the latest ran, on every shard, and no later than the one after the pause.
    const executions = (await admin.listExecutions({ job: "tick", limit: 10_000, sinceUnixMs: BigInt(pausedAt) })).executions;
    const ranDuringPause = new Set(
      executions.filter((e) => e.state !== ExecutionState.MISFIRED && Number(e.fireTimeUnixMs) > Math.max(...missedInstants) && Number(e.fireTimeUnixMs) < resumedAt).map((e) => Number(e.fireTimeUnixMs)),
    );
    expect(ranDuringPause.size).toBeLessThanOrEqual(1);

    // Nothing lost, no agent fenced, and every shard runs once the CPU is back.
    const after = Date.now();
    await waitFor("a later fire to succeed on every shard", async () => {
      const ran = (await admin.listExecutions({ job: "tick", sinceUnixMs: BigInt(after), state: ExecutionState.SUCCEEDED })).executions;
      return new Set(ran.map((e) => e.shard)).size === SHARDS ? true : undefined;
    }, 60_000);
    const lost = (await admin.listExecutions({ job: "tick", state: ExecutionState.LOST, limit: 1000 })).executions;
    expect(lost.map((e) => `${e.id} ${e.error}`)).toEqual([]);
    for (const [id, agent] of world.agents) {
      expect(agent.logs().filter((e) => e.msg.startsWith("fenced")).map((e) => `${id}: ${e.msg}`)).toEqual([]);
    }
  }, 180_000);
});
