import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ExecutionContextSchema, type ExecutionUpdate, type FireOutcomeSchema } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { LeaseLostError, type HandlerContext, type HandlerMap } from "../../sdk.js";
import { HandlerExecutor, renderResult } from "./handler-executor.js";

const FIRE = 1_700_000_000_000n;
/** Term 3, generation 7: term * 2^32 + generation. */
const TOKEN = (3n << 32n) + 7n;

/** The agent's lease as a test sets it: what the executor's leaseValid reads. */
interface TestLease {
  valid: boolean;
}

/**
 * Runs one execution and collects its reports; `terminal` resolves with the terminal one. The
 * lease is valid unless the test passes one it changes.
 */
function run(
  handlers: HandlerMap,
  init: { handler?: string; timeoutMs?: number; lease?: TestLease; fireOutcome?: MessageInitShape<typeof FireOutcomeSchema> } = {},
  maxResultBytes = 4096,
) {
  const lease = init.lease ?? { valid: true };
  const reports: ExecutionUpdate[] = [];
  let onTerminal!: (update: ExecutionUpdate) => void;
  const terminal = new Promise<ExecutionUpdate>((resolve) => (onTerminal = resolve));
  const warnings: string[] = [];
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: "warn" },
    {
      write: (line: string) => {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        lines.push(parsed);
        warnings.push(parsed.msg as string);
      },
    },
  );
  const executor = new HandlerExecutor({
    agentId: "agent-1",
    handlers,
    logger,
    leaseValid: () => lease.valid,
    maxResultBytes,
    wallClock: () => 42,
    report: (update) => {
      reports.push(update);
      if (update.state !== ExecutionState.RUNNING) onTerminal(update);
    },
  });
  const context = create(ExecutionContextSchema, {
    executionId: `billing/${FIRE}/3/1`,
    job: "billing",
    shard: 3,
    shardCount: 8,
    shardParameter: "shanghai",
    parameter: "month=current",
    fireTimeUnixMs: FIRE,
    attempt: 1,
    handler: init.handler ?? "work",
    timeoutMs: init.timeoutMs ?? 0,
    traceContext: { traceparent: "00-abc-def-01" },
    fencingToken: TOKEN,
    revision: 3n,
    ...(init.fireOutcome === undefined ? {} : { fireOutcome: init.fireOutcome }),
  });
  const execution = executor.create(context);
  execution.start();
  return { execution, reports, terminal, warnings, lines };
}

