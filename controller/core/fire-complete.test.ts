import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import type { ExecutionContext } from "./messages.js";
import { CoreHarness, type ModelAgent, testSpec } from "./testing/core-harness.js";

/** The default disconnect grace, and the margin the controller adds to it. */
const GRACE = DEFAULT_CORE_CONFIG.disconnectGraceMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

const WITH_HOOK = { schedule: undefined, shards: 3, onFireComplete: { handler: "done" } };

function completionRuns(...agents: ModelAgent[]): ExecutionContext[] {
  return agents.flatMap((agent) => agent.dispatched.filter((context) => context.fireOutcome !== undefined));
}

function twoAgents(overrides: Parameters<typeof testSpec>[1] = {}) {
  const h = new CoreHarness();
  const a = h.connect("a", { handlers: ["work", "done"] });
  const b = h.connect("b", { handlers: ["work", "done"] });
  h.apply(testSpec("job", { ...WITH_HOOK, ...overrides }));
  return { h, a, b };
}

/** Which agent was sent this shard execution. */
function runnerOf(execution: string, ...agents: ModelAgent[]): string {
  return agents.find((agent) => agent.dispatchedIds().includes(execution))!.id;
}

describe("spec.onFireComplete", () => {
  it("runs once, after the last shard of a fire finished, with every shard's outcome", () => {
    const { h, a, b } = twoAgents();
    const { fireTime, executionIds } = h.core.triggerJob("job", [], "month=11", h.now);
    h.flush();
    const [first, second, third] = executionIds as [string, string, string];
    h.report(runnerOf(first, a, b), first, "succeeded");
    h.report(runnerOf(second, a, b), second, "failed");
    expect(completionRuns(a, b)).toEqual([]);

    h.report(runnerOf(third, a, b), third, "succeeded");
    const [run, ...more] = completionRuns(a, b);
    expect(more).toEqual([]);
    expect(run).toMatchObject({
      executionId: `job/${fireTime}/complete/1`,
      handler: "done",
      fireTime,
      attempt: 1,
      parameter: "month=11",
      fireOutcome: [
        { shard: 0, state: "succeeded", executionId: first },
        { shard: 1, state: "failed", executionId: second },
        { shard: 2, state: "succeeded", executionId: third },
      ],
    });
    expect(run!.assignment).toBeUndefined();
    expect(h.execution(run!.executionId)).toMatchObject({ state: "pending", cause: "fire-complete", shard: -1 });
    expect(h.events.filter((e) => e.type === "fire.completed")).toHaveLength(1);

    h.report(a.dispatchedIds().includes(run!.executionId) ? "a" : "b", run!.executionId, "succeeded");
    expect(h.execution(run!.executionId)!.state).toBe("succeeded");
    h.run(10_000);
    expect(completionRuns(a, b)).toHaveLength(1);
  });

  it("waits for a shard's retry before it counts the shard as finished", () => {
    const { h, a, b } = twoAgents({ shards: 1, retries: { limit: 1, backoffSeconds: 5 } });
    const [first] = h.core.triggerJob("job", [], undefined, h.now).executionIds as [string];
    h.flush();
    h.report(runnerOf(first, a, b), first, "failed");
    h.run(5_000);
    expect(completionRuns(a, b)).toEqual([]);

    const retry = first.replace(/\/1$/, "/2");
    h.report(runnerOf(retry, a, b), retry, "succeeded");
    expect(completionRuns(a, b).map((run) => run.fireOutcome)).toEqual([[{ shard: 0, state: "succeeded", executionId: retry }]]);
  });

  it("waits for a lost shard's failover run", () => {
    const { h, a, b } = twoAgents({ shards: 2 });
    const ids = h.core.triggerJob("job", [], undefined, h.now).executionIds;
    h.flush();
    const onA = ids.find((id) => a.dispatchedIds().includes(id))!;
    const onB = ids.find((id) => b.dispatchedIds().includes(id))!;
    h.report("b", onB, "succeeded");
    h.crash("a");
    h.run(DEFAULT_CORE_CONFIG.leaseTtlMs + DEFAULT_CORE_CONFIG.heartbeatIntervalMs + GRACE, ["a"]);
    expect(completionRuns(a, b)).toEqual([]);

    const failover = onA.replace(/\/1$/, "/2");
    expect(b.dispatchedIds()).toContain(failover);
    h.report("b", failover, "succeeded");
    expect(completionRuns(b)).toHaveLength(1);
  });

  it("runs again elsewhere only after the lost agent's lease expired, so never twice at once", () => {
    const { h, a, b } = twoAgents({ shards: 1 });
    const [only] = h.core.triggerJob("job", [], undefined, h.now).executionIds as [string];
    h.flush();
    h.report(runnerOf(only, a, b), only, "succeeded");
    const [run] = completionRuns(a, b);
    const holder = a.dispatchedIds().includes(run!.executionId) ? a : b;
    const other = holder === a ? b : a;
    h.report(holder.id, run!.executionId, "running");

    h.crash(holder.id);
    h.run(DEFAULT_CORE_CONFIG.leaseTtlMs - DEFAULT_CORE_CONFIG.heartbeatIntervalMs, [holder.id]);
    expect(completionRuns(other)).toEqual([]);

    h.run(2 * DEFAULT_CORE_CONFIG.heartbeatIntervalMs + GRACE, [holder.id]);
    expect(h.execution(run!.executionId)!.state).toBe("lost");
    const [again] = completionRuns(other);
    expect(again).toMatchObject({ executionId: run!.executionId.replace(/\/1$/, "/2"), attempt: 2, fireOutcome: run!.fireOutcome });
    expect(h.execution(again!.executionId)!.cause).toBe("failover");
  });

  it("retries a failed hook run per spec.retries", () => {
    const { h, a, b } = twoAgents({ shards: 1, retries: { limit: 1, backoffSeconds: 2 } });
    const [only] = h.core.triggerJob("job", [], undefined, h.now).executionIds as [string];
    h.flush();
    h.report(runnerOf(only, a, b), only, "succeeded");
    const [run] = completionRuns(a, b);
    h.report(runnerOf(run!.executionId, a, b), run!.executionId, "failed");
    h.run(1_500);
    expect(completionRuns(a, b)).toHaveLength(1);
    h.run(1_000);
    expect(completionRuns(a, b).map((r) => r.attempt)).toEqual([1, 2]);
  });

  it("waits for an agent that declares the hook's handler", () => {
    const h = new CoreHarness();
    const worker = h.connect("worker", { handlers: ["work"] });
    h.apply(testSpec("job", { ...WITH_HOOK, shards: 1 }));
    const [only] = h.core.triggerJob("job", [], undefined, h.now).executionIds as [string];
    h.flush();
    h.report("worker", only, "succeeded");
    expect(completionRuns(worker)).toEqual([]);
    const run = h.executionsOf("job").find((e) => e.cause === "fire-complete")!;
    expect(h.core.queuePositions().get(run.id)).toBe(1);

    const hooks = h.connect("hooks", { handlers: ["done"] });
    expect(completionRuns(hooks).map((r) => r.executionId)).toEqual([run.id]);
  });

  it("makes no run for a fire in which every shard misfired", () => {
    const h = new CoreHarness();
    const hooks = h.connect("hooks", { handlers: ["done"] });
    h.apply(testSpec("job", { ...WITH_HOOK, schedule: "*/10 * * * * *", misfire: "skip" }));
    h.run(30_000);
    expect(h.executionsOf("job").filter((e) => e.state === "misfired").length).toBeGreaterThanOrEqual(3 * 3);
    expect(h.executionsOf("job").filter((e) => e.cause === "fire-complete")).toEqual([]);
    expect(completionRuns(hooks)).toEqual([]);
  });

  it("covers only the shards a trigger chose", () => {
    const { h, a, b } = twoAgents();
    const [one] = h.core.triggerJob("job", [1], undefined, h.now).executionIds as [string];
    h.flush();
    h.report(runnerOf(one, a, b), one, "succeeded");
    expect(completionRuns(a, b).map((r) => r.fireOutcome?.map((o) => o.shard))).toEqual([[1]]);
  });

  it("keeps a fire's progress across a controller restart", () => {
    const { h, a, b } = twoAgents({ shards: 2 });
    const ids = h.core.triggerJob("job", [], undefined, h.now).executionIds;
    h.flush();
    const [first, second] = ids as [string, string];
    h.report(runnerOf(first, a, b), first, "succeeded");
    const secondOn = runnerOf(second, a, b);
    const held = new Map([a, b].map((agent) => [agent.id, [...agent.held.values()]]));

    h.start();
    const again = ["a", "b"].map((id) =>
      h.connect(id, { handlers: ["work", "done"], held: held.get(id)!, executions: id === secondOn ? [{ executionId: second, state: "running" }] : [] }),
    );
    h.report(secondOn, second, "succeeded");
    expect(completionRuns(...again).map((r) => r.fireOutcome?.map((o) => o.state))).toEqual([["succeeded", "succeeded"]]);
  });

  it("sends a hook run that waited across a restart once an agent can take it", () => {
    const h = new CoreHarness();
    const worker = h.connect("worker", { handlers: ["work"] });
    h.apply(testSpec("job", { ...WITH_HOOK, shards: 1 }));
    const [only] = h.core.triggerJob("job", [], undefined, h.now).executionIds as [string];
    h.flush();
    h.report("worker", only, "succeeded");
    expect(completionRuns(worker)).toEqual([]);

    h.start();
    const hooks = h.connect("hooks", { handlers: ["done"] });
    expect(completionRuns(hooks).map((r) => r.fireOutcome)).toEqual([[{ shard: 0, state: "succeeded", executionId: only }]]);
  });

  it("runs no hook when the job is deleted, and cancels one already running", () => {
    const { h, a, b } = twoAgents({ shards: 2 });
    const [done] = h.core.triggerJob("job", [0], undefined, h.now).executionIds as [string];
    h.flush();
    h.report(runnerOf(done, a, b), done, "succeeded");
    const [run] = completionRuns(a, b);
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();

    h.core.deleteJob("job", h.now);
    h.flush();
    expect([...a.cancelled, ...b.cancelled]).toContain(run!.executionId);
    for (const agent of [a, b]) {
      for (const id of agent.dispatchedIds()) {
        if (h.core.openExecution(id) !== undefined) h.report(agent.id, id, "cancelled");
      }
    }
    expect(h.execution(run!.executionId)!.state).toBe("cancelled");
    expect(completionRuns(a, b)).toHaveLength(1);
    expect(h.executionsOf("job").filter((e) => e.cause === "fire-complete")).toHaveLength(1);
  });

  it("cancels waiting hook runs when the job drops spec.onFireComplete", () => {
    const h = new CoreHarness();
    h.connect("worker", { handlers: ["work"] });
    h.apply(testSpec("job", { ...WITH_HOOK, shards: 1 }));
    const [only] = h.core.triggerJob("job", [], undefined, h.now).executionIds as [string];
    h.flush();
    h.report("worker", only, "succeeded");
    h.apply(testSpec("job", { ...WITH_HOOK, shards: 1, onFireComplete: undefined }));
    const run = h.executionsOf("job").find((e) => e.cause === "fire-complete")!;
    expect(run).toMatchObject({ state: "cancelled", error: "the job no longer has spec.onFireComplete" });
  });
});
