/**
 * A load-generator process for the benchmark: runs many real agents (the Agent class, each with
 * its own gRPC stream) in one process, and reports to its parent over the IPC channel. Started
 * with child_process.fork; the parent sends one `start` message, then asks for what it needs.
 *
 * Handlers:
 * - `noop` returns at once and records its lag: handler start minus the fire instant.
 * - `hold` runs until its signal aborts (a daemon shard) and reports each start at once, so the
 *   parent can time a failover from the kill to the shard running elsewhere.
 * - `record` reports its start and, unless aborted, its end after RECORD_WORK_MS of work, with the
 *   fire, the attempt and the term of the controller that welcomed its agent, so the parent can
 *   tell when a new leader's runs began and whether a (fire, shard) ran to its end twice.
 */
import { Agent } from "../agent/runtime/agent.js";
import { silentLogger } from "../shared/logging.js";
import { startTracing, type TracingHandle } from "../shared/telemetry/tracing.js";
import type { HandlerContext } from "../agent/sdk.js";

/** What the parent sends. */
export type LoadCommand =
  | { type: "start"; controller: string; ids: string[]; maxConcurrent?: number }
  /** The lags recorded so far; with `reset`, forgotten in the same step. */
  | { type: "lags"; reset?: boolean }
  | { type: "count" }
  /** Forgets lags and counts; with `progress`, sends a `count` report at the end of every turn in which runs finished. */
  | { type: "reset"; progress?: boolean }
  | { type: "holdings" }
  | { type: "drain" }
  /** Stops one agent at once, without a goodbye, as a crash would: if this process runs it. */
  | { type: "crash"; id: string }
  | { type: "stop" };

/** What this process sends back. */
export type LoadReport =
  | { type: "started"; agents: number }
  | { type: "lags"; lagsMs: number[]; finished: number }
  | { type: "run-start"; job: string; shard: number; agent: string; at: number }
  | { type: "run"; event: "start" | "end"; job: string; shard: number; fireTime: number; attempt: number; agent: string; term: number; at: number }
  | { type: "holdings"; total: number; perAgent: Record<string, number>; lastChangeAt: number }
  | { type: "count"; finished: number; lastFinishedAt: number }
  | { type: "drained" }
  | { type: "crashed"; found: boolean }
  | { type: "stopped" };

/** Wall-clock milliseconds with a fraction: lags are often below one millisecond. */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

let lags: number[] = [];
let finished = 0;
let lastFinishedAt = 0;
/** Whether the parent follows `finished` through `count` reports sent as runs finish, not asked for. */
let progress = false;
let progressDue = false;

/** One `count` report at the end of this turn, however many runs finish in it. */
function reportProgress(): void {
  if (!progress || progressDue) return;
  progressDue = true;
  setImmediate(() => {
    progressDue = false;
    send({ type: "count", finished, lastFinishedAt });
  });
}
const agents: Agent[] = [];
let tracing: TracingHandle | undefined;
const held = new Map<string, number>();
let lastChangeAt = 0;
/** The term of the controller that last welcomed each agent. */
const terms = new Map<string, number>();
/** How long a `record` run works: long enough to be cut by a fence, short beside a 1 s schedule. */
const RECORD_WORK_MS = 20;

function send(report: LoadReport): void {
  process.send?.(report);
}

const handlers = {
  noop(ctx: HandlerContext): void {
    lags.push(nowMs() - ctx.fireTime.getTime());
    finished++;
    lastFinishedAt = nowMs();
    reportProgress();
  },
  async hold(ctx: HandlerContext): Promise<void> {
    send({ type: "run-start", job: ctx.job, shard: ctx.shard, agent: ctx.agentId, at: nowMs() });
    await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
  },
  async record(ctx: HandlerContext): Promise<void> {
    // The term when the run started: a run is the doing of the leader whose dispatch it serves.
    const run = { job: ctx.job, shard: ctx.shard, fireTime: ctx.fireTime.getTime(), attempt: ctx.attempt, agent: ctx.agentId, term: terms.get(ctx.agentId) ?? 0 };
    send({ type: "run", event: "start", ...run, at: nowMs() });
    const finished = await new Promise<boolean>((resolve) => {
      if (ctx.signal.aborted) return resolve(false);
      const timer = setTimeout(() => resolve(true), RECORD_WORK_MS);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (!finished) throw new Error("aborted");
    send({ type: "run", event: "end", ...run, at: nowMs() });
  },
};

process.on("message", (command: LoadCommand) => {
  void handle(command);
});

async function handle(command: LoadCommand): Promise<void> {
  switch (command.type) {
    case "start":
      // As `shardline agent` does: on when the OTEL_* variables say so, else a no-op tracer.
      tracing = await startTracing({ serviceName: "shardline-agent", env: process.env });
      for (const id of command.ids) {
        const agent = new Agent({
          controller: command.controller,
          id,
          handlers,
          logger: silentLogger(),
          drainGraceMs: 5_000,
          ...(command.maxConcurrent === undefined ? {} : { maxConcurrent: command.maxConcurrent }),
        });
        agent.on("connected", (session) => terms.set(id, Number(session.term)));
        agent.on("assignments", (shards) => {
          held.set(id, shards.length);
          lastChangeAt = nowMs();
        });
        agents.push(agent);
        agent.start();
      }
      send({ type: "started", agents: agents.length });
      return;
    case "lags":
      send({ type: "lags", lagsMs: lags, finished });
      if (command.reset === true) lags = [];
      return;
    case "count":
      send({ type: "count", finished, lastFinishedAt });
      return;
    case "reset":
      lags = [];
      finished = 0;
      lastFinishedAt = 0;
      progress = command.progress === true;
      return;
    case "holdings": {
      let total = 0;
      for (const count of held.values()) total += count;
      send({ type: "holdings", total, perAgent: Object.fromEntries(held), lastChangeAt });
      return;
    }
    case "drain":
      await Promise.all(agents.map((agent) => agent.drain("benchmark")));
      send({ type: "drained" });
      return;
    case "crash": {
      const agent = agents.find((a) => a.id === command.id);
      if (agent !== undefined) {
        agents.splice(agents.indexOf(agent), 1);
        await agent.stop();
        held.delete(agent.id);
      }
      send({ type: "crashed", found: agent !== undefined });
      return;
    }
    case "stop":
      await Promise.all(agents.map((agent) => agent.stop()));
      await tracing?.shutdown();
      send({ type: "stopped" });
      process.exit(0);
  }
}

// The parent going away ends this process too: a benchmark never leaves load behind.
process.on("disconnect", () => process.exit(0));
