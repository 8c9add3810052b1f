import { describe, expect, it } from "vitest";
import { CoreHarness, testSpec, twoAgents, oneAgent } from "./testing/core-harness.js";
import { DEFAULT_CORE_CONFIG } from "./config.js";

const LEASE = 2000;
/** The default disconnect grace, and the margin the controller adds to it. */
const GRACE = DEFAULT_CORE_CONFIG.disconnectGraceMs + DEFAULT_CORE_CONFIG.leaseMarginMs;

describe("retries", () => {
  it("retries a failed execution after its backoff, doubling the wait, up to the limit", () => {
    const { h, a } = oneAgent({ retries: { limit: 2, backoffSeconds: 10 } });
    const [first] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.report("a", first!, "failed");
    const second = first!.replace(/\/1$/, "/2");
    expect(h.execution(second)).toMatchObject({ state: "pending", cause: "retry", notBefore: h.now + 10_000 });
    h.run(9_999);
    expect(a.dispatchedIds()).not.toContain(second);
    h.run(1);
    expect(a.dispatchedIds()).toContain(second);

    h.report("a", second, "failed");
    const third = first!.replace(/\/1$/, "/3");
    h.run(19_999);
    expect(a.dispatchedIds()).not.toContain(third);
    h.run(1);
    expect(a.dispatchedIds()).toContain(third);
    h.report("a", third, "failed");
    h.run(120_000);
    expect(h.execution(first!.replace(/\/1$/, "/4"))).toBeUndefined();
  });

  it("does not retry a success or a cancel", () => {
    const { h } = oneAgent({ retries: { limit: 3, backoffSeconds: 1 } });
    const ids = h.core.triggerJob("job", [], undefined, h.now).executionIds;
    h.flush();
    h.report("a", ids[0]!, "succeeded");
    h.report("a", ids[1]!, "cancelled");
    h.advance(60_000);
    expect(h.executionsOf("job").map((e) => e.attempt)).toEqual([1, 1]);
  });

  it("keeps a waiting retry across a controller restart", () => {
    const { h, a } = oneAgent({ retries: { limit: 1, backoffSeconds: 30 } });
    const [first] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.report("a", first!, "timed-out");
    h.start();
    const again = h.connect("a", { held: [...a.held.values()] });
    h.run(29_000);
    const retry = first!.replace(/\/1$/, "/2");
    expect(again.dispatchedIds()).not.toContain(retry);
    h.run(1_500);
    expect(again.dispatchedIds()).toContain(retry);
  });
});

describe("cancel", () => {
  it("cancels a waiting execution at once", () => {
    const h = new CoreHarness();
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    const [id] = h.core.triggerJob("job", [], undefined, h.now).executionIds;
    h.flush();
    expect(h.core.cancelExecution(id!, "", h.now)).toBe("cancelled");
    h.flush();
    expect(h.execution(id!)).toMatchObject({ state: "cancelled", error: "cancelled by an operator" });
  });

  it("asks the agent to abort a dispatched execution and records it when the agent confirms", () => {
    const { h, a } = oneAgent();
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    h.report("a", id!, "running");
    expect(h.core.cancelExecution(id!, "wrong parameter", h.now)).toBe("running");
    h.flush();
    expect(a.cancelled).toEqual([id]);
    h.report("a", id!, "cancelled");
    expect(h.execution(id!)?.state).toBe("cancelled");
  });

  it("never re-runs a cancelled execution whose agent is lost before confirming", () => {
    const { h } = oneAgent();
    h.connect("b");
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    const owner = h.core.openExecution(id!)!.agent;
    h.core.cancelExecution(id!, "", h.now);
    h.flush();
    h.crash(owner);
    h.run(3000 + GRACE, [owner]);
    expect(h.execution(id!)?.state).toBe("cancelled");
    expect(h.execution(id!.replace(/\/1$/, "/2"))).toBeUndefined();
  });

  it("refuses to cancel an execution that is not open", () => {
    const { h } = oneAgent();
    expect(() => h.core.cancelExecution("job/1/0/1", "", h.now)).toThrowError(/not pending or running/);
  });
});