/** A promise and its resolver. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe("HandlerExecutor", () => {
  it("reports RUNNING, then SUCCEEDED with the result, and passes the whole context", async () => {
    let seen: HandlerContext | undefined;
    const { reports, terminal } = run({
      work: (ctx) => {
        seen = ctx;
        return { rows: 12 };
      },
    });
    const done = await terminal;
    expect(reports.map((r) => r.state)).toEqual([ExecutionState.RUNNING, ExecutionState.SUCCEEDED]);
    expect(done.result).toBe('{"rows":12}');
    expect(done.startedAtUnixMs).toBe(42n);
    expect(done.finishedAtUnixMs).toBe(42n);
    expect(seen).toMatchObject({
      job: "billing",
      shard: 3,
      shardCount: 8,
      shardParameter: "shanghai",
      parameter: "month=current",
      executionId: `billing/${FIRE}/3/1`,
      attempt: 1,
      agentId: "agent-1",
      fencingToken: TOKEN,
      revision: 3,
      traceContext: { traceparent: "00-abc-def-01" },
    });
    expect(seen?.fireTime).toEqual(new Date(Number(FIRE)));
    expect(seen?.signal.aborted).toBe(false);
  });

  it("binds the handler's ctx.log to the execution and the revision it runs", async () => {
    const { terminal, lines } = run({ work: (ctx) => ctx.log.warn({ rows: 3 }, "slow page") });
    await terminal;
    expect(lines).toEqual([expect.objectContaining({ msg: "slow page", rows: 3, executionId: `billing/${FIRE}/3/1`, job: "billing", shard: 3, revision: 3 })]);
  });

  it("reports a string result as it is", async () => {
    expect((await run({ work: async () => "done: 3 rows" }).terminal).result).toBe("done: 3 rows");
  });

  it("reports a thrown error as FAILED with its message", async () => {
    const sync = await run({
      work: () => {
        throw new Error("database is down");
      },
    }).terminal;
    expect(sync.state).toBe(ExecutionState.FAILED);
    expect(sync.error).toBe("database is down");
    const rejected = await run({ work: async () => Promise.reject(new Error("quota exceeded")) }).terminal;
    expect(rejected).toMatchObject({ state: ExecutionState.FAILED, error: "quota exceeded" });
  });

  it("fails an execution whose handler this agent does not have, without reporting RUNNING", async () => {
    const { reports, terminal } = run({ work: () => 1 }, { handler: "missing" });
    expect(await terminal).toMatchObject({ state: ExecutionState.FAILED, error: 'no handler named "missing" on this agent' });
    expect(reports).toHaveLength(1);
  });

  it("aborts the signal and reports TIMED_OUT after timeoutMs", async () => {
    const aborted = deferred<unknown>();
    const { terminal } = run(
      {
        work: (ctx) =>
          new Promise((_, reject) =>
            ctx.signal.addEventListener("abort", () => {
              aborted.resolve(ctx.signal.reason);
              reject(ctx.signal.reason);
            }),
          ),
      },
      { timeoutMs: 20 },
    );
    const done = await terminal;
    expect(done).toMatchObject({ state: ExecutionState.TIMED_OUT, error: "timed out after 20 ms" });
    expect(String(await aborted.promise)).toMatch(/timed out after 20 ms/);
  });

  it("cancels: aborts the signal and reports CANCELLED with the reason", async () => {
    const started = deferred<AbortSignal>();
    const { execution, terminal } = run({
      work: (ctx) => {
        started.resolve(ctx.signal);
        return new Promise((resolve) => ctx.signal.addEventListener("abort", () => resolve("stopped early")));
      },
    });
    const signal = await started.promise;
    execution.stop(ExecutionState.CANCELLED, "cancelled by an operator");
    expect(signal.aborted).toBe(true);
    // The handler resolved on abort; that must not turn the run into a success.
    expect(await terminal).toMatchObject({ state: ExecutionState.CANCELLED, error: "cancelled by an operator", result: "" });
    expect(execution.finished).toBe(true);
  });

  it("gives a handler that first reads ctx.signal after the stop a signal aborted with the stop's reason", async () => {
    let ctx: HandlerContext | undefined;
    const release = deferred();
    const { execution, terminal } = run({
      work: async (given) => {
        ctx = given;
        await release.promise;
      },
    });
    execution.stop(ExecutionState.CANCELLED, "cancelled by an operator");
    expect(await terminal).toMatchObject({ state: ExecutionState.CANCELLED });
    const signal = ctx!.signal;
    expect(signal.aborted).toBe(true);
    expect(String(signal.reason)).toMatch(/cancelled by an operator/);
    expect(ctx!.signal).toBe(signal);
    expect(() => ctx!.assertLease()).toThrow(LeaseLostError);
    release.resolve();
  });

  it("keeps ctx.signal and ctx.log in a spread of the context, the same as the context's own", async () => {
    let seen: { original: HandlerContext; spread: HandlerContext } | undefined;
    const { terminal } = run({
      work: (ctx) => {
        seen = { original: ctx, spread: { ...ctx } };
      },
    });
    await terminal;
    expect(seen!.spread.signal).toBe(seen!.original.signal);
    expect(seen!.spread.log).toBe(seen!.original.log);
    expect(Object.keys(seen!.original)).toEqual([
      "job",
      "shard",
      "shardCount",
      "shardParameter",
      "parameter",
      "fireTime",
      "executionId",
      "attempt",
      "signal",
      "agentId",
      "fencingToken",
      "revision",
      "assertLease",
      "traceContext",
      "log",
    ]);
    const replaced = new AbortController().signal;
    (seen!.original as { signal: AbortSignal }).signal = replaced;
    expect(seen!.original.signal).toBe(replaced);
  });

  it("tells a completion hook how every shard of its fire ended", async () => {
    let seen: HandlerContext | undefined;
    const { terminal } = run(
      { work: (ctx) => void (seen = ctx) },
      {
        fireOutcome: {
          shards: [
            { shard: 0, state: ExecutionState.SUCCEEDED, executionId: "billing/1/0/1" },
            { shard: 1, state: ExecutionState.FAILED, executionId: "billing/1/1/2", error: "disk full" },
          ],
        },
      },
    );
    await terminal;
    expect(seen?.fireOutcome).toEqual([
      { shard: 0, state: "succeeded", executionId: "billing/1/0/1" },
      { shard: 1, state: "failed", executionId: "billing/1/1/2", error: "disk full" },
    ]);
    expect(Object.keys(seen!).at(-1)).toBe("fireOutcome");
  });

  it("reports LOST when fenced", async () => {
    const { execution, terminal } = run({ work: (ctx) => new Promise((resolve) => ctx.signal.addEventListener("abort", resolve)) });
    execution.stop(ExecutionState.LOST, "fenced: no heartbeat ack within the lease");
    expect(await terminal).toMatchObject({ state: ExecutionState.LOST, error: "fenced: no heartbeat ack within the lease" });
  });

  it("reports TIMED_OUT at the deadline for a handler that ignores its signal, and logs when it settles later", async () => {
    const release = deferred();
    const settled = deferred();
    const { reports, terminal, warnings } = run(
      {
        work: async () => {
          await release.promise;
          settled.resolve();
          return "too late";
        },
      },
      { timeoutMs: 10 },
    );
    expect(await terminal).toMatchObject({ state: ExecutionState.TIMED_OUT });
    release.resolve();
    await settled.promise;
    await new Promise((resolve) => setImmediate(resolve));
    expect(reports.map((r) => r.state)).toEqual([ExecutionState.RUNNING, ExecutionState.TIMED_OUT]);
    expect(warnings.some((w) => /after it was aborted/.test(w))).toBe(true);
  });

  describe("assertLease", () => {
    /** Thrown by `fn`, or undefined when it returned. */
    const thrownBy = (fn: () => void): unknown => {
      try {
        fn();
        return undefined;
      } catch (error) {
        return error;
      }
    };

    it("lets the handler act while the lease holds and the run goes on", async () => {
      const done = await run({
        work: (ctx) => {
          ctx.assertLease();
          return "written";
        },
      }).terminal;
      expect(done).toMatchObject({ state: ExecutionState.SUCCEEDED, result: "written" });
    });

    it("refuses once the lease lapsed by the agent's clock, though the run was not aborted (its disconnect grace), and the refusal reports the run LOST", async () => {
      const lease: TestLease = { valid: true };
      const effects: string[] = [];
      const paused = deferred<AbortSignal>();
      const resume = deferred();
      const { reports, terminal } = run(
        {
          work: async (ctx) => {
            ctx.assertLease();
            effects.push("before the pause");
            paused.resolve(ctx.signal);
            await resume.promise;
            ctx.assertLease();
            effects.push("after the pause");
          },
        },
        { lease },
      );
      const signal = await paused.promise;
      lease.valid = false;
      resume.resolve();
      const done = await terminal;
      expect(effects).toEqual(["before the pause"]);
      expect(signal.aborted).toBe(false);
      expect(reports.map((r) => r.state)).toEqual([ExecutionState.RUNNING, ExecutionState.LOST]);
      expect(done.error).toBe(`execution billing/${FIRE}/3/1: the agent's lease lapsed, so shard billing/3 may belong to another agent now (fencing token ${TOKEN})`);
    });

    it("throws a LeaseLostError that names the execution, its fencing token and why", async () => {
      const lease: TestLease = { valid: true };
      const seen = deferred<HandlerContext>();
      const { execution, terminal } = run({ work: (ctx) => new Promise(() => seen.resolve(ctx)) }, { lease });
      const ctx = await seen.promise;
      lease.valid = false;
      const lapsed = thrownBy(() => ctx.assertLease());
      expect(lapsed).toBeInstanceOf(LeaseLostError);
      expect(lapsed).toMatchObject({ name: "ShardlineError", code: "failed-precondition", executionId: `billing/${FIRE}/3/1`, fencingToken: TOKEN, reason: "lease-lapsed" });
      execution.stop(ExecutionState.CANCELLED, "cancelled by an operator");
      await terminal;
      // Aborted and lapsed: the abort is what the handler is told.
      expect(thrownBy(() => ctx.assertLease())).toMatchObject({ reason: "aborted", message: `execution billing/${FIRE}/3/1 aborted: cancelled by an operator` });
    });

    it("refuses once the run was aborted, with the lease still valid", async () => {
      const seen = deferred<HandlerContext>();
      const { execution, terminal } = run({ work: (ctx) => new Promise(() => seen.resolve(ctx)) });
      const ctx = await seen.promise;
      expect(thrownBy(() => ctx.assertLease())).toBeUndefined();
      execution.stop(ExecutionState.LOST, "fenced: no heartbeat ack within the lease");
      expect(await terminal).toMatchObject({ state: ExecutionState.LOST });
      const refused = thrownBy(() => ctx.assertLease());
      expect(refused).toBeInstanceOf(LeaseLostError);
      expect(refused).toMatchObject({ reason: "aborted", fencingToken: TOKEN });
      expect((refused as Error).cause).toBe(ctx.signal.reason);
    });

    it("reports LOST for a refusal the handler wrapped, and FAILED for any other error", async () => {
      const lease: TestLease = { valid: false };
      const wrapped = await run(
        {
          work: (ctx) => {
            try {
              ctx.assertLease();
            } catch (error) {
              throw new Error("could not write the rollup", { cause: error });
            }
          },
        },
        { lease },
      ).terminal;
      expect(wrapped).toMatchObject({ state: ExecutionState.LOST, error: "could not write the rollup" });
      const forged = await run({ work: () => Promise.reject(new LeaseLostError("not this run's", "other/1/0/1", 1n, "lease-lapsed")) }).terminal;
      expect(forged).toMatchObject({ state: ExecutionState.FAILED, error: "not this run's" });
    });

    it("leaves the choice to the handler: one that catches the refusal ends as it returns", async () => {
      const done = await run(
        {
          work: (ctx) => {
            try {
              ctx.assertLease();
              return "written";
            } catch (error) {
              if (error instanceof LeaseLostError) return `skipped: ${error.reason}`;
              throw error;
            }
          },
        },
        { lease: { valid: false } },
      ).terminal;
      expect(done).toMatchObject({ state: ExecutionState.SUCCEEDED, result: "skipped: lease-lapsed" });
    });
  });

  it("truncates results to maxResultBytes", async () => {
    const done = await run({ work: () => "x".repeat(10_000) }, {}, 4096).terminal;
    expect(done.result).toHaveLength(4096);
  });
});

describe("renderResult", () => {
  it("renders nothing as empty, strings as is, other values as JSON", () => {
    expect(renderResult(undefined)).toBe("");
    expect(renderResult("plain")).toBe("plain");
    expect(renderResult([1, 2])).toBe("[1,2]");
    expect(renderResult({ n: 5n })).toBe('{"n":"5"}');
  });

  it("falls back to String() for values JSON cannot hold", () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(renderResult(cyclic)).toBe("[object Object]");
  });
});
