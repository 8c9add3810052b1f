import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentState } from "../shared/gen/shardline/v1/types_pb.js";
import {
  accountFires,
  executionFact,
  iso,
  overlappingRuns,
  runSpans,
  supersededStarts,
} from "./harness/fire-evidence.js";
import { createNetnsLink, cutNetnsLink, destroyNetnsLink, inNetns, type NetnsLink, netnsUnavailable, restoreNetnsLink } from "./harness/netns.js";
import { waitFor } from "./harness/processes.js";
import { CHAOS_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";
import type { TrackedProcess } from "./harness/tracked-process.js";

const UNAVAILABLE = netnsUnavailable();
if (UNAVAILABLE !== undefined) {
  console.error(
    [
      "",
      "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
      `!!! test/partition.test.ts is SKIPPED: ${UNAVAILABLE}.`,
      "!!! It cuts a veth link to a network namespace to partition an agent from the controller;",
      "!!! run it as root (or with CAP_SYS_ADMIN and CAP_NET_ADMIN) on a machine with iproute2.",
      "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
      "",
    ].join("\n"),
  );
}

const SHARDS = 4;
const JOB = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: sweep}
spec:
  schedule: "* * * * * *"
  shards: ${SHARDS}
  handler: work
  failover: fenced
`;

describe.skipIf(UNAVAILABLE !== undefined)("an agent partitioned from the controller by a cut network link", () => {
  let link: NetnsLink | undefined;
  let env: ShardlineTestEnv<SqliteController>;
  /** On the host, like the controller. */
  let outside: TrackedProcess;
  /** In the namespace, behind the veth link. */
  let inside: TrackedProcess;
  const cleanUp = (): void => {
    if (link === undefined) return;
    const problems = destroyNetnsLink(link);
    if (problems.length > 0) console.error(`could not remove namespace ${link.ns} and veth ${link.hostIf}: ${problems.join("; ")}`);
    link = undefined;
  };

  const agentsNow = async () => (await env.admin.listAgents({})).agents;
  const owners = (): Promise<Map<number, string>> => env.owners("sweep");
  /** Waits until every shard has a run finished by `agent` (any agent if undefined) of a fire after `after`. */
  const progressAfter = (after: number, what: string, agent?: string): Promise<number> =>
    env.everyShardRan(what, { shards: SHARDS, after, ...(agent === undefined ? {} : { agent }) });

  beforeAll(async () => {
    // Even a worker that dies without running afterAll leaves no namespace behind.
    process.once("exit", cleanUp);
    link = createNetnsLink();
    // The controller listens on the host end of the veth only: never on 0.0.0.0 or another address.
    env = await ShardlineTestEnv.single({
      name: "partition",
      host: link.hostAddress,
      handlers: CHAOS_HANDLERS,
      agentEnv: { SHARDLINE_TEST_WORK_MS: "200" },
      controllerArgs: ["--history-per-job", "100000"],
    });
    outside = env.startAgent("agent-out");
    inside = env.startAgent("agent-in", { prefix: inNetns(link) });
    await env.admin.applyJob({ manifest: JOB });
    await waitFor("two shards on each agent", async () => {
      const agents = await agentsNow();
      return agents.length === 2 && agents.every((a) => a.state === AgentState.READY && a.shards.length === 2) ? true : undefined;
    });
    await progressAfter(0, "a first fire on every shard");
  });

  afterAll(async () => {
    try {
      await env?.close();
    } finally {
      cleanUp();
      process.removeListener("exit", cleanUp);
    }
  });

  it("moves the partitioned agent's shards after its lease, which it fences itself at, and takes it back cleanly once the link heals", async () => {
    try {
      const from = Math.ceil(Date.now() / 1000) * 1000;
      await progressAfter(from, "every shard to run once more before the cut");
      const before = await owners();
      const insideShards = [...before].filter(([, agent]) => agent === "agent-in").map(([shard]) => shard);
      expect(insideShards.length).toBe(2);

      const cutAt = Date.now();
      cutNetnsLink(link!);
      env.note(`cut ${link!.hostIf}`);

      // The controller moves them only after the lease: all four shards end up outside.
      await waitFor("the controller to expire agent-in's lease and move its shards to agent-out", async () => {
        const agent = (await agentsNow()).find((a) => a.id === "agent-in");
        const now = await owners();
        return (agent === undefined || agent.state === AgentState.LOST) && [...now.values()].every((a) => a === "agent-out") ? true : undefined;
      });
      env.note("the controller moved agent-in's shards");
      const fenced = await waitFor("agent-in to log that it fenced itself", async () => inside.logged("fenced:", cutAt), 10_000);
      env.note(`agent-in fenced itself at ${iso(fenced.time)}: ${String(fenced.reason)}`);
      // Two more fires with the link still cut: agent-out runs all four shards meanwhile.
      await progressAfter(Date.now() + 1000, "agent-out to run all four shards twice while agent-in is cut off", "agent-out");

      const restoreAt = Date.now();
      const duringCut = env.runs();
      restoreNetnsLink(link!);
      env.note(`restored ${link!.hostIf}`);

      // Fenced before anyone else took its shards, and quiet from then until the link healed.
      const takeovers = duringCut.filter((r) => r.event === "start" && r.agent === "agent-out" && insideShards.includes(r.shard) && r.at >= cutAt);
      expect(takeovers.length).toBeGreaterThan(0);
      expect(fenced.time).toBeLessThanOrEqual(Math.min(...takeovers.map((r) => r.at)));
      const startedWhileFenced = duringCut.filter((r) => r.event === "start" && r.agent === "agent-in" && r.at >= fenced.time);
      expect(startedWhileFenced.map((r) => `${r.fireTime}/${r.shard}/${r.attempt} at ${iso(r.at)}`)).toEqual([]);

      // Rejoins: reconnects, and the sticky strategy gives it back its share.
      const reconnected = await waitFor("agent-in to reconnect once the link is back", async () => inside.logged("connected", restoreAt), 30_000);
      env.note(`agent-in reconnected at ${iso(reconnected.time)}`);
      await waitFor("agent-in to own two shards again", async () => {
        const agent = (await agentsNow()).find((a) => a.id === "agent-in");
        return agent?.state === AgentState.READY && agent.shards.length === 2 ? true : undefined;
      });
      const rejoinedAt = Date.now();
      await waitFor("agent-in to finish runs again", async () =>
        env.runs().some((r) => r.event === "end" && r.agent === "agent-in" && r.fireTime > rejoinedAt) ? true : undefined,
      );
      await progressAfter(Date.now(), "every shard to run after the rejoin");

      // Every fire from before the cut to after the rejoin, settled.
      const to = Math.floor(Date.now() / 1000) * 1000 - 1000;
      const executions = await waitFor("every fire of the window to reach its final outcome", async () => {
        const listed = (await env.admin.listExecutions({ job: "sweep", limit: 10_000, sinceUnixMs: BigInt(from), untilUnixMs: BigInt(to + 1) })).executions.map(
          executionFact,
        );
        return listed.every((e) => e.state !== "pending" && e.state !== "running") ? listed : undefined;
      });
      const account = accountFires(executions, { shards: SHARDS, from, to, stepMs: 1000 });
      env.note(`window ${iso(from)}..${iso(to)}: ${account.fires} fires of a shard; final outcomes ${[...account.outcomes].map(([k, v]) => `${v} ${k}`).join(", ")}; ${account.failovers} failover re-runs`);
      // Besides the runs cut off by the partition, a fire dispatched to agent-in as it rejoined
      // may be lost and re-run (its Welcome can trail its Hello by seconds on the old TCP
      // connection): accounted for like any failover.
      for (const line of account.reruns) env.note(line);
      const runs = env.runs().filter((r) => r.fireTime >= from);
      expect({
        accounting: account.problems,
        supersededStarts: supersededStarts(runs),
        overlappingRuns: overlappingRuns(runSpans(runs, [outside, inside])),
      }).toEqual({ accounting: [], supersededStarts: [], overlappingRuns: [] });
      console.log(env.journal.filter((line) => line.includes(" window ")).join("\n"));
    } catch (error) {
      env.failed = true;
      throw error;
    }
  }, 90_000);
});