describe("slots and priority", () => {
  it("starts no more executions on an agent than its slots, and the next when one frees", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { maxConcurrent: 1 });
    h.apply(testSpec("job", { schedule: undefined, shards: 2 }));
    const ids = h.core.triggerJob("job", [], undefined, h.now).executionIds;
    h.flush();
    expect(a.dispatchedIds()).toEqual([ids[0]]);
    expect(h.core.queuePositions()).toEqual(new Map([[ids[1], 1]]));
    h.report("a", ids[0]!, "succeeded");
    expect(a.dispatchedIds()).toEqual(ids);
    expect(h.core.queuePositions().size).toBe(0);
  });

  it("gives a freed slot to the highest-priority waiting execution, then first in, first out", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { maxConcurrent: 1 });
    h.apply(testSpec("busy", { schedule: undefined, shards: 1 }));
    h.apply(testSpec("low", { schedule: undefined, shards: 1, priority: 0 }));
    h.apply(testSpec("high", { schedule: undefined, shards: 1, priority: 10 }));
    const [busy] = h.core.triggerJob("busy", [], undefined, h.now).executionIds;
    h.flush();
    h.advance(1);
    const [low1] = h.core.triggerJob("low", [], undefined, h.now).executionIds;
    h.advance(1);
    const [high] = h.core.triggerJob("high", [], undefined, h.now).executionIds;
    h.flush();
    expect(h.core.queuePositions()).toEqual(new Map([[high, 1], [low1, 2]]));
    h.report("a", busy!, "succeeded");
    expect(a.dispatchedIds()).toEqual([busy, high]);
    h.report("a", high!, "succeeded");
    expect(a.dispatchedIds()).toEqual([busy, high, low1]);
  });

  it("shows each agent's slots and how many run on it", () => {
    const h = new CoreHarness();
    h.connect("a", { maxConcurrent: 3 });
    h.apply(testSpec("job", { schedule: undefined, shards: 2 }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    expect(h.core.listAgents().map((x) => [x.id, x.maxConcurrent, x.running])).toEqual([["a", 3, 2]]);
  });
});

describe("work that outlives an agent's process", () => {
  it("cancels what a returning agent still runs after the controller recorded it lost and ran it again", () => {
    const { h, a, b } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const onA = a.dispatchedIds();
    for (const id of onA) h.report("a", id, "running");
    h.crash("a");
    h.run(LEASE + 1000 + GRACE, ["a"]);
    for (const id of onA) expect(h.execution(id)?.state).toBe("lost");
    expect(b.dispatchedIds()).toEqual(expect.arrayContaining(onA.map((id) => id.replace(/\/1$/, "/2"))));
    // Back, still running its first attempts (Kubernetes Jobs outlive the agent's process).
    const again = h.connect("a", { executions: onA.map((executionId) => ({ executionId, state: "running" as const })) });
    expect(again.cancelled.sort()).toEqual([...onA].sort());
    for (const id of onA) expect(h.execution(id)?.state).toBe("lost");
  });

  it("cancels nothing a returning agent runs within its lease", () => {
    const { h, a } = twoAgents();
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const running = a.dispatchedIds();
    for (const id of running) h.report("a", id, "running");
    const held = [...a.held.values()];
    h.crash("a");
    h.advance(300);
    expect(h.connect("a", { held, executions: running.map((executionId) => ({ executionId, state: "running" as const })) }).cancelled).toEqual([]);
  });
});

describe("execution logs", () => {
  const line = (text: string) => ({ time: 0, stream: "log" as const, text });

  it("stores the lines a report carries with it, and none of a report it ignores (another agent's, or of a run already closed)", () => {
    const { h } = twoAgents();
    const [id] = h.core.triggerJob("job", [0], undefined, h.now).executionIds;
    h.flush();
    const owner = h.execution(id!)!.agent;
    const other = owner === "a" ? "b" : "a";
    const send = (agent: string, state: "running" | "succeeded", texts: string[], firstLine: number) => {
      h.core.executionUpdates(h.agents.get(agent)!.session, [{ executionId: id!, state, startedAt: h.now, log: { firstLine, keptFrom: 0, lines: texts.map(line) } }], h.now);
      h.flush();
    };
    send(owner, "running", ["one", "two"], 0);
    // Another agent's report of the run, lines and all, changes nothing.
    send(other, "running", ["forged"], 2);
    send(owner, "succeeded", ["three"], 2);
    // A report of the run now closed, from its own agent, is stale too.
    send(owner, "succeeded", ["late"], 3);
    const log = h.durable.logs.get(id!);
    expect(log?.lines.map((l) => `${l.number} ${l.text}`)).toEqual(["0 one", "1 two", "2 three"]);
    expect(h.events.filter((e) => e.type === "execution.stale-report")).toHaveLength(2);
  });
});
