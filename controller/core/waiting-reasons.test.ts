import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";
import { whyNoAgentCanRun, type AgentFacts } from "./waiting-reasons.js";

/** A ready agent with handler "work" and no labels, changed by `overrides`. */
function facts(id: string, overrides: Partial<AgentFacts> = {}): AgentFacts {
  return { id, connected: true, lost: false, leaving: false, cordoned: false, labels: {}, handlers: new Set(["work"]), executors: new Set(), ...overrides };
}

describe("why no agent can run a job", () => {
  const spec = testSpec("job");

  it("says when no agent is connected at all", () => {
    expect(whyNoAgentCanRun(spec, [])).toBe("no agent is connected");
    expect(whyNoAgentCanRun(spec, [facts("a", { connected: false, lost: true })])).toBe("no agent is connected");
  });

  it("names the handler no connected agent declares", () => {
    expect(whyNoAgentCanRun(testSpec("job", { handler: "orphan" }), [facts("a")])).toBe('no connected agent declares handler "orphan"');
  });

  it("names the executor flag for scripts, HTTP calls and Kubernetes Jobs", () => {
    const script = testSpec("job", { handler: "", script: { command: "report", args: [], env: {}, killGraceSeconds: 10 } });
    expect(whyNoAgentCanRun(script, [facts("a")])).toBe("no connected agent runs scripts (start one with --allow-script report)");
    const http = testSpec("job", { handler: "", http: { method: "POST", url: "http://x/", headers: {}, body: "", connectTimeoutSeconds: 10, readTimeoutSeconds: 60 } });
    expect(whyNoAgentCanRun(http, [facts("a")])).toBe("no connected agent makes HTTP calls (start one with --allow-http)");
  });

  it("names the placement selector none of the able agents matches", () => {
    const placed = testSpec("job", { placement: { selector: { zone: "eu-1", tier: "batch" } } });
    expect(whyNoAgentCanRun(placed, [facts("a", { labels: { zone: "eu-2" } })])).toBe(
      'no connected agent that declares handler "work" matches spec.placement.selector zone=eu-1,tier=batch (give one those --label flags)',
    );
  });

  it("names the spreadBy labels none of the matching agents has", () => {
    const spread = testSpec("job", { placement: { selector: {}, spreadBy: ["zone"] } });
    expect(whyNoAgentCanRun(spread, [facts("a")])).toBe('no connected agent that declares handler "work" has every spec.placement.spreadBy label (zone)');
  });

  it("says when every agent that may run it is draining or cordoned", () => {
    expect(whyNoAgentCanRun(spec, [facts("a", { cordoned: true }), facts("b", { leaving: true })])).toBe(
      "every agent that may run it is draining or cordoned (a, b; shardline uncordon AGENT)",
    );
  });

  it("has nothing to say when one agent may run it", () => {
    expect(whyNoAgentCanRun(spec, [facts("a", { cordoned: true }), facts("b")])).toBeUndefined();
  });
});

