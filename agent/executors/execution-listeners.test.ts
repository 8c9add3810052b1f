import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ExecutionContextSchema, type ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { ExecutionListeners, ExecutionOutcome, HandlerContext, HandlerMap } from "../sdk.js";
import { ExecutionListening } from "./execution-listeners.js";
import type { Executor, ReportOptions } from "./execution-run.js";
import { HandlerExecutor } from "./handler/handler-executor.js";
import { ScriptExecutor } from "./script/script-executor.js";

const FIRE = 1_700_000_000_000n;

type ContextInit = Pick<MessageInitShape<typeof ExecutionContextSchema>, "handler" | "timeoutMs" | "script" | "fencingToken" | "revision"> & {
  /** The agent's lease as the run's assertLease reads it; valid unless given. */
  leaseValid?: () => boolean;
};

/** A promise and its resolver. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * Runs one execution through listened handler and script executors, as the agent wires them.
 * `after` resolves with what afterExecution was told; `terminal` with the terminal report.
 */
function run(listeners: ExecutionListeners, handlers: HandlerMap, init: ContextInit = {}) {
  const reports: ExecutionUpdate[] = [];
  const terminal = deferred<ExecutionUpdate>();
  const after = deferred<{ ctx: HandlerContext; outcome: ExecutionOutcome }>();
  const errors: string[] = [];
  const logger = pino({ level: "error" }, { write: (line: string) => errors.push(JSON.parse(line).msg as string) });
  const listening = new ExecutionListening({
    listeners: {
      ...listeners,
      afterExecution: async (ctx, outcome) => {
        try {
          await listeners.afterExecution?.(ctx, outcome);
        } finally {
          after.resolve({ ctx, outcome });
        }
      },
    },
    agentId: "agent-1",
    leaseValid: init.leaseValid ?? (() => true),
    logger,
    maxResultBytes: 4096,
    report: (update) => {
      reports.push(update);
      if (update.state !== ExecutionState.RUNNING) terminal.resolve(update);
    },
  });
  const reporting: ReportOptions = { maxResultBytes: 4096, report: listening.report };
  const executor: Executor = init.script
    ? listening.wrap(new ScriptExecutor({ ...reporting, agentId: "agent-1", allowed: [process.execPath], logger }))
    : listening.wrap(new HandlerExecutor({ ...reporting, agentId: "agent-1", leaseValid: init.leaseValid ?? (() => true), handlers, logger }));
  const execution = executor.create(
    create(ExecutionContextSchema, {
      executionId: `billing/${FIRE}/3/1`,
      job: "billing",
      shard: 3,
      shardCount: 8,
      fireTimeUnixMs: FIRE,
      attempt: 1,
      handler: init.handler ?? (init.script ? "" : "work"),
      timeoutMs: init.timeoutMs ?? 0,
      fencingToken: init.fencingToken ?? 0n,
      revision: init.revision ?? 0n,
      ...(init.script ? { script: init.script } : {}),
    }),
  );
  execution.start();
  return { execution, reports, terminal: terminal.promise, after: after.promise, errors };
}

const states = (reports: ExecutionUpdate[]) => reports.map((r) => r.state);

