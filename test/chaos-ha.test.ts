import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentState, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { chaosSeed, seededRandom } from "./harness/chaos-seed.js";
import {
  accountFires,
  executionFact,
  iso,
  overlappingRuns,
  pauseOverlaps,
  runSpans,
  startsOnLapsedLease,
  supersededStarts,
} from "./harness/fire-evidence.js";
import { shardline, waitFor } from "./harness/processes.js";
import type { ControllerReplica, ControllerReplicaSet } from "./harness/replicas.js";
import { CHAOS_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";

// test/chaos.test.ts's idea on three controller replicas sharing one real etcd: agents given all
// three addresses, a fenced 6-shard job firing every second, and seeded rounds that kill or
// freeze the leader, kill a follower, and kill or freeze an agent. Afterwards every fire of every
// shard must be accounted for once, and no (fire, shard) may have run on two agents at once.

const SEED = chaosSeed();
const AGENT_IDS = ["agent-a", "agent-b", "agent-c", "agent-d"];
const SHARDS = 6;
const ROUNDS = 10;
/** No round starts after this much chaos, so the file ends in bounded time on a slow machine. */
const CHAOS_BUDGET_MS = 40_000;
/** The agents' lease and the leader's etcd lease (the controller's defaults). */
const LEASE_MS = 2000;
const LEADER_TTL_MS = 2000;
// Runs of 200 ms, so that a killed or frozen process is often caught in the middle of one.
const WORK_MS = 200;
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

type Fault = "kill-leader" | "freeze-leader" | "kill-follower" | "kill-agent" | "freeze-agent";
const FAULTS: Fault[] = ["kill-leader", "freeze-leader", "kill-follower", "kill-agent", "freeze-agent"];
/** When a fault strikes: at once, while a run is going, or while a run waits on its agent for its instant. */
type Moment = "now" | "mid-run" | "before-start";

describe(`a sharded job under chaos on three controller replicas on etcd (seed ${SEED}; replay with SHARDLINE_CHAOS_SEED=${SEED})`, () => {
  const random = seededRandom(SEED);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  let env: ShardlineTestEnv<ControllerReplicaSet>;

  const agentsNow = async () => (await env.admin.listAgents({})).agents;
  const allAgentsReady = (what: string): Promise<void> => env.agentsReady(AGENT_IDS.length, what);
  const ownsShards = async (id: string): Promise<true | undefined> => {
    const agent = (await agentsNow()).find((a) => a.id === id);
    return agent !== undefined && agent.state === AgentState.READY && agent.shards.length > 0 ? true : undefined;
  };
  /** The leader's view that `id` lost its lease: it is gone or lost, and owns no shard. */
  const leaseExpired = async (id: string): Promise<true | undefined> => {
    const agent = (await agentsNow()).find((a) => a.id === id);
    const owned = (await env.admin.listAssignments({ job: "sweep" })).assignments.filter((a) => a.agent === id);
    return (agent === undefined || agent.state === AgentState.LOST) && owned.length === 0 ? true : undefined;
  };
  /** Waits until every shard has a finished run of a fire after `after`. */
  const progressAfter = (after: number, what: string): Promise<number> => env.everyShardRan(what, { shards: SHARDS, after });
  const leaderNow = (): { replica: ControllerReplica; term: number } => {
    const leader = env.controller.currentLeader();
    if (leader === undefined) throw new Error("no replica leads");
    return leader;
  };

  /** Waits for `moment`: a run going on agent `agentId` (else on any), or one dispatched to it ahead of its instant. */
  async function reach(moment: Moment, agentId?: string): Promise<void> {
    if (moment === "now") return;
    // Current processes only: a killed one's last run has a start and no end for ever.
    const pids = new Set(agentId === undefined ? [...env.agents.values()].map((a) => a.pid) : [env.agents.get(agentId)!.pid]);
    const where = agentId ?? "an agent";
    if (moment === "mid-run") {
      await waitFor(
        `${where} to be in the middle of a run`,
        async () => {
          const runs = env.runs().filter((r) => pids.has(r.pid));
          const closed = new Set(runs.filter((r) => r.event !== "start").map((r) => `${r.pid}/${r.fireTime}/${r.shard}/${r.attempt}`));
          return runs.some((r) => r.event === "start" && !closed.has(`${r.pid}/${r.fireTime}/${r.shard}/${r.attempt}`)) ? true : undefined;
        },
        20_000,
        5,
      );
    } else {
      await waitFor(
        `a run to be dispatched to ${where} ahead of its fire instant`,
        async () => {
          const soon = BigInt(Date.now() + 30);
          const pending = await env.admin.listExecutions({ job: "sweep", agent: agentId ?? "", state: ExecutionState.PENDING, sinceUnixMs: soon, limit: 10 });
          return pending.executions.some((e) => e.agent !== "") ? true : undefined;
        },
        20_000,
        20,
      );
    }
  }

  /** Restarts `replica`, which must come back as a follower of `leader`. */
  async function restartAsFollower(replica: ControllerReplica, leader: ControllerReplica): Promise<void> {
    const process = await replica.start();
    env.note(`restarted ${replica.name} (pid ${process.pid})`);
    expect(replica.servedAs(), `${replica.name}, restarted while ${leader.name} leads, serves as a follower of it`).toEqual({
      following: true,
      leader: leader.address,
    });
  }

  beforeAll(async () => {
    // Retention far above what the test makes, so no execution of the checked window is pruned.
    env = await ShardlineTestEnv.replicas(3, {
      name: "chaos-ha",
      handlers: CHAOS_HANDLERS,
      agentEnv: { SHARDLINE_TEST_WORK_MS: String(WORK_MS) },
      controllerArgs: ["--history-per-job", "100000"],
    });
    await env.settingUp(setUp);
  }, 60_000);

  async function setUp(): Promise<void> {
    const replicas = env.controller.replicas;
    const first = await env.controller.leaderAfter(0);
    env.note(`${first.replica.name} leads in term ${first.term}`);

    // Applied through the CLI, given a follower first: it follows the leader trailer.
    const manifest = join(env.dir, "sweep.yaml");
    writeFileSync(manifest, JOB);
    const followersFirst = [...replicas.filter((r) => r !== first.replica), first.replica].map((r) => r.address).join(",");
    const applied = await shardline(["apply", "-f", manifest, "--controller", followersFirst]);
    // No agent runs yet: the apply says so, and succeeds.
    expect(applied.stderr).toMatch(/^warning: job\/sweep: no connected agent can run it now: no agent is connected; its fires wait \(spec\.misfire: [a-z-]+\)\n$/);
    expect(applied.code).toBe(0);

    for (const id of AGENT_IDS) env.startAgent(id);
    await allAgentsReady("four agents to connect to the leader");
    await progressAfter(0, "a first fire on every shard");
  }

  afterAll(async () => {
    if (env?.failed) console.error(`chaos-ha seed ${SEED} (replay: SHARDLINE_CHAOS_SEED=${SEED} npx vitest run test/chaos-ha.test.ts)`);
    await env?.close();
  });

  async function killLeader(): Promise<void> {
    const moment = pick(["now", "mid-run", "before-start"] as const);
    await reach(moment);
    const { replica: victim, term } = leaderNow();
    await victim.process!.crash();
    env.note(`SIGKILLed leader ${victim.name} (term ${term}) ${moment}`);
    const next = await env.controller.leaderAfter(term);
    env.note(`${next.replica.name} leads in term ${next.term}`);
    await restartAsFollower(victim, next.replica);
    await allAgentsReady(`all four agents to connect to ${next.replica.name}`);
  }

  /**
   * SIGSTOPs the leader until another replica leads and every shard ran under it, then SIGCONTs
   * it: it must exit non-zero saying that it lost the leadership, and come back as a follower.
   */
  async function freezeLeader(): Promise<void> {
    const moment = pick(["now", "mid-run", "before-start"] as const);
    await reach(moment);
    const { replica: victim, term } = leaderNow();
    const frozen = victim.process!;
    frozen.freeze();
    const frozenAt = Date.now();
    env.note(`SIGSTOPped leader ${victim.name} (term ${term}, pid ${frozen.pid}) ${moment}`);
    let next: { replica: ControllerReplica; term: number };
    try {
      next = await env.controller.leaderAfter(term);
      env.note(`${next.replica.name} leads in term ${next.term}`);
      await progressAfter(Date.now(), `every shard to run under ${next.replica.name} while ${victim.name} is frozen`);
      await waitFor(`${victim.name} to be frozen for longer than its etcd lease`, async () => (Date.now() - frozenAt > LEADER_TTL_MS + 500 ? true : undefined));
    } finally {
      frozen.thaw();
    }
    env.note(`SIGCONTed ${victim.name} after ${Date.now() - frozenAt} ms`);
    await waitFor(`${victim.name} to exit after its SIGCONT`, async () => (frozen.running ? undefined : true), 15_000);
    const exit = await frozen.exited;
    env.note(`${victim.name} exited (code ${exit.code}, signal ${exit.signal})`);
    expect({ code: exit.code === 0 ? 0 : "non-zero", lostTheLeadership: frozen.output.includes("lost the leadership") }, `${victim.name}'s exit after its SIGCONT`).toEqual({
      code: "non-zero",
      lostTheLeadership: true,
    });
    await restartAsFollower(victim, next.replica);
    await allAgentsReady(`all four agents to connect to ${next.replica.name}`);
  }

  async function killFollower(): Promise<void> {
    const leader = leaderNow();
    const victim = pick(env.controller.replicas.filter((r) => r !== leader.replica));
    await victim.process!.crash();
    env.note(`SIGKILLed follower ${victim.name}`);
    await restartAsFollower(victim, leader.replica);
    const after = env.controller.currentLeader();
    expect({ leader: after?.replica.name, term: after?.term }, `the leader after follower ${victim.name} was killed and restarted`).toEqual({
      leader: leader.replica.name,
      term: leader.term,
    });
  }

  async function killAgent(id: string): Promise<void> {
    const quick = random() < 0.4;
    await env.agents.get(id)!.crash();
    env.note(`SIGKILLed ${id}; restarting it ${quick ? "at once" : "after its lease expired"}`);
    if (!quick) await waitFor(`the leader to expire ${id}'s lease and move its shards`, leaseExpired.bind(null, id));
    env.startAgent(id);
    await waitFor(`the restarted ${id} to own shards`, ownsShards.bind(null, id), 30_000);
  }

  /**
   * Keeps agent `id` frozen until its lease has lapsed on both sides and its shards ran elsewhere,
   * then thaws it and waits for it to fence itself, reconnect and own shards.
   */
  async function freezeAgent(id: string): Promise<void> {
    const moment = pick(["mid-run", "before-start"] as const);
    await reach(moment, id);
    const victim = env.agents.get(id)!;
    victim.freeze();
    const frozenAt = Date.now();
    env.note(`SIGSTOPped ${id} (pid ${victim.pid}) ${moment}`);
    let thawedAt: number;
    try {
      await waitFor(`the leader to expire frozen ${id}'s lease and move its shards`, leaseExpired.bind(null, id));
      await progressAfter(Date.now(), `the frozen ${id}'s shards to run elsewhere`);
      await waitFor(`${id} to be frozen for longer than a lease`, async () => (Date.now() - frozenAt > LEASE_MS + 500 ? true : undefined));
    } finally {
      thawedAt = Date.now();
      victim.thaw();
    }
    const fenced = await waitFor(`${id} to log that it fenced itself after its SIGCONT`, async () => victim.logged("fenced:", thawedAt), 10_000);
    victim.resumes.push([thawedAt, fenced.time]);
    env.note(`SIGCONTed ${id} after ${thawedAt - frozenAt} ms; it fenced itself at ${iso(fenced.time)}`);
    await waitFor(`${id} to reconnect after its fence`, async () => victim.logged("connected", fenced.time), 30_000);
    await waitFor(`${id} to own shards again`, ownsShards.bind(null, id), 30_000);
  }

  it(`accounts for every fire of every shard exactly once, and never runs a (fire, shard) on two agents at once, through up to ${ROUNDS} rounds of leader kills and freezes, follower kills, and agent kills and freezes`, async () => {
    try {
      await progressAfter(Date.now(), "every shard to run before the chaos");
      // The checked window starts with the first fire made once everything was up.
      const from = Math.ceil(Date.now() / 1000) * 1000;
      const chaosStart = Date.now();
      // The first rounds try each fault once, in a seeded order, whatever the budget; the rest
      // are drawn while the budget lasts.
      const plan = [...FAULTS].sort(() => random() - 0.5);
      const faults: string[] = [];
      let rounds = 0;
      while (rounds < plan.length || (rounds < ROUNDS && Date.now() - chaosStart < CHAOS_BUDGET_MS)) {
        const fault = plan[rounds] ?? pick(FAULTS);
        rounds++;
        faults.push(fault);
        env.note(`round ${rounds}: ${fault}`);
        if (fault === "kill-leader") await killLeader();
        else if (fault === "freeze-leader") await freezeLeader();
        else if (fault === "kill-follower") await killFollower();
        else if (fault === "kill-agent") await killAgent(pick(AGENT_IDS));
        else await freezeAgent(pick(AGENT_IDS));
        await progressAfter(Date.now(), `every shard to run again after round ${rounds} (${fault})`);
      }
      env.note(`${rounds} rounds in ${Date.now() - chaosStart} ms`);

      // Every instant up to a second ago, once each of those fires reached its final outcome.
      const to = Math.floor(Date.now() / 1000) * 1000 - 1000;
      const executions = await waitFor(
        "every fire of the window to reach its final outcome",
        async () => {
          const listed = (
            await env.admin.listExecutions({ job: "sweep", limit: 10_000, sinceUnixMs: BigInt(from), untilUnixMs: BigInt(to + 1) })
          ).executions.map(executionFact);
          return listed.every((e) => e.state !== "pending" && e.state !== "running") ? listed : undefined;
        },
        30_000,
      );

      const account = accountFires(executions, { shards: SHARDS, from, to, stepMs: 1000 });
      const runs = env.runs().filter((r) => r.fireTime >= from);
      const spans = runSpans(runs, env.allAgents);
      const summary = `window ${iso(from)}..${iso(to)}: ${account.fires} fires of a shard; final outcomes ${[...account.outcomes].map(([k, v]) => `${v} ${k}`).join(", ")}; ${account.failovers} failover re-runs`;
      env.note(summary);
      for (const line of account.reruns) env.note(line);
      for (const line of pauseOverlaps(spans)) env.note(`(a pause, not a fencing fault) ${line}`);
      // Every success the leader recorded is a run that an agent finished.
      const finished = new Set(runs.filter((r) => r.event === "end").map((r) => `sweep/${r.fireTime}/${r.shard}/${r.attempt}`));
      expect({
        accounting: account.problems,
        startedOnLapsedLease: startsOnLapsedLease(runs, env.allAgents),
        supersededStarts: supersededStarts(runs),
        overlappingRuns: overlappingRuns(spans),
        successesNoAgentFinished: executions.filter((e) => e.state === "succeeded" && !finished.has(e.id)).map((e) => e.id),
      }).toEqual({ accounting: [], startedOnLapsedLease: [], supersededStarts: [], overlappingRuns: [], successesNoAgentFinished: [] });
      console.log(`chaos-ha seed ${SEED}: ${faults.join(", ")}; ${summary}`);
    } catch (error) {
      env.failed = true;
      throw error;
    }
  }, 150_000);
});
