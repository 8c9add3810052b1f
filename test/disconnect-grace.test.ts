import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Execution, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { executionFact, iso, overlappingRuns, type RunRecord, runSpans, supersededStarts } from "./harness/fire-evidence.js";
import { createNetnsLink, cutNetnsLink, destroyNetnsLink, inNetns, type NetnsLink, netnsUnavailable, restoreNetnsLink } from "./harness/netns.js";
import { shardline, waitFor } from "./harness/processes.js";
import type { ControllerReplicaSet } from "./harness/replicas.js";
import { CHAOS_HANDLERS, type ControllerSide, ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";
import type { TrackedProcess } from "./harness/tracked-process.js";

// Issue 18: the disconnect grace on real processes. A started run is not thrown away when its
// agent's lease lapses: it goes on for its grace while the agent looks for a controller, and the
// controller holds the fire for it (state `unknown`) until the grace is over. A controller that
// comes back within the grace (restarted on its SQLite file, or a new etcd leader) gets the run
// back from the agent and records it once; an agent cut off for longer aborts the run before the
// fire runs elsewhere. The agents' own record (test/harness/chaos-handlers.mjs: each run's start,
// and its end or abort, with the agent's pid) is the evidence beside the controller's history.

/** A run that outlasts the outages below by far, and ends while the agent is still in its grace. */
const LONG_RUN_MS = 15_000;
/** How far into the run the control plane goes away: well past its start, well before its end. */
const INTO_THE_RUN_MS = 3_000;
/** How long the SQLite controller stays down: longer than the 2 s lease, far shorter than the grace. */
const OUTAGE_MS = 3_000;

/** A one-shard job with no schedule (each test triggers its one fire), run by chaos-handlers.mjs's `work`. */
const manifest = (name: string, extra = ""): string => `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: ${name}}
spec:
  shards: 1
  handler: work
  failover: fenced
${extra}`;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What the agents' record holds of one execution (job, attempt), in the order it was written. */
function recordOf(runs: RunRecord[], job: string, attempt: number): { starts: RunRecord[]; ends: RunRecord[]; aborts: RunRecord[] } {
  const mine = runs.filter((r) => r.job === job && r.attempt === attempt);
  return { starts: mine.filter((r) => r.event === "start"), ends: mine.filter((r) => r.event === "end"), aborts: mine.filter((r) => r.event === "abort") };
}

const describeExecution = (e: Execution): string => {
  const fact = executionFact(e);
  return `${fact.id} ${fact.state} on ${fact.agent || "no agent"}${fact.error === "" ? "" : ` (${fact.error})`}`;
};

/**
 * Triggers `job`'s one fire and waits until its first attempt runs on its agent (the record says
 * it started) and the controller has seen it running, so that it is mid-run on both sides.
 */
async function startLongRun(env: ShardlineTestEnv, job: string): Promise<{ id: string; start: RunRecord; agent: TrackedProcess }> {
  const { executionIds } = await env.admin.triggerJob({ name: job });
  const id = executionIds[0]!;
  const start = await waitFor(`${id} to start on its agent`, () => recordOf(env.runs(), job, 1).starts[0]);
  await waitFor(`the controller to see ${id} running`, async () => ((await env.admin.getExecution({ id })).execution?.state === ExecutionState.RUNNING ? true : undefined));
  const agent = env.allAgents.find((a) => a.pid === start.pid)!;
  env.note(`${id} started on ${start.agent} (pid ${start.pid}) at ${iso(start.at)}`);
  return { id, start, agent };
}

/**
 * What every test of a control-plane outage shorter than the grace checks once the run is over:
 * the agent fenced itself during the outage with the run going on, the controller's history holds
 * one attempt, succeeded on that agent, and the agent's record one start and one end on one
 * process, and no abort.
 */
async function expectRecordedOnce(env: ShardlineTestEnv, job: string, run: { id: string; start: RunRecord; agent: TrackedProcess }, outageAt: number): Promise<void> {
  const done = await waitFor(
    `${run.id} to finish`,
    async () => {
      const execution = (await env.admin.getExecution({ id: run.id })).execution;
      return execution !== undefined && execution.state !== ExecutionState.RUNNING && execution.state !== ExecutionState.UNKNOWN ? execution : undefined;
    },
    LONG_RUN_MS + 45_000,
  );
  env.note(describeExecution(done));
  const carriedOn = run.agent.logged("a controller answered within the disconnect grace", outageAt);
  env.note(carriedOn === undefined ? "the run ended before a controller answered: its outcome went in the next Hello" : `a controller answered ${run.start.agent} at ${iso(carriedOn.time)}: the run carried on`);
  // The outage was felt: the agent's lease lapsed while the run went on (else nothing was tested).
  const fenced = run.agent.logged("fenced:", outageAt);
  expect(fenced?.msg, `${run.start.agent} fenced itself during the outage, keeping its run`).toMatch(/1 started run\(s\) go on for their disconnect grace/);
  const history = (await env.admin.listExecutions({ job, limit: 100 })).executions.map(describeExecution);
  expect(history).toEqual([`${run.id} succeeded on ${run.start.agent}`]);
  const record = recordOf(env.runs(), job, 1);
  expect({
    starts: record.starts.map((r) => `${r.agent} pid ${r.pid}`),
    ends: record.ends.map((r) => `${r.agent} pid ${r.pid}`),
    aborts: record.aborts.map((r) => `${r.agent} pid ${r.pid} at ${iso(r.at)}`),
    later: env.runs().filter((r) => r.job === job && r.attempt > 1),
  }).toEqual({ starts: [`${run.start.agent} pid ${run.start.pid}`], ends: [`${run.start.agent} pid ${run.start.pid}`], aborts: [], later: [] });
  console.log(env.journal.join("\n"));
}

/** Marks the world failed when a test of it failed, so that close() prints every process's output. */
function markFailures(env: () => ShardlineTestEnv<ControllerSide> | undefined): void {
  afterEach(({ task }) => {
    const world = env();
    if (task.result?.state === "fail" && world !== undefined) world.failed = true;
  });
}

describe("the disconnect grace through a controller restart on its SQLite file", () => {
  let env: ShardlineTestEnv<SqliteController> | undefined;
  beforeAll(async () => {
    env = await ShardlineTestEnv.single({ name: "grace-sqlite", handlers: CHAOS_HANDLERS, agentEnv: { SHARDLINE_TEST_WORK_MS: String(LONG_RUN_MS) } });
    const world = env;
    await world.settingUp(async () => {
      for (const id of ["agent-a", "agent-b"]) world.startAgent(id);
      await world.agentsReady(2, "both agents to connect");
      // No spec.disconnectGraceSeconds: the controller's default, 15 s.
      await world.admin.applyJob({ manifest: manifest("long-sqlite") });
      await waitFor("the shard of long-sqlite to be owned", async () => (await world.owners("long-sqlite")).get(0));
    });
  });
  markFailures(() => env);
  afterAll(async () => {
    await env?.close();
  });

  it("a 15 s run survives a 3 s outage of the controller (SIGKILL, then a restart on the same file): one attempt, succeeded, recorded once", async () => {
    const world = env!;
    const run = await startLongRun(world, "long-sqlite");
    await waitFor(`${INTO_THE_RUN_MS} ms into ${run.id}`, () => (Date.now() >= run.start.at + INTO_THE_RUN_MS ? true : undefined));
    const killedAt = Date.now();
    await world.controller.process!.crash();
    world.note(`SIGKILLed the controller ${killedAt - run.start.at} ms into ${run.id}`);
    await sleep(OUTAGE_MS);
    await world.controller.start();
    world.note("the controller restarted on the same SQLite file");
    await expectRecordedOnce(world, "long-sqlite", run, killedAt);
  }, 120_000);
});

describe("the disconnect grace through an etcd leader's SIGKILL", () => {
  let env: ShardlineTestEnv<ControllerReplicaSet> | undefined;
  beforeAll(async () => {
    env = await ShardlineTestEnv.replicas(2, { name: "grace-etcd", handlers: CHAOS_HANDLERS, agentEnv: { SHARDLINE_TEST_WORK_MS: String(LONG_RUN_MS) } });
    const world = env;
    await world.settingUp(async () => {
      await world.controller.leaderIn(1);
      for (const id of ["agent-a", "agent-b"]) world.startAgent(id);
      await world.agentsReady(2, "both agents to connect to the leader");
      // A grace far longer than the run: the agent keeps it whatever the election takes.
      await world.admin.applyJob({ manifest: manifest("long-etcd", "  disconnectGraceSeconds: 60\n") });
      await waitFor("the shard of long-etcd to be owned", async () => (await world.owners("long-etcd")).get(0));
    });
  }, 90_000);
  markFailures(() => env);
  afterAll(async () => {
    await env?.close();
  });

  it("a 15 s run survives its leader's SIGKILL: the follower takes over, the agent hands it the run, one attempt, succeeded, recorded once", async () => {
    const world = env!;
    const first = await world.controller.leaderIn(1);
    const run = await startLongRun(world, "long-etcd");
    await waitFor(`${INTO_THE_RUN_MS} ms into ${run.id}`, () => (Date.now() >= run.start.at + INTO_THE_RUN_MS ? true : undefined));
    const killedAt = Date.now();
    await first.process!.crash();
    world.note(`SIGKILLed the leader ${first.name} ${killedAt - run.start.at} ms into ${run.id}`);
    const second = await world.controller.leaderIn(2, 30_000);
    world.note(`${second.name} leads in term 2`);
    expect(second).not.toBe(first);
    await expectRecordedOnce(world, "long-etcd", run, killedAt);
  }, 120_000);
});

const NETNS_UNAVAILABLE = netnsUnavailable();
if (NETNS_UNAVAILABLE !== undefined) {
  console.error(
    [
      "",
      "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
      `!!! test/disconnect-grace.test.ts, its partition test is SKIPPED: ${NETNS_UNAVAILABLE}.`,
      "!!! It cuts a veth link to a network namespace to partition an agent past its grace;",
      "!!! run it as root (or with CAP_SYS_ADMIN and CAP_NET_ADMIN) on a machine with iproute2.",
      "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
      "",
    ].join("\n"),
  );
}

/** The partitioned agent's run: far longer than its lease and grace, so that only the grace ends it. */
const CUT_OFF_RUN_MS = 120_000;
/** The other agent's runs, the failover re-run among them: short, so the test sees it finish. */
const RERUN_MS = 1_000;
const GRACE_S = 5;

describe.skipIf(NETNS_UNAVAILABLE !== undefined)("the disconnect grace of an agent partitioned by a cut network link", () => {
  let link: NetnsLink | undefined;
  let env: ShardlineTestEnv<SqliteController> | undefined;
  let inside: TrackedProcess;
  let outside: TrackedProcess;
  const cleanUp = (): void => {
    if (link === undefined) return;
    const problems = destroyNetnsLink(link);
    if (problems.length > 0) console.error(`could not remove namespace ${link.ns} and veth ${link.hostIf}: ${problems.join("; ")}`);
    link = undefined;
  };

  beforeAll(async () => {
    // Even a worker that dies without running afterAll leaves no namespace behind.
    process.once("exit", cleanUp);
    link = createNetnsLink();
    env = await ShardlineTestEnv.single({ name: "grace-partition", host: link.hostAddress, handlers: CHAOS_HANDLERS });
    const world = env;
    await world.settingUp(async () => {
      // The agent in the namespace comes first, so that the one shard is its own (sticky keeps it there).
      inside = world.startAgent("agent-in", { prefix: inNetns(link!), env: { SHARDLINE_TEST_WORK_MS: String(CUT_OFF_RUN_MS) } });
      await world.agentsReady(1, "agent-in to connect through the veth link");
      await world.admin.applyJob({ manifest: manifest("cut-off", `  disconnectGraceSeconds: ${GRACE_S}\n`) });
      await waitFor("agent-in to own the shard of cut-off", async () => ((await world.owners("cut-off")).get(0) === "agent-in" ? true : undefined));
      outside = world.startAgent("agent-out", { env: { SHARDLINE_TEST_WORK_MS: String(RERUN_MS) } });
      await world.agentsReady(2, "agent-out to connect");
    });
  });
  markFailures(() => env);
  afterAll(async () => {
    try {
      await env?.close();
    } finally {
      cleanUp();
      process.removeListener("exit", cleanUp);
    }
  });

  it(`shows the run unknown during its ${GRACE_S} s grace, aborts it on the cut-off agent at the grace's end, and runs the fire elsewhere only after that`, async () => {
    const world = env!;
    expect((await world.owners("cut-off")).get(0)).toBe("agent-in");
    const run = await startLongRun(world, "cut-off");
    expect(run.start.pid).toBe(inside.pid);

    const cutAt = Date.now();
    cutNetnsLink(link!);
    world.note(`cut ${link!.hostIf}`);

    // During the grace: unknown, with a reason that says why and until when, in the API and the CLI.
    const unknown = await waitFor(`the controller to show ${run.id} unknown once agent-in's lease ended`, async () => {
      const execution = (await world.admin.getExecution({ id: run.id })).execution;
      return execution?.state === ExecutionState.UNKNOWN ? execution : undefined;
    });
    world.note(`${run.id} unknown: ${unknown.waitingReason}`);
    expect(unknown.waitingReason).toMatch(/^agent agent-in has been out of reach since .*; the run may still be going there, until .* \(its disconnect grace\)/);
    const listed = await shardline(["get", "executions", "--job", "cut-off", "-o", "wide", "--controller", world.controller.address]);
    expect(listed.code, listed.stderr).toBe(0);
    const row = listed.stdout.split("\n").find((line) => line.startsWith(run.id));
    expect(row, listed.stdout).toMatch(/ unknown .*agent agent-in has been out of reach since /);

    // The grace's end: agent-in aborts its run (its own record says so), the controller records it lost.
    const abort = await waitFor(`agent-in to abort ${run.id} at the end of its grace`, () => recordOf(world.runs(), "cut-off", 1).aborts[0], 30_000);
    world.note(`agent-in aborted ${run.id} at ${iso(abort.at)}, ${abort.at - cutAt} ms after the cut`);
    const fenced = inside.logged("fenced:", cutAt);
    expect(fenced?.msg).toMatch(/1 started run\(s\) go on for their disconnect grace/);
    const lost = await waitFor(`${run.id} to be recorded lost`, async () => {
      const execution = (await world.admin.getExecution({ id: run.id })).execution;
      return execution?.state === ExecutionState.LOST ? execution : undefined;
    });
    expect(lost.error).toMatch(new RegExp(`no word came from it within the disconnect grace of ${GRACE_S} s`));

    // The failover re-run, on agent-out, which the shard moved to at the lease.
    const rerunId = run.id.replace(/\/1$/, "/2");
    const rerun = await waitFor(`the failover re-run ${rerunId} to succeed`, async () => {
      const execution = (await world.admin.getExecution({ id: rerunId })).execution;
      return execution?.state === ExecutionState.SUCCEEDED ? execution : undefined;
    });
    expect(rerun.agent).toBe("agent-out");
    world.note(`${rerunId} succeeded on agent-out, started at ${iso(Number(rerun.startedAtUnixMs))}`);

    // agent-in comes back: its late report of the aborted run changes nothing.
    const restoreAt = Date.now();
    restoreNetnsLink(link!);
    world.note(`restored ${link!.hostIf}`);
    await waitFor("agent-in to reconnect once the link is back", () => inside.logged("connected", restoreAt), 30_000);
    await world.agentsReady(2, "both agents to be connected and ready again");

    const history = (await world.admin.listExecutions({ job: "cut-off", limit: 100 })).executions.map(describeExecution).sort();
    expect(history).toEqual([expect.stringMatching(new RegExp(`^${run.id} lost on agent-in `)), `${rerunId} succeeded on agent-out`]);
    const runs = world.runs().filter((r) => r.job === "cut-off");
    const second = recordOf(runs, "cut-off", 2);
    expect(second.starts.map((r) => r.agent)).toEqual(["agent-out"]);
    // No two runs of the shard at once, from the agents' own record: the re-run started after the abort.
    expect(second.starts[0]!.at).toBeGreaterThanOrEqual(abort.at);
    expect({ overlappingRuns: overlappingRuns(runSpans(runs, [inside, outside])), supersededStarts: supersededStarts(runs) }).toEqual({
      overlappingRuns: [],
      supersededStarts: [],
    });
    console.log(world.journal.join("\n"));
  }, 120_000);
});
