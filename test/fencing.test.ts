import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Execution, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { waitFor } from "./harness/processes.js";
import { generatePythonStubs, startPythonAgent } from "./harness/python.js";
import { ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";

// Issue 18, item 5: a process frozen mid-run wakes after its lease lapsed and its shard moved;
// its handler must be able to refuse its side effect (ctx.assertLease) and to fence it
// (ctx.fencingToken). docs/fencing.md says what is guaranteed and what is not.

const HERE = dirname(fileURLToPath(import.meta.url));
/** guarded-write (assertLease right before its side effect, behind a gate the test opens) and fencing-token. */
const FENCING_HANDLERS = join(HERE, "fixtures", "fencing-handlers.mjs");
const AGENT_IDS = ["agent-a", "agent-b"];

/** One line of the record fencing-handlers.mjs appends. */
interface FencingRecord {
  event: "start" | "refused" | "effect";
  job: string;
  shard: number;
  attempt: number;
  agent: string;
  /** ctx.fencingToken, in decimal. */
  token: string;
  pid: number;
  at: number;
  /** LeaseLostError.reason and message, on a refusal. */
  reason?: string;
  error?: string;
}

/** The token the controller makes of an assignment (proto ExecutionContext.fencing_token). */
const tokenOf = (term: bigint, generation: bigint): bigint => (term << 32n) + generation;

const manifest = (name: string, handler: string, spec: string): string => `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: ${name}}
spec:
  handler: ${handler}
${spec}
`;

describe("fencing a handler's side effects, on real processes", () => {
  let env: ShardlineTestEnv<SqliteController>;

  const records = (): FencingRecord[] =>
    readFileSync(env.record, "utf8")
      .split("\n")
      .filter((line) => line.endsWith("}"))
      .map((line) => JSON.parse(line) as FencingRecord);
  const execution = async (id: string): Promise<Execution | undefined> => (await env.admin.getExecution({ id })).execution;

  beforeAll(async () => {
    env = await ShardlineTestEnv.single({ name: "fencing", handlers: FENCING_HANDLERS });
    await env.settingUp(async () => {
      for (const id of AGENT_IDS) env.startAgent(id);
      await env.agentsReady(2, "both agents to connect");
    });
  });

  afterAll(async () => {
    await env?.close();
  });

  it("hands each run the token of its shard's assignment, term * 2^32 + generation", async () => {
    try {
      await env.admin.applyJob({ manifest: manifest("token-check", "fencing-token", "  shards: 4") });
      const assignments = await waitFor("all four shards of token-check to be owned", async () => {
        const listed = (await env.admin.listAssignments({ job: "token-check" })).assignments;
        return listed.length === 4 && listed.every((a) => !a.revoking) ? listed : undefined;
      });
      const { executionIds } = await env.admin.triggerJob({ name: "token-check" });
      const done = await waitFor("the four runs of token-check to succeed", async () => {
        const runs = await Promise.all(executionIds.map(execution));
        return runs.every((run) => run?.state === ExecutionState.SUCCEEDED) ? (runs as Execution[]) : undefined;
      });
      expect(done.map((run) => [run.shard, run.result])).toEqual(assignments.map((a) => [a.shard, String(tokenOf(a.term, a.generation))]));
    } catch (error) {
      env.failed = true;
      throw error;
    }
  });

  // Grace 60 s: the frozen run is not aborted when its lease lapses (it goes on for its grace
  // while the agent seeks a controller), so nothing but assertLease's own reading of the lease
  // can stop its write; the thawed agent's LOST report ends it and failover runs it again.
  // Grace 0: the controller re-runs the fire elsewhere as soon as the lease ends, while the first
  // run is still frozen; on its SIGCONT the agent's fence and the handler's timer race, so the
  // refusal says "lease-lapsed" or "aborted", whichever came first. Either way nothing is written.
  it.each([
    { graceSeconds: 60, grace: "60 s", reasons: ["lease-lapsed"], refusal: "lease-lapsed" },
    { graceSeconds: 0, grace: "0", reasons: ["lease-lapsed", "aborted"], refusal: "lease-lapsed or aborted" },
  ])(
    "a run frozen (SIGSTOP) until its shard moved, then thawed, refuses its write ($refusal), is recorded lost, and its re-run writes with a greater token (disconnect grace $grace)",
    async ({ graceSeconds, reasons }) => {
      const job = `guarded-${graceSeconds}`;
      try {
        await env.agentsReady(2, "both agents to be connected and ready");
        await env.admin.applyJob({ manifest: manifest(job, "guarded-write", `  shards: 1\n  failover: fenced\n  disconnectGraceSeconds: ${graceSeconds}`) });
        const owner = await waitFor(`shard 0 of ${job} to be owned`, async () => (await env.owners(job)).get(0));
        const victim = env.agents.get(owner)!;
        const { executionIds } = await env.admin.triggerJob({ name: job });
        const firstId = executionIds[0]!;
        const first = await waitFor(`${firstId} to start on ${owner}`, () => records().find((r) => r.job === job && r.attempt === 1 && r.event === "start"));
        expect(first.pid).toBe(victim.pid);
        // Frozen once the controller knows it runs, so it is a run in the middle of its work on both sides.
        await waitFor(`the controller to see ${firstId} running`, async () => ((await execution(firstId))?.state === ExecutionState.RUNNING ? true : undefined));

        // The handler waits at its gate, which stays shut while the agent is frozen.
        victim.freeze();
        env.note(`SIGSTOPped ${owner} (pid ${victim.pid}) in the middle of ${firstId}`);
        try {
          // The controller ends a lease later than the agent's own clock does (it counts from the
          // heartbeat's arrival, plus a margin): once the shard moved, the agent's lease lapsed too.
          const next = await waitFor(`the controller to move ${job}'s shard away from frozen ${owner}`, async () => {
            const now = (await env.owners(job)).get(0);
            return now !== undefined && now !== owner ? now : undefined;
          });
          env.note(`${job}'s shard moved to ${next}`);
        } finally {
          writeFileSync(join(env.dir, `gate-${job}`), "");
          victim.thaw();
        }
        env.note(`opened the gate of ${job} and SIGCONTed ${owner}`);

        const frozenOutcome = await waitFor(`the thawed ${firstId} to refuse or write`, () =>
          records().find((r) => r.job === job && r.attempt === 1 && r.event !== "start"),
        );
        expect(frozenOutcome).toMatchObject({ event: "refused", pid: victim.pid });
        expect(reasons).toContain(frozenOutcome.reason);
        const lost = await waitFor(`${firstId} to be recorded lost`, async () => {
          const run = await execution(firstId);
          return run?.state === ExecutionState.LOST ? run : undefined;
        });
        // Within its grace the run was the agent's to report: its refusal is what the record says.
        if (graceSeconds > 0) expect(lost.error).toBe(frozenOutcome.error);

        const rerunId = firstId.replace(/\/1$/, "/2");
        const rerun = await waitFor(`the failover re-run ${rerunId} to succeed`, async () => {
          const run = await execution(rerunId);
          return run?.state === ExecutionState.SUCCEEDED ? run : undefined;
        });
        const effects = records().filter((r) => r.job === job && r.event === "effect");
        // The frozen run's refusal is on record, so its handler is past the point where it could write.
        expect(effects.map((r) => ({ attempt: r.attempt, agent: r.agent }))).toEqual([{ attempt: 2, agent: rerun.agent }]);
        expect(rerun.agent).not.toBe(owner);
        expect(rerun.result).toBe(effects[0]!.token);
        expect(BigInt(effects[0]!.token)).toBeGreaterThan(BigInt(first.token));
      } catch (error) {
        env.failed = true;
        throw error;
      }
    },
    60_000,
  );
});

describe("the Python reference agent's fencing token", () => {
  let env: ShardlineTestEnv<SqliteController>;
  let stubs = "";

  beforeAll(async () => {
    stubs = await mkdtemp(join(tmpdir(), "shardline-fencing-stubs-"));
    generatePythonStubs(stubs);
    env = await ShardlineTestEnv.single({ name: "fencing-python" });
    const handlers = join(env.dir, "fencing_handlers.py");
    writeFileSync(
      handlers,
      [
        "def fencing_token(ctx):",
        "    ctx.assert_lease()",
        "    return str(ctx.fencing_token)",
        "",
        'HANDLERS = {"fencing-token": fencing_token}',
        "",
      ].join("\n"),
    );
    const agent = startPythonAgent(stubs, "py-1", ["--controller", env.controller.addresses, "--handlers", handlers]);
    // Stopped by close(), and its output printed should the test fail.
    env.allAgents.push(agent);
    await env.settingUp(() => env.agentsReady(1, "the Python agent to connect"));
  });

  afterAll(async () => {
    await env?.close();
    if (stubs !== "") await rm(stubs, { recursive: true, force: true });
  });

  it("is ctx.fencing_token, the token of the shard's assignment, and assert_lease passes while the lease holds", async () => {
    try {
      await env.admin.applyJob({ manifest: manifest("py-token-check", "fencing-token", "  shards: 2") });
      const assignments = await waitFor("both shards of py-token-check to be owned", async () => {
        const listed = (await env.admin.listAssignments({ job: "py-token-check" })).assignments;
        return listed.length === 2 ? listed : undefined;
      });
      const { executionIds } = await env.admin.triggerJob({ name: "py-token-check" });
      const done = await waitFor("the two runs of py-token-check to end", async () => {
        const runs = await Promise.all(executionIds.map(async (id) => (await env.admin.getExecution({ id })).execution));
        return runs.every((run) => run !== undefined && run.state !== ExecutionState.PENDING && run.state !== ExecutionState.RUNNING) ? (runs as Execution[]) : undefined;
      });
      expect(done.map((run) => [run.shard, run.state, run.result])).toEqual(
        assignments.map((a) => [a.shard, ExecutionState.SUCCEEDED, String(tokenOf(a.term, a.generation))]),
      );
    } catch (error) {
      env.failed = true;
      throw error;
    }
  });
});
