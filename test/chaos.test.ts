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
import { waitFor } from "./harness/processes.js";
import { CHAOS_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";

const SEED = chaosSeed();
const AGENT_IDS = ["agent-a", "agent-b", "agent-c", "agent-d"];
const SHARDS = 6;
const ROUNDS = 10;
/** No round starts after this much chaos, so the file ends in bounded time on a slow machine. */
const CHAOS_BUDGET_MS = 45_000;
/** The controller's default lease, and the margin it adds for a slow agent clock (docs/protocol.md). */
const LEASE_MS = 2000;
const LEASE_MARGIN_MS = 50;
/** The controller's default dispatch-ahead: a fire is sent this long before its instant. */
const DISPATCH_AHEAD_MS = 250;
/**
 * Heartbeats every 300 ms rather than the default 500: 300 does not divide the 1 s between fires,
 * so the heartbeats' phase against the fire instants moves by 100 ms a fire, and the window the
 * first test waits for comes within a few fires. (At 500 ms the phase is locked for as long as a
 * connection lasts, and a bad one never gives the window.)
 */
const HEARTBEAT_MS = 300;
// Runs of 200 ms, so that a frozen or killed agent is often caught in the middle of one.
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

type Fault = "kill-agent" | "freeze-agent" | "crash-controller";
const FAULTS: Fault[] = ["kill-agent", "freeze-agent", "crash-controller"];

describe(`a sharded job under chaos on real processes (seed ${SEED}; replay with SHARDLINE_CHAOS_SEED=${SEED})`, () => {
  const random = seededRandom(SEED);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  let env: ShardlineTestEnv<SqliteController>;

  const agentsNow = async () => (await env.admin.listAgents({})).agents;
  const ownsShards = async (id: string): Promise<true | undefined> => {
    const agent = (await agentsNow()).find((a) => a.id === id);
    return agent !== undefined && agent.state === AgentState.READY && agent.shards.length > 0 ? true : undefined;
  };
  /** The controller's view that `id` lost its lease: it is gone or lost, and owns no shard. */
  const leaseExpired = async (id: string): Promise<true | undefined> => {
    const agent = (await agentsNow()).find((a) => a.id === id);
    const owned = (await env.admin.listAssignments({ job: "sweep" })).assignments.filter((a) => a.agent === id);
    return (agent === undefined || agent.state === AgentState.LOST) && owned.length === 0 ? true : undefined;
  };
  /** Waits until every shard has a finished run of a fire after `after`. */
  const progressAfter = (after: number, what: string): Promise<number> => env.everyShardRan(what, { shards: SHARDS, after });

  beforeAll(async () => {
    // Retention far above what the test makes, so no execution of the checked window is pruned.
    env = await ShardlineTestEnv.single({
      name: "chaos",
      handlers: CHAOS_HANDLERS,
      agentEnv: { SHARDLINE_TEST_WORK_MS: String(WORK_MS) },
      // No admin rate limit: the first test polls the admin API every few milliseconds.
      controllerArgs: ["--history-per-job", "100000", "--heartbeat-interval", String(HEARTBEAT_MS), "--admin-rate-limit", "0"],
    });
    await env.settingUp(async () => {
      for (const id of AGENT_IDS) env.startAgent(id);
      await env.agentsReady(4, "four agents to connect", 20_000);
      await env.admin.applyJob({ manifest: JOB });
      await progressAfter(0, "a first fire on every shard");
    });
  });

  afterAll(async () => {
    if (env?.failed) console.error(`chaos seed ${SEED} (replay: SHARDLINE_CHAOS_SEED=${SEED} npx vitest run test/chaos.test.ts)`);
    await env?.close();
  });

  /**
   * Keeps `id` frozen (SIGSTOP) until its lease has lapsed on both sides and its shards ran
   * elsewhere, then thaws it (SIGCONT) and waits for it to fence itself, reconnect and own shards.
   */
  async function freezeThroughLease(id: string, why: string): Promise<{ thawedAt: number; fencedAt: number }> {
    const victim = env.agents.get(id)!;
    victim.freeze();
    const frozenAt = Date.now();
    env.note(`SIGSTOPped ${id} (pid ${victim.pid}) ${why}`);
    let thawedAt: number;
    try {
      await waitFor(`the controller to expire frozen ${id}'s lease and move its shards`, leaseExpired.bind(null, id));
      await progressAfter(Date.now(), `the frozen ${id}'s shards to run elsewhere`);
      // Longer than a lease on the agent's side as well, whatever the heartbeat phase was.
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
    return { thawedAt, fencedAt: fenced.time };
  }

  async function killAgent(id: string): Promise<void> {
    const quick = random() < 0.4;
    await env.agents.get(id)!.crash();
    env.note(`SIGKILLed ${id}; restarting it ${quick ? "at once" : "after its lease expired"}`);
    if (!quick) await waitFor(`the controller to expire ${id}'s lease and move its shards`, leaseExpired.bind(null, id));
    env.startAgent(id);
    await waitFor(`the restarted ${id} to own shards`, ownsShards.bind(null, id), 30_000);
  }

  async function freezeAgent(id: string): Promise<void> {
    const victim = env.agents.get(id)!;
    // Mid-run: frozen with a run going. Before start: with a run dispatched to it ahead of its
    // fire instant and not started yet.
    const when = pick(["mid-run", "before-start"] as const);
    if (when === "mid-run") {
      await waitFor(
        `${id} to be in the middle of a run`,
        async () => {
          const runs = env.runs().filter((r) => r.pid === victim.pid);
          const closed = new Set(runs.filter((r) => r.event !== "start").map((r) => `${r.fireTime}/${r.shard}/${r.attempt}`));
          return runs.some((r) => r.event === "start" && !closed.has(`${r.fireTime}/${r.shard}/${r.attempt}`)) ? true : undefined;
        },
        20_000,
        5,
      );
    } else {
      await waitFor(
        `a run to be dispatched to ${id} ahead of its fire instant`,
        async () => {
          const soon = BigInt(Date.now() + 30);
          const pending = await env.admin.listExecutions({ job: "sweep", agent: id, state: ExecutionState.PENDING, sinceUnixMs: soon, limit: 10 });
          return pending.executions.length > 0 ? true : undefined;
        },
        20_000,
        10,
      );
    }
    await freezeThroughLease(id, when);
  }

  async function crashController(): Promise<void> {
    await env.controller.process!.crash();
    env.note("SIGKILLed the controller; restarting it on the same store");
    await env.controller.start();
    env.note("the controller answers again");
    await env.agentsReady(4, "all four agents to be connected to the restarted controller");
  }

  it("starts none of a frozen agent's dispatched runs once it is thawed after its lease lapsed", async () => {
    // The agent is frozen after a run was dispatched to it ahead of its instant T and after a
    // heartbeat sent later than T - HEARTBEAT_MS: when it thaws, the timer that starts the run is
    // due before its next heartbeat and its fence timer. It must fence first and start nothing.
    const id = "agent-a";
    try {
      const arranged = await waitFor(
        `a run dispatched to ${id}, and a heartbeat of ${id} received after it, before the run's instant`,
        async () => {
          // Both reads at once: on a loaded machine each takes a while, and the window is short.
          const [listed, all] = await Promise.all([
            env.admin.listExecutions({ job: "sweep", agent: id, state: ExecutionState.PENDING, sinceUnixMs: BigInt(Date.now()), limit: 10 }),
            agentsNow(),
          ]);
          const next = listed.executions.sort((x, y) => Number(x.fireTimeUnixMs - y.fireTimeUnixMs))[0];
          if (next === undefined) return undefined;
          const fireTime = Number(next.fireTimeUnixMs);
          const agent = all.find((a) => a.id === id);
          const heartbeatAt = Number(agent?.leaseExpiresUnixMs ?? 0n) - LEASE_MS - LEASE_MARGIN_MS;
          const now = Date.now();
          // Dispatched at T - 250 ms: 50 ms for the message to reach the agent, and 20 ms to spare before T.
          const inWindow = now >= fireTime - DISPATCH_AHEAD_MS + 50 && now <= fireTime - 20;
          return inWindow && heartbeatAt > fireTime - HEARTBEAT_MS ? next.id : undefined;
        },
        // A chance or so a second, fewer when the machine is busy: give it many seconds.
        45_000,
        5,
      );
      const { thawedAt, fencedAt } = await freezeThroughLease(id, `with ${arranged} dispatched and not started`);
      const started = env.runs().filter((r) => r.pid === env.agents.get(id)!.pid && r.event === "start" && r.at >= thawedAt && r.at <= fencedAt);
      expect(started.map((r) => `${r.job}/${r.fireTime}/${r.shard}/${r.attempt} started at ${iso(r.at)}, fenced at ${iso(fencedAt)}`)).toEqual([]);
    } catch (error) {
      env.failed = true;
      throw error;
    }
  }, 90_000);

  it(`accounts for every fire of every shard exactly once, and never runs a (fire, shard) on two agents at once, through ${ROUNDS} rounds of kills, freezes and controller crashes`, async () => {
    try {
      await progressAfter(Date.now(), "every shard to run before the chaos");
      // The checked window starts with the first fire made once everything was up.
      const from = Math.ceil(Date.now() / 1000) * 1000;
      const chaosStart = Date.now();
      // The first three rounds try each fault once, in a seeded order; the rest are drawn.
      const plan = [...FAULTS].sort(() => random() - 0.5);
      const faults: string[] = [];
      let rounds = 0;
      while (rounds < ROUNDS && Date.now() - chaosStart < CHAOS_BUDGET_MS) {
        const fault = plan[rounds] ?? pick(FAULTS);
        rounds++;
        faults.push(fault);
        env.note(`round ${rounds}: ${fault}`);
        if (fault === "kill-agent") await killAgent(pick(AGENT_IDS));
        else if (fault === "freeze-agent") await freezeAgent(pick(AGENT_IDS));
        else await crashController();
        await progressAfter(Date.now(), `every shard to run again after round ${rounds} (${fault})`);
      }
      env.note(`${rounds} rounds in ${Date.now() - chaosStart} ms`);
      expect(rounds).toBeGreaterThanOrEqual(3);

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
      // The agents' evidence for the fires of the window (the test above reports its own).
      const runs = env.runs().filter((r) => r.fireTime >= from);
      const spans = runSpans(runs, env.allAgents);
      const summary = `window ${iso(from)}..${iso(to)}: ${account.fires} fires of a shard; final outcomes ${[...account.outcomes].map(([k, v]) => `${v} ${k}`).join(", ")}; ${account.failovers} failover re-runs`;
      env.note(summary);
      for (const line of account.reruns) env.note(line);
      for (const line of pauseOverlaps(spans)) env.note(`(a pause, not a fencing fault) ${line}`);
      // Every success the controller recorded is a run that an agent finished.
      const finished = new Set(runs.filter((r) => r.event === "end").map((r) => `sweep/${r.fireTime}/${r.shard}/${r.attempt}`));
      expect({
        accounting: account.problems,
        startedOnLapsedLease: startsOnLapsedLease(runs, env.allAgents),
        supersededStarts: supersededStarts(runs),
        overlappingRuns: overlappingRuns(spans),
        successesNoAgentFinished: executions.filter((e) => e.state === "succeeded" && !finished.has(e.id)).map((e) => e.id),
      }).toEqual({ accounting: [], startedOnLapsedLease: [], supersededStarts: [], overlappingRuns: [], successesNoAgentFinished: [] });
      console.log(`chaos seed ${SEED}: ${faults.join(", ")}; ${summary}`);
    } catch (error) {
      env.failed = true;
      throw error;
    }
  }, 120_000);
});