describe("reasons the core shows", () => {
  it("explains a job no agent can run: on apply, on its pending executions, its unassigned shards and the job itself", () => {
    const h = new CoreHarness();
    h.connect("a");
    h.apply(testSpec("orphan-job", { schedule: undefined, shards: 2, handler: "orphan" }));
    const why = 'no connected agent declares handler "orphan"';

    expect(h.core.applyWarnings("orphan-job")).toEqual([`no connected agent can run it now: ${why}; its fires wait (spec.misfire: fire-once)`]);
    expect(h.core.listUnassigned()).toEqual([
      { job: "orphan-job", shard: 0, reason: why },
      { job: "orphan-job", shard: 1, reason: why },
    ]);
    expect(h.core.getJob("orphan-job").waitingReason).toBe(`none of its 2 shards has an owner: ${why}`);
    const { executionIds } = h.core.triggerJob("orphan-job", [1], undefined, h.now);
    h.flush();
    expect(h.core.waitingReason(executionIds[0]!)).toBe(`shard 1: no owner (${why})`);
  });

  it("clears the reasons once an agent that can run the job connects", () => {
    const h = new CoreHarness();
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    const { executionIds } = h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    expect(h.core.waitingReason(executionIds[0]!)).toBe("shard 0: no owner (no agent is connected)");
    h.connect("a");
    expect(h.core.applyWarnings("job")).toEqual([]);
    expect(h.core.listUnassigned()).toEqual([]);
    expect(h.core.getJob("job").waitingReason).toBeUndefined();
    expect(h.core.waitingReason(executionIds[0]!)).toBeUndefined();
  });

  it("says an execution waits for a slot on an agent that runs its --max-concurrent executions", () => {
    const h = new CoreHarness();
    h.connect("a", { maxConcurrent: 1 });
    h.apply(testSpec("job", { schedule: undefined, shards: 2 }));
    const { executionIds } = h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    const waiting = executionIds.filter((id) => h.core.waitingReason(id) !== undefined);
    expect(waiting.map((id) => h.core.waitingReason(id))).toEqual([expect.stringMatching(/^shard [01]: its owner a runs its --max-concurrent 1 executions$/)]);
  });

  it("says a shard is fenced until its lost owner's lease expires", () => {
    const h = new CoreHarness();
    h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    h.crash("a");
    const { executionIds } = h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    expect(h.core.waitingReason(executionIds[0]!)).toMatch(/^shard 0: fenced until the lease of its owner a, which lost its stream, expires at \d{4}-.+Z$/);
    expect(h.core.getJob("job").waitingReason).toBe("1 shard is fenced until a lost owner's lease expires");
  });

  it("says when a retry will run", () => {
    const h = new CoreHarness();
    const a = h.connect("a");
    h.apply(testSpec("job", { schedule: undefined, shards: 1, retries: { limit: 1, backoffSeconds: 30 } }));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    h.report("a", a.dispatched[0]!.executionId, "failed");
    const retry = [...h.durable.executions.values()].find((e) => e.attempt === 2)!;
    expect(h.core.waitingReason(retry.id)).toBe(`retries at ${new Date(h.now + 30_000).toISOString()} (spec.retries.backoffSeconds)`);
  });

  it("says a job is paused, suspended, or has disabled shards", () => {
    const h = new CoreHarness();
    h.connect("a");
    h.apply(testSpec("job", { shards: 4 }));
    h.core.pauseJob("job", h.now);
    h.core.disableShard("job", 2, h.now);
    h.flush();
    expect(h.core.getJob("job").waitingReason).toBe("paused (shardline resume job); shard 2 is disabled (shardline enable job 2)");
    h.apply(testSpec("held", { suspend: true }));
    expect(h.core.getJob("held").waitingReason).toBe("spec.suspend is true");
  });

  it("says no shard is given away during a restarted controller's startup grace", () => {
    const h = new CoreHarness();
    h.apply(testSpec("job", { schedule: undefined, shards: 1 }));
    h.start();
    expect(h.core.listUnassigned()[0]!.reason).toMatch(/^the controller restarted and gives no shard away until .+Z, while the previous owners reconnect and claim theirs$/);
    h.advance(DEFAULT_CORE_CONFIG.leaseTtlMs + DEFAULT_CORE_CONFIG.leaseMarginMs);
    expect(h.core.listUnassigned()[0]!.reason).toBe("no agent is connected");
  });

  it("records why a fire misfired, naming what the shard waits for", () => {
    const h = new CoreHarness();
    h.connect("a");
    h.apply(testSpec("orphan-job", { shards: 1, handler: "orphan", misfire: "skip" }));
    h.advance(1000);
    const misfired = h.executionsOf("orphan-job").filter((e) => e.state === "misfired");
    expect(misfired.length).toBeGreaterThan(0);
    expect(misfired[0]!.error).toBe('the shard could not start it on time and spec.misfire is skip: no owner (no connected agent declares handler "orphan")');
  });
});
