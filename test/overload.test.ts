import { status, type StatusObject } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { ShardlineError } from "../shared/errors.js";
import { AdminService, type WatchEventsResponse as Event } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentService } from "../shared/gen/shardline/v1/agent_service_pb.js";
import { AgentState, type Execution, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { type Client, createClient, DEFAULT_MAX_QUEUED, type GrpcStatus } from "../shared/grpc/index.js";
import { DEFAULT_MAX_CONCURRENT_CALLS } from "../shared/grpc/server.js";
import { type AdminClient, waitFor } from "./harness/processes.js";
import { RECORDING_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";

const AGENT_ENV = { SHARDLINE_TEST_WORK_MS: "20" };

/** A job of `shards` shards firing every second (default misfire and overlap: a late run misfires). */
function everySecond(name: string, shards: number, extra = ""): string {
  return `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: ${name}}
spec:
  schedule: "* * * * * *"
  shards: ${shards}
  handler: work${extra}
`;
}

/** The controller's log lines, kept as parsed JSON, with a way to await one. */
class LogLines {
  readonly entries: Record<string, unknown>[] = [];
  #waiters: (() => void)[] = [];
  readonly logger = pino(
    { level: "info" },
    {
      write: (line: string) => {
        this.entries.push(JSON.parse(line) as Record<string, unknown>);
        for (const wake of this.#waiters.splice(0)) wake();
      },
    },
  );

  find(match: (entry: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
    return this.entries.find(match);
  }

  /** Resolves with the first line that matches, or fails after `timeoutMs` naming what it awaited. */
  async next(what: string, match: (entry: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return within(timeoutMs, what, async () => {
      for (;;) {
        const found = this.find(match);
        if (found !== undefined) return found;
        await new Promise<void>((resolve) => this.#waiters.push(resolve));
      }
    });
  }
}

/** Runs `task`, failing after `timeoutMs` with what it was waiting for. */
async function within<T>(timeoutMs: number, what: string, task: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([task(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The controller's events from now on, collected until stop(). */
function watchEvents(admin: AdminClient): { events: Event[]; stop: () => void } {
  const events: Event[] = [];
  const abort = new AbortController();
  void (async () => {
    try {
      for await (const event of admin.watchEvents({}, { signal: abort.signal })) events.push(event);
    } catch {
      // Ends with the abort below, or with the controller.
    }
  })();
  return { events, stop: () => abort.abort() };
}

const settled = (e: Execution): boolean => e.state !== ExecutionState.PENDING && e.state !== ExecutionState.RUNNING;
const show = (e: Execution): string => `${e.id} ${ExecutionState[e.state]} on ${e.agent || "no agent"}${e.error ? `: ${e.error}` : ""}`;

/** The whole seconds in [from, until): the instants of a job firing every second. */
function secondsIn(from: number, until: number): number[] {
  const seconds: number[] = [];
  for (let t = Math.ceil(from / 1000) * 1000; t < until; t += 1000) seconds.push(t);
  return seconds;
}

/** Waits until every execution of `job` fired in [from, until) has finished, and returns them. */
async function settledFires(admin: AdminClient, job: string, from: number, until: number): Promise<Execution[]> {
  return waitFor(`the fires of ${job} from ${new Date(from).toISOString()} to ${new Date(until).toISOString()} to settle`, async () => {
    const executions = (await admin.listExecutions({ job, limit: 1000, sinceUnixMs: BigInt(from), untilUnixMs: BigInt(until) })).executions;
    return executions.every(settled) ? executions : undefined;
  });
}

describe("overload", () => {
  let env: ShardlineTestEnv | undefined;
  afterEach(async (context) => {
    if (env !== undefined && context.task.result?.state === "fail") env.failed = true;
    await env?.close();
    env = undefined;
  });

  it("disconnects an agent that stops reading once its send queue is full, and the other agent misses no fire", async () => {
    const logs = new LogLines();
    const world = await ShardlineTestEnv.inProcess({
      name: "overload",
      handlers: RECORDING_HANDLERS,
      agentEnv: AGENT_ENV,
      controller: { listen: "127.0.0.1:0", http: "127.0.0.1:0", store: "sqlite::memory:", logger: logs.logger },
      log: () => logs.entries.map((e) => JSON.stringify(e)).join("\n"),
    });
    env = world;
    const { admin } = world;
    const controller = world.controller.running;
    const agent = world.startAgent("agent-a");
    const watch = watchEvents(admin);
    world.defer(watch.stop);

    // No disconnect grace: what was dispatched to the stuck agent is lost with its lease, as the
    // checks below say (with one, it would be unknown for the grace first: test/disconnect-grace).
    await admin.applyJob({ manifest: everySecond("sweep", 4, "\n  disconnectGraceSeconds: 0") });
    // A fire sent out (a quarter second ahead) before agent-a connected misfires with no owner,
    // which a slow start on a busy machine can make the case of a fire in the window below; the
    // window starts after a fire placed once agent-a was there.
    const connected = await waitFor("agent-a to connect", () => agent.logged("connected", 0));
    await waitFor("a fire after agent-a connected to succeed on every shard", async () => {
      const executions = (await admin.listExecutions({ job: "sweep", state: ExecutionState.SUCCEEDED, sinceUnixMs: BigInt(connected.time + 1000) })).executions;
      return new Set(executions.map((e) => e.shard)).size === 4 ? true : undefined;
    });

    // A raw client that says Hello, offering the same handler, and never reads: it registers no
    // message listener, so HTTP/2 flow control pushes back on the controller once its window is full.
    const stuckClient: Client<typeof AgentService> = createClient(AgentService, controller.grpcAddress);
    world.defer(() => stuckClient.close());
    const stuck = stuckClient.connect();
    stuck.send({ kind: { case: "hello", value: { agentId: "stuck", handlers: ["work"], capacity: 1 } } });
    // It heartbeats as an agent does (its writer works, only its reader is stuck), so its lease
    // alone would never give it away.
    let seq = 0;
    const heartbeat = (): boolean => stuck.send({ kind: { case: "heartbeat", value: { seq: BigInt(++seq) } } });
    const heartbeats = setInterval(heartbeat, 250);
    world.defer(() => clearInterval(heartbeats));
    const windowStart = Date.now();
    const owners = await waitFor("the stuck agent to be given half the shards", async () => {
      const assignments = (await admin.listAssignments({ job: "sweep" })).assignments;
      const mine = assignments.filter((a) => a.agent === "stuck" && !a.revoking);
      return mine.length === 2 && assignments.length === 4 ? new Map(assignments.map((a) => [a.shard, a.agent])) : undefined;
    });
    const stuckShards = [...owners].filter(([, a]) => a === "stuck").map(([s]) => s);
    const keptShards = [...owners].filter(([, a]) => a === "agent-a").map(([s]) => s).sort();
    await waitFor("a fire to be dispatched to the stuck agent", async () =>
      (await admin.listExecutions({ job: "sweep", agent: "stuck" })).executions.length > 0 ? true : undefined,
    );

    // Then it heartbeats as fast as it can: each heartbeat makes the controller queue an ack that
    // it never reads.
    clearInterval(heartbeats);
    const reason = /^agent stuck is not reading its stream: 10000 messages wait in its send queue, the controller's limit/;
    const disconnect = logs.next("the controller to disconnect the stuck agent", (e) => typeof e.msg === "string" && reason.test(e.msg));
    let disconnected = false;
    void disconnect.then(() => (disconnected = true), () => {});
    const floodUntil = Date.now() + 30_000;
    while (!disconnected && seq < 3 * DEFAULT_MAX_QUEUED && Date.now() < floodUntil) {
      for (let i = 0; i < 500; i++) heartbeat();
      await new Promise((resolve) => setImmediate(resolve));
    }
    const line = await disconnect;
    expect(line).toMatchObject({ level: 40, agent: "stuck", maxQueued: DEFAULT_MAX_QUEUED, queued: DEFAULT_MAX_QUEUED });

    // Handled like any agent that lost its stream: fenced until its lease expires, then its shards move.
    await waitFor("the stuck agent's shards to move to agent-a", async () => {
      const assignments = (await admin.listAssignments({ job: "sweep" })).assignments;
      return assignments.length === 4 && assignments.every((a) => a.agent === "agent-a" && !a.revoking) ? true : undefined;
    });
    expect((await admin.listAgents({})).agents.map((a) => [a.id, a.state])).toEqual([["agent-a", AgentState.READY]]);
    const about = (e: Event): boolean => e.agent === "stuck" || (e.type === "shard.assigned" && stuckShards.includes(e.shard));
    // The watch delivers the events a little behind the listing that showed the move (a stream
    // hands over a bounded number of messages per turn): wait for the move's assignments there.
    const order = await waitFor("the watch to deliver the stuck agent's lease expiry and its shards' moves", () => {
      const seen = watch.events.filter(about).map((e) => (e.type === "shard.assigned" ? `${e.type} ${e.agent}` : e.type));
      const at = seen.indexOf("agent.lease-expired");
      return at >= 0 && seen.slice(at).filter((e) => e === "shard.assigned agent-a").length >= 2 ? seen : undefined;
    });
    const lost = order.indexOf("agent.lost");
    const expired = order.indexOf("agent.lease-expired");
    expect(lost).toBeGreaterThanOrEqual(0);
    expect(expired).toBeGreaterThan(lost);
    expect(order.slice(expired).filter((e) => e === "shard.assigned agent-a")).toHaveLength(2);
    expect(order.slice(lost, expired).filter((e) => e.startsWith("shard.assigned"))).toEqual([]);

    // Every shard runs again on agent-a after the move.
    const movedAt = Date.now();
    await waitFor("a fire after the move to succeed on every shard", async () => {
      const executions = (await admin.listExecutions({ job: "sweep", sinceUnixMs: BigInt(movedAt), state: ExecutionState.SUCCEEDED })).executions;
      return new Set(executions.map((e) => e.shard)).size === 4 ? true : undefined;
    });
    const window = await settledFires(admin, "sweep", windowStart, movedAt);

    // agent-a ran every fire of its own shards all along: none missing, none misfired.
    const kept = window.filter((e) => keptShards.includes(e.shard));
    expect(kept.filter((e) => e.state !== ExecutionState.SUCCEEDED || e.agent !== "agent-a").map(show)).toEqual([]);
    for (const second of secondsIn(windowStart, movedAt)) {
      expect(kept.filter((e) => Number(e.fireTimeUnixMs) === second).map((e) => e.shard).sort(), `fire ${second}`).toEqual(keptShards);
    }
    // What was dispatched to the stuck agent was lost with its lease and run again on agent-a;
    // its shards' other fires waited or misfired, each accounted for.
    const sentToStuck = window.filter((e) => e.agent === "stuck");
    expect(sentToStuck.length).toBeGreaterThan(0);
    for (const execution of sentToStuck) {
      expect(show(execution)).toMatch(/ LOST on stuck: agent stuck's lease expired/);
      const rerun = window.find((e) => e.shard === execution.shard && e.fireTimeUnixMs === execution.fireTimeUnixMs && e.attempt === execution.attempt + 1);
      expect(rerun && show(rerun)).toMatch(/ SUCCEEDED on agent-a/);
    }

    // Once it reads again, it gets what was already on its way, then the status and the reason.
    const closed = new Promise<GrpcStatus>((resolve) => stuck.onClose(resolve));
    stuck.onMessage(() => {});
    const ended = await within(20_000, "the stuck client to receive its status", () => closed);
    expect(ended.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(ended.details).toMatch(reason);
  });

  it("fires every second on time through a flood of admin calls", async () => {
    const world = await ShardlineTestEnv.single({ name: "overload", handlers: RECORDING_HANDLERS, agentEnv: AGENT_ENV });
    env = world;
    const { admin, controller } = world;
    for (const id of ["agent-a", "agent-b"]) world.startAgent(id);

    // 10,000 finished executions, so that a ListExecutions at the largest limit is as heavy as it gets.
    await admin.applyJob({ manifest: everySecond("history", 1000).replace(/ {2}schedule: .*\n/, "") });
    await waitFor("both agents", async () => ((await admin.listAgents({})).agents.length === 2 ? true : undefined));
    for (let i = 0; i < 10; i++) await admin.triggerJob({ name: "history" });
    await waitFor("the history to fill", async () => {
      const executions = (await admin.listExecutions({ job: "history", limit: 10_000, state: ExecutionState.SUCCEEDED })).executions;
      return executions.length === 10_000 ? true : undefined;
    });

    await admin.applyJob({ manifest: everySecond("steady", 4) });
    await waitFor("steady's shards on both agents and a first fire of each", async () => {
      const owners = new Set((await admin.listAssignments({ job: "steady" })).assignments.map((a) => a.agent));
      const ran = (await admin.listExecutions({ job: "steady", state: ExecutionState.SUCCEEDED })).executions;
      return owners.size === 2 && new Set(ran.map((e) => e.shard)).size === 4 ? true : undefined;
    });

    // Concurrent admin calls, bounded in count and time: 2,000 callers, each calling again as
    // soon as it has its answer; 16 of them ask for the largest listing, the rest send cheap
    // reads and writes. That is far more than the controller serves at once
    // (DEFAULT_MAX_CONCURRENT_CALLS) and than one caller may make (--admin-rate-limit), so many are
    // refused: an answer too, and the only other one allowed here.
    const FLOOD_MS = 5_000;
    const MAX_CALLS = 20_000;
    const WORKERS = 2_000;
    const BIG_LISTERS = 16;
    const clients = Array.from({ length: 8 }, () => createClient(AdminService, controller.address));
    world.defer(() => clients.forEach((c) => c.close()));
    type Call = (client: Client<typeof AdminService>, i: number) => Promise<unknown>;
    const bigList: Call = (c) => c.listExecutions({ limit: 10_000 });
    const cheap: Record<string, Call> = {
      listExecutions: (c) => c.listExecutions({ job: "steady" }),
      listJobs: (c) => c.listJobs({}),
      getJob: (c) => c.getJob({ name: "steady" }),
      listAgents: (c) => c.listAgents({}),
      applyJob: (c, i) => c.applyJob({ manifest: everySecond("other", 2).replace(/ {2}schedule: .*\n/, `  parameter: "p${i % 7}"\n`) }),
    };
    const shardsBefore = (await admin.listAssignments({ job: "steady" })).assignments.map((a) => `${a.shard} ${a.agent} (${a.term}, ${a.generation})`).sort();
    const succeeded = new Map<string, number>();
    const refused: string[] = [];
    const failed: string[] = [];
    let calls = 0;
    const floodStart = Date.now();
    const floodEnd = floodStart + FLOOD_MS;
    await Promise.all(
      Array.from({ length: WORKERS }, async (_, worker) => {
        const client = clients[worker % clients.length]!;
        while (calls < MAX_CALLS && Date.now() < floodEnd) {
          const i = calls++;
          const [kind, call] = worker < BIG_LISTERS ? ["bigList", bigList] : Object.entries(cheap)[i % 5]!;
          try {
            await call(client, i);
            succeeded.set(kind, (succeeded.get(kind) ?? 0) + 1);
          } catch (error) {
            const { cause, message } = error as ShardlineError;
            if ((cause as StatusObject | undefined)?.code === status.RESOURCE_EXHAUSTED) refused.push(message);
            else failed.push(`${kind}: ${String(error)}`);
          }
        }
      }),
    );
    const floodOver = Date.now();

    expect(failed).toEqual([]);
    const limit = `shardline.v1.AdminService is already serving ${DEFAULT_MAX_CONCURRENT_CALLS} calls, its limit of calls at once (fixed: no flag raises it); retry after a backoff`;
    // Past the calls at once, or past the per-caller rate limit (--admin-rate-limit): both refusals.
    const rateLimited = /^\w+: too many calls from 127\.0\.0\.1; retry in \d+ ms \(the controller's --admin-rate-limit\)$/;
    expect(refused.filter((message) => message !== limit && !rateLimited.test(message))).toEqual([]);
    expect([...succeeded.keys()].sort()).toEqual(["applyJob", "bigList", "getJob", "listAgents", "listExecutions", "listJobs"]);

    // The agents kept their leases all along: neither fenced itself, and no shard moved.
    const fenced = [...world.agents.values()].flatMap((a) => a.logs().filter((e) => e.msg.startsWith("fenced")).map((e) => `${a.name}: ${e.msg}`));
    expect(fenced).toEqual([]);
    const shardsAfter = (await admin.listAssignments({ job: "steady" })).assignments.map((a) => `${a.shard} ${a.agent} (${a.term}, ${a.generation})`).sort();
    expect(shardsAfter).toEqual(shardsBefore);

    // Every fire during the flood was dispatched and succeeded: none missing, none misfired or lost.
    const window = await settledFires(admin, "steady", floodStart, floodOver);
    expect(window.filter((e) => e.state !== ExecutionState.SUCCEEDED || e.attempt !== 1).map(show)).toEqual([]);
    for (const second of secondsIn(floodStart, floodOver)) {
      expect(window.filter((e) => Number(e.fireTimeUnixMs) === second).map((e) => e.shard).sort(), `fire ${second}`).toEqual([0, 1, 2, 3]);
    }
  });
});