describe("ExecutionListening", () => {
  it("runs beforeExecution, then the handler, then afterExecution with the outcome", async () => {
    const order: string[] = [];
    const { reports, after } = run(
      {
        beforeExecution: (ctx) => void order.push(`before ${ctx.executionId}`),
        afterExecution: (_ctx, outcome) => void order.push(`after ${outcome.state}`),
      },
      { work: (ctx) => (order.push(`handler ${ctx.shard}`), { rows: 12 }) },
    );
    const { ctx, outcome } = await after;
    expect(order).toEqual([`before billing/${FIRE}/3/1`, "handler 3", "after succeeded"]);
    expect(outcome).toEqual({ state: "succeeded", result: { rows: 12 }, durationMs: expect.any(Number) as number });
    expect(outcome.durationMs).toBeGreaterThanOrEqual(0);
    expect(ctx).toMatchObject({ job: "billing", shard: 3, shardCount: 8, attempt: 1, agentId: "agent-1" });
    expect(states(reports)).toEqual([ExecutionState.RUNNING, ExecutionState.SUCCEEDED]);
    expect(reports[1]?.result).toBe('{"rows":12}');
  });

  it("fails the execution with the message of a throwing beforeExecution, and never runs the handler", async () => {
    let ran = false;
    const { reports, terminal, after } = run(
      {
        beforeExecution: () => {
          throw new Error("no database connection");
        },
      },
      { work: () => (ran = true) },
    );
    expect((await terminal).error).toBe("beforeExecution: no database connection");
    expect((await after).outcome).toMatchObject({ state: "failed", error: "beforeExecution: no database connection" });
    expect(states(reports)).toEqual([ExecutionState.RUNNING, ExecutionState.FAILED]);
    expect(ran).toBe(false);
  });

  it("waits for an asynchronous beforeExecution, and fails the execution when it rejects", async () => {
    const gate = deferred();
    let ran = false;
    const passing = run({ beforeExecution: () => gate.promise }, { work: () => (ran = true) });
    await Promise.resolve();
    expect(ran).toBe(false);
    expect(states(passing.reports)).toEqual([ExecutionState.RUNNING]);
    gate.resolve();
    expect((await passing.terminal).state).toBe(ExecutionState.SUCCEEDED);
    expect(ran).toBe(true);
    expect(states(passing.reports)).toEqual([ExecutionState.RUNNING, ExecutionState.SUCCEEDED]);

    ran = false;
    const rejecting = run({ beforeExecution: () => Promise.reject(new Error("quota exceeded")) }, { work: () => (ran = true) });
    expect((await rejecting.terminal).error).toBe("beforeExecution: quota exceeded");
    expect(ran).toBe(false);
  });

  it("gives both hooks, and the handler, the revision the run executes", async () => {
    const seen: number[] = [];
    const listeners: ExecutionListeners = { beforeExecution: (ctx) => void seen.push(ctx.revision) };
    const done = run(listeners, { work: (ctx) => seen.push(ctx.revision) }, { revision: 12n });
    expect(await done.terminal).toMatchObject({ state: ExecutionState.SUCCEEDED });
    expect((await done.after).ctx.revision).toBe(12);
    expect(seen).toEqual([12, 12]);
  });

  it("gives the hooks the run's fencing token and assertLease: a beforeExecution it refuses ends the run LOST, and the handler never runs", async () => {
    const token = 4_294_967_303n;
    let leaseValid = true;
    const ran: string[] = [];
    const listeners: ExecutionListeners = { beforeExecution: (ctx) => ctx.assertLease() };
    const held = run(listeners, { work: () => ran.push("while the lease held") }, { fencingToken: token, leaseValid: () => leaseValid });
    expect(await held.terminal).toMatchObject({ state: ExecutionState.SUCCEEDED });
    expect((await held.after).ctx.fencingToken).toBe(token);

    leaseValid = false;
    const lapsed = run(listeners, { work: () => ran.push("after the lapse") }, { fencingToken: token, leaseValid: () => leaseValid });
    const done = await lapsed.terminal;
    expect(done.state).toBe(ExecutionState.LOST);
    expect(done.error).toMatch(/^beforeExecution: execution billing\/1700000000000\/3\/1: the agent's lease lapsed/);
    expect((await lapsed.after).outcome.state).toBe("lost");
    expect(ran).toEqual(["while the lease held"]);
  });

  it("reports a stop during beforeExecution at once, aborts its signal, and never runs the handler", async () => {
    const entered = deferred<HandlerContext>();
    let ran = false;
    const { execution, terminal, after } = run(
      { beforeExecution: (ctx) => (entered.resolve(ctx), new Promise<void>(() => {})) },
      { work: () => (ran = true) },
    );
    const ctx = await entered.promise;
    execution.stop(ExecutionState.CANCELLED, "cancelled by an operator");
    expect(await terminal).toMatchObject({ state: ExecutionState.CANCELLED, error: "cancelled by an operator" });
    expect(ctx.signal.aborted).toBe(true);
    expect((await after).outcome).toMatchObject({ state: "cancelled", error: "cancelled by an operator" });
    expect(ran).toBe(false);
    expect(execution.finished).toBe(true);
  });

  it("times out a beforeExecution that outlasts the job's timeout", async () => {
    const { terminal } = run({ beforeExecution: () => new Promise<void>(() => {}) }, { work: () => 1 }, { timeoutMs: 20 });
    expect(await terminal).toMatchObject({ state: ExecutionState.TIMED_OUT, error: "timed out after 20 ms in beforeExecution" });
  });

  it("tells afterExecution a handler's failure, without a result", async () => {
    const { after } = run({}, { work: () => Promise.reject(new Error("ledger locked")) });
    const { outcome } = await after;
    expect(outcome).toMatchObject({ state: "failed", error: "ledger locked" });
    expect("result" in outcome).toBe(false);
  });

  it("keeps the outcome when afterExecution throws, and logs it", async () => {
    const { terminal, after, errors } = run(
      {
        afterExecution: () => {
          throw new Error("metrics down");
        },
      },
      { work: () => "done" },
    );
    expect((await terminal).state).toBe(ExecutionState.SUCCEEDED);
    await after.catch(() => {});
    await expect.poll(() => errors).toContain("afterExecution failed; the execution's outcome stands");
  });

  it("runs the hooks around a script execution too, with its stdout as the result", async () => {
    const order: string[] = [];
    const { reports, after } = run(
      {
        beforeExecution: async () => void order.push("before"),
        afterExecution: (_ctx, outcome) => void order.push(`after ${outcome.state}`),
      },
      {},
      { script: { command: process.execPath, args: ["-e", "process.stdout.write('exported 7 rows\\n')"], killGraceMs: 1000 } },
    );
    const { outcome } = await after;
    expect(order).toEqual(["before", "after succeeded"]);
    expect(outcome).toMatchObject({ state: "succeeded", result: "exported 7 rows" });
    // RUNNING once: beforeExecution's, not repeated when the process starts.
    expect(states(reports)).toEqual([ExecutionState.RUNNING, ExecutionState.SUCCEEDED]);
  });
});
