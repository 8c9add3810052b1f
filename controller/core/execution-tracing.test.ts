import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import type { ExecutionTracing, TraceCarrier, TracedExecution } from "./execution-tracing.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

/** The default disconnect grace, and the margin the controller adds to it. */
const GRACE = DEFAULT_CORE_CONFIG.disconnectGraceMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

const LEASE = DEFAULT_CORE_CONFIG.leaseTtlMs;

/** A fake trace port that hands out a context naming each execution, and remembers each call. */
class RecordingTracing implements ExecutionTracing {
  readonly calls: { execution: TracedExecution; replaces?: Readonly<TraceCarrier> }[] = [];

  contextFor(execution: TracedExecution, replaces?: Readonly<TraceCarrier>): TraceCarrier {
    this.calls.push({ execution: { ...execution }, ...(replaces === undefined ? {} : { replaces }) });
    return { traceparent: `ctx-of-${execution.id}` };
  }

  callFor(id: string): { execution: TracedExecution; replaces?: Readonly<TraceCarrier> } | undefined {
    return this.calls.find((call) => call.execution.id === id);
  }
}

function traced(spec = testSpec("job", { schedule: undefined })) {
  const tracing = new RecordingTracing();
  const h = new CoreHarness(DEFAULT_CORE_CONFIG, tracing);
  const a = h.connect("a", { handlers: ["work", "done"] });
  const b = h.connect("b", { handlers: ["work", "done"] });
  h.apply(spec);
  return { h, a, b, tracing };
}

describe("trace context of executions", () => {
  it("asks the port once for every execution of a fire, and sends and stores what it returns", () => {
    const { h, a, b, tracing } = traced();
    const { fireTime, executionIds } = h.core.triggerJob("job", [], undefined, h.now);
    h.flush();

    expect(tracing.calls.map((call) => call.execution)).toEqual(
      executionIds.map((id, shard) => ({ id, job: "job", shard, shardCount: 4, fireTime, attempt: 1, cause: "trigger", revision: 1 })),
    );
    expect(tracing.calls.every((call) => call.replaces === undefined)).toBe(true);
    const dispatched = [...a.dispatched, ...b.dispatched];
    expect(dispatched).toHaveLength(4);
    for (const context of dispatched) {
      expect(context.traceContext).toEqual({ traceparent: `ctx-of-${context.executionId}` });
      expect(h.execution(context.executionId)!.traceContext).toEqual({ traceparent: `ctx-of-${context.executionId}` });
    }
  });

  it("traces scheduled fires as they are made", () => {
    const { h, tracing } = traced(testSpec("job", { shards: 2 }));
    h.run(1000);
    const scheduled = tracing.calls.filter((call) => call.execution.cause === "schedule");
    expect(scheduled.length).toBeGreaterThanOrEqual(2);
    for (const { execution } of scheduled) expect(h.execution(execution.id)!.traceContext).toEqual({ traceparent: `ctx-of-${execution.id}` });
  });

  it("gives a failover run the context of the execution it replaces", () => {
    const { h, a, b, tracing } = traced();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    for (const id of onA) h.report("a", id, "running");

    h.crash("a");
    h.run(LEASE + 1000 + GRACE, ["a"]);

    for (const id of onA) {
      const rerun = id.replace(/\/1$/, "/2");
      expect(tracing.callFor(rerun)).toMatchObject({ execution: { id: rerun, attempt: 2, cause: "failover" }, replaces: { traceparent: `ctx-of-${id}` } });
      expect(b.dispatched.find((context) => context.executionId === rerun)!.traceContext).toEqual({ traceparent: `ctx-of-${rerun}` });
      expect(h.execution(rerun)!.traceContext).toEqual({ traceparent: `ctx-of-${rerun}` });
    }
  });

  it("gives a failover run the stored context of the execution it replaces after a controller restart", () => {
    const { h, a, tracing } = traced();
    h.core.triggerJob("job", [0], undefined, h.now);
    h.flush();
    const [first] = [...a.dispatchedIds(), ...h.agents.get("b")!.dispatchedIds()] as [string];
    const runner = a.dispatchedIds().includes(first) ? "a" : "b";
    h.report(runner, first, "running");

    // The controller restarts; the runner never comes back, the other agent does.
    h.start();
    const survivor = h.connect(runner === "a" ? "b" : "a", { handlers: ["work", "done"] });
    h.run(2 * LEASE + 1000 + GRACE, [runner]);

    const rerun = first.replace(/\/1$/, "/2");
    expect(tracing.callFor(rerun)?.replaces).toEqual({ traceparent: `ctx-of-${first}` });
    expect(survivor.dispatched.find((context) => context.executionId === rerun)!.traceContext).toEqual({ traceparent: `ctx-of-${rerun}` });
  });

  it("gives a retry the context of the attempt that failed", () => {
    const { h, a, b, tracing } = traced(testSpec("job", { schedule: undefined, retries: { limit: 1, backoffSeconds: 1 } }));
    h.core.triggerJob("job", [0], undefined, h.now);
    h.flush();
    const [first] = [...a.dispatchedIds(), ...b.dispatchedIds()] as [string];
    h.report(a.dispatchedIds().includes(first) ? "a" : "b", first, "failed");

    const retry = first.replace(/\/1$/, "/2");
    expect(tracing.callFor(retry)).toMatchObject({ execution: { attempt: 2, cause: "retry" }, replaces: { traceparent: `ctx-of-${first}` } });
    h.run(2000);
    expect([...a.dispatched, ...b.dispatched].find((context) => context.executionId === retry)!.traceContext).toEqual({
      traceparent: `ctx-of-${retry}`,
    });
  });

  it("traces a fire's completion hook run and carries its context to the agent", () => {
    const { h, a, b, tracing } = traced(testSpec("job", { schedule: undefined, shards: 2, onFireComplete: { handler: "done" } }));
    const { fireTime, executionIds } = h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    for (const id of executionIds) h.report(a.dispatchedIds().includes(id) ? "a" : "b", id, "succeeded");

    const hook = `job/${fireTime}/complete/1`;
    expect(tracing.callFor(hook)?.execution).toMatchObject({ shard: -1, cause: "fire-complete", fireTime });
    expect([...a.dispatched, ...b.dispatched].find((context) => context.executionId === hook)!.traceContext).toEqual({ traceparent: `ctx-of-${hook}` });
  });

  it("stores no context and sends an empty one when tracing is off", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    expect(a.dispatched[0]!.traceContext).toEqual({});
    expect(h.execution(a.dispatched[0]!.executionId)).not.toHaveProperty("traceContext");
  });
});
