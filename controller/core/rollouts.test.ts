import { describe, expect, it } from "vitest";
import type { JobSpec, RolloutStep } from "../../shared/manifest/job-spec.js";
import type { ExecutionContext } from "./messages.js";
import { CoreHarness, type ModelAgent, testSpec } from "./testing/core-harness.js";

/** A job of 6 shards firing every second, and its changed revision (a new parameter). */
function job(steps?: RolloutStep[], overrides: Partial<JobSpec> = {}): JobSpec {
  return testSpec("sweep", { shards: 6, parameter: "v1", ...(steps === undefined ? {} : { rollout: { steps } }), ...overrides });
}

function changed(spec: JobSpec, parameter = "v2", more: Partial<JobSpec> = {}): JobSpec {
  return { ...spec, parameter, ...more };
}

/** Three clusters of one agent each, every agent running handler "work" (and any `handlers`). */
function clusters(h: CoreHarness, handlers: Record<string, string[]> = {}): Record<string, ModelAgent> {
  const out: Record<string, ModelAgent> = {};
  for (const cluster of ["canary", "east", "west"]) {
    out[cluster] = h.connect(cluster, { labels: { cluster }, capacity: 10, handlers: handlers[cluster] ?? ["work"] });
  }
  return out;
}

/** Every context dispatched since `from` (an index into each agent's list), by agent. */
function dispatchedSince(agents: Record<string, ModelAgent>, from: Record<string, number>): ExecutionContext[] {
  return Object.entries(agents).flatMap(([name, agent]) => agent.dispatched.slice(from[name] ?? 0));
}

function marks(agents: Record<string, ModelAgent>): Record<string, number> {
  return Object.fromEntries(Object.entries(agents).map(([name, agent]) => [name, agent.dispatched.length]));
}

/**
 * Runs one second of fires, every run due by then ending as `outcome` says (default succeeded),
 * including those a finished run let start; returns the runs dispatched meanwhile.
 */
function second(h: CoreHarness, agents: Record<string, ModelAgent>, outcome: (context: ExecutionContext) => "succeeded" | "failed" = () => "succeeded"): ExecutionContext[] {
  const before = marks(agents);
  h.run(1000);
  for (let round = 0; round < 10; round++) {
    const due = Object.values(agents).flatMap((agent) =>
      agent.dispatched.filter((c) => c.fireTime <= h.now && h.core.openExecution(c.executionId) !== undefined).map((c) => ({ agent, c })),
    );
    if (due.length === 0) break;
    for (const { agent, c } of due) h.report(agent.id, c.executionId, outcome(c));
  }
  return dispatchedSince(agents, before);
}

/** The revision each cluster's runs had in `sent`. */
function revisionsByCluster(sent: ExecutionContext[], agents: Record<string, ModelAgent>): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [name, agent] of Object.entries(agents)) {
    const ids = new Set(agent.dispatchedIds());
    out[name] = [...new Set(sent.filter((c) => ids.has(c.executionId)).map((c) => c.revision))].sort();
  }
  return out;
}

describe("revisions", () => {
  it("numbers each change, records the revision every execution runs, and applies a change at once without spec.rollout", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job();
    h.apply(v1);
    const first = second(h, agents);
    expect(first.length).toBeGreaterThan(0);
    expect(new Set(first.map((c) => c.revision))).toEqual(new Set([1]));
    expect(new Set(first.map((c) => c.parameter))).toEqual(new Set(["v1"]));
    expect(h.execution(first[0]!.executionId)!.revision).toBe(1);

    h.apply(changed(v1));
    const after = second(h, agents);
    expect(new Set(after.map((c) => c.revision))).toEqual(new Set([2]));
    expect(new Set(after.map((c) => c.parameter))).toEqual(new Set(["v2"]));
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "none", currentRevision: 2, shardsByRevision: [{ revision: 2, shards: [0, 1, 2, 3, 4, 5] }] });
    expect([...h.durable.revisions.get("sweep")!.keys()]).toEqual([1, 2]);
    expect(h.durable.revisions.get("sweep")!.get(2)).toMatchObject({ job: "sweep", revision: 2, manifest: "name: sweep", appliedBy: "" });
  });

  it("pins a fire to its revision: a run started on revision 1 finishes as revision 1, and its retry runs revision 1 after revision 2 took the shard", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { capacity: 10 });
    const v1 = testSpec("pinned", { shards: 1, schedule: undefined, parameter: "v1", retries: { limit: 1, backoffSeconds: 1 } });
    h.apply(v1);
    const { executionIds } = h.core.triggerJob("pinned", [], undefined, h.now);
    h.flush();
    const [run] = executionIds as [string];
    h.report("a", run, "running");
    h.apply({ ...v1, parameter: "v2" });
    h.report("a", run, "failed");
    expect(h.execution(run)).toMatchObject({ revision: 1, state: "failed" });
    h.advance(1500);
    const retry = a.dispatched.find((c) => c.attempt === 2)!;
    expect(retry).toMatchObject({ revision: 1, parameter: "v1" });
    expect(h.execution(retry.executionId)!.revision).toBe(1);
    const { executionIds: next } = h.core.triggerJob("pinned", [], undefined, h.now);
    h.flush();
    h.report("a", retry.executionId, "succeeded");
    expect(a.dispatched.find((c) => c.executionId === next[0])).toMatchObject({ revision: 2, parameter: "v2" });
  });

  it("records who applied a revision, and an undo as a copy of the revision it returns to", () => {
    const h = new CoreHarness();
    const v1 = job();
    h.core.applyJob("sweep", v1, "m1", h.now, { appliedBy: "alice" });
    h.core.applyJob("sweep", changed(v1), "m2", h.now, { appliedBy: "bob" });
    h.core.applyJob("sweep", v1, "m1", h.now, { appliedBy: "carol", undoOf: 1 });
    h.flush();
    const stored = h.durable.revisions.get("sweep")!;
    expect([...stored.values()].map((r) => [r.revision, r.appliedBy, r.undoOf])).toEqual([
      [1, "alice", undefined],
      [2, "bob", undefined],
      [3, "carol", 1],
    ]);
    expect(stored.get(3)!.hash).toBe(stored.get(1)!.hash);
    expect(stored.get(2)!.hash).not.toBe(stored.get(1)!.hash);
  });
});

describe("rollouts", () => {
  it("rolls a change out wave by wave: canary first, the other clusters still on the stable revision until their wave", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { pause: {} }, { wave: { clusters: ["east"] } }, { pause: {} }]);
    h.apply(v1);
    second(h, agents);
    h.apply(changed(v1));
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "paused", stableRevision: 1, targetRevision: 2, step: 2, waiting: "paused until promoted (shardline rollout promote)" });
    expect(revisionsByCluster(second(h, agents), agents)).toEqual({ canary: [2], east: [1], west: [1] });

    h.core.promoteRollout("sweep", false, "alice", h.now);
    h.flush();
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "paused", step: 4 });
    expect(revisionsByCluster(second(h, agents), agents)).toEqual({ canary: [2], east: [2], west: [1] });
    expect(h.events.some((e) => e.type === "rollout.promoted" && e.message.includes("by alice"))).toBe(true);

    h.core.promoteRollout("sweep", false, "", h.now);
    h.flush();
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "completed", stableRevision: 2 });
    expect(revisionsByCluster(second(h, agents), agents)).toEqual({ canary: [2], east: [2], west: [2] });
    expect(h.events.map((e) => e.type)).toContain("rollout.completed");
  });

  it("a wave by weight takes that share of the shards, spread across clusters, and keeps them in later waves", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ weight: 34 }, { pause: {} }, { weight: 67 }, { pause: {} }]);
    h.apply(v1);
    second(h, agents);
    h.apply(changed(v1));
    const first = h.core.rollout("sweep").shardsByRevision.find((e) => e.revision === 2)!.shards;
    expect(first).toHaveLength(3);
    // One per cluster: each agent owns two of the six shards.
    const owners = new Set(first.map((shard) => h.core.listAssignments("sweep").find((a) => a.shard === shard)!.agent));
    expect(owners.size).toBe(3);
    h.core.promoteRollout("sweep", false, "", h.now);
    h.flush();
    const second_ = h.core.rollout("sweep").shardsByRevision.find((e) => e.revision === 2)!.shards;
    expect(second_).toHaveLength(5);
    expect(second_).toEqual(expect.arrayContaining(first));
  });

  it("pauses for a duration and for a number of fires", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { pause: { duration: "5s" } }, { wave: { clusters: ["east"] } }, { pause: { fires: 3 } }]);
    h.apply(v1);
    h.apply(changed(v1));
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "progressing", step: 2, waiting: `paused until ${new Date(h.now + 5000).toISOString()}` });
    h.run(4999);
    expect(h.core.rollout("sweep").step).toBe(2);
    h.run(1);
    expect(h.core.rollout("sweep")).toMatchObject({ step: 4, waiting: "paused for 3 fires (0 so far)" });
    const seen: string[] = [];
    for (let i = 0; i < 10 && h.core.rollout("sweep").phase !== "completed"; i++) {
      second(h, agents);
      seen.push(h.core.rollout("sweep").waiting ?? h.core.rollout("sweep").phase);
    }
    expect(seen).toEqual(["paused for 3 fires (1 so far)", "paused for 3 fires (2 so far)", "completed"]);
  });

  it("an analysis that passes goes on to the next wave", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { analysis: { minExecutions: 4, maxFailureRate: 0.25 } }, { wave: { clusters: ["east", "west"] } }]);
    h.apply(v1);
    h.apply(changed(v1));
    second(h, agents);
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "progressing", step: 2, target: { runs: 2, failures: 0 } });
    second(h, agents);
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "completed", stableRevision: 2 });
    expect(h.events.some((e) => e.type === "rollout.analysis-passed")).toBe(true);
  });

  it("an analysis that fails aborts: every shard runs the stable revision from its next fire, and retry starts again", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { analysis: { minExecutions: 4, maxFailures: 1 } }, { wave: { clusters: ["east", "west"] } }]);
    h.apply(v1);
    h.apply(changed(v1));
    // Revision 2 fails everywhere it runs: two canary runs a second.
    const failNew = (c: ExecutionContext): "succeeded" | "failed" => (c.revision === 2 ? "failed" : "succeeded");
    second(h, agents, failNew);
    const rollout = h.core.rollout("sweep");
    expect(rollout).toMatchObject({ phase: "aborted", stableRevision: 1, targetRevision: 2 });
    expect(rollout.reason).toMatch(/^analysis at step 2: 2 runs of revision 2 failed, more than maxFailures 1/);
    expect(h.events.find((e) => e.type === "rollout.aborted")!.message).toContain("every shard runs revision 1 from its next fire");
    const after = second(h, agents);
    expect(new Set(after.map((c) => c.revision))).toEqual(new Set([1]));
    expect(h.core.getJob("sweep").record.rollout!.phase).toBe("aborted");
    expect(h.core.getJob("sweep").waitingReason).toMatch(
      /^degraded: the rollout of revision 2 was aborted \(analysis at step 2: .*\); every shard runs revision 1 until a new revision is applied or shardline rollout retry sweep$/,
    );

    h.core.retryRollout("sweep", "", h.now);
    h.flush();
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "progressing", step: 2, target: { runs: 0 } });
    expect(h.core.getJob("sweep").waitingReason).toBeUndefined();
    expect(revisionsByCluster(second(h, agents), agents)).toEqual({ canary: [2], east: [1], west: [1] });
  });

  it("judges the failure rate against the stable revision's over the same fires", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ weight: 50 }, { analysis: { minExecutions: 6, noWorseThanStable: true } }]);
    h.apply(v1);
    h.apply(changed(v1));
    // Both revisions fail one run in three: no worse, so it passes.
    let n = 0;
    const third = (): "succeeded" | "failed" => (++n % 3 === 0 ? "failed" : "succeeded");
    for (let i = 0; i < 3 && h.core.rollout("sweep").phase === "progressing"; i++) second(h, agents, third);
    expect(h.core.rollout("sweep").phase).toBe("completed");

    const h2 = new CoreHarness();
    const agents2 = clusters(h2);
    const w1 = job([{ weight: 50 }, { analysis: { minExecutions: 3, noWorseThanStable: true } }]);
    h2.apply(w1);
    h2.apply(changed(w1));
    second(h2, agents2, (c) => (c.revision === 2 && c.shard % 2 === 0 ? "failed" : "succeeded"));
    second(h2, agents2, (c) => (c.revision === 2 && c.shard % 2 === 0 ? "failed" : "succeeded"));
    expect(h2.core.rollout("sweep").reason).toMatch(/is above stable revision 1's 0% \(0 of \d+\) over the same fires/);
  });

  it("judges the 95th percentile of the new revision's run durations", () => {
    const h = new CoreHarness();
    const canary = h.connect("canary", { labels: { cluster: "canary" }, capacity: 10 });
    h.connect("east", { labels: { cluster: "east" }, capacity: 10 });
    const v1 = testSpec("slow", { shards: 4, schedule: undefined, parameter: "v1", rollout: { steps: [{ wave: { clusters: ["canary"] } }, { analysis: { minExecutions: 2, maxP95DurationSeconds: 2 } }] } });
    h.apply(v1);
    h.apply({ ...v1, parameter: "v2" });
    h.core.triggerJob("slow", [], undefined, h.now);
    h.flush();
    const onCanary = canary.dispatched.filter((c) => c.revision === 2);
    expect(onCanary).toHaveLength(2);
    for (const c of onCanary) h.report("canary", c.executionId, "running");
    h.run(3000);
    for (const c of onCanary) h.report("canary", c.executionId, "succeeded");
    expect(h.core.rollout("slow")).toMatchObject({ phase: "aborted", target: { runs: 2, failures: 0, p95Ms: 3000 } });
    expect(h.core.rollout("slow").reason).toBe("analysis at step 2: p95 duration 3.000 s is above maxP95DurationSeconds 2");
  });

  it("aborts by hand, and an undo applies the stable spec again at once", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { pause: {} }]);
    h.apply(v1);
    h.apply(changed(v1));
    h.core.abortRollout("sweep", "bob", h.now);
    h.flush();
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "aborted", reason: "aborted by bob" });
    expect(() => h.core.promoteRollout("sweep", false, "", h.now)).toThrow(/no rollout in progress \(the last one was aborted; rollout retry starts it again\): nothing to promote/);

    h.core.applyJob("sweep", v1, "name: sweep", h.now, { undoOf: 1 });
    h.flush();
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "completed", stableRevision: 3, currentRevision: 3 });
    const after = second(h, agents);
    expect(new Set(after.map((c) => `${c.revision} ${c.parameter}`))).toEqual(new Set(["3 v1"]));
  });

  it("a change of the schedule alone is a revision that needs no rollout; a second change of what runs restarts the rollout", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { pause: {} }]);
    h.apply(v1);
    h.apply({ ...v1, schedule: "*/2 * * * * *" });
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "none", currentRevision: 2 });
    const v3 = changed({ ...v1, schedule: "*/2 * * * * *" });
    h.apply(v3);
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "paused", stableRevision: 2, targetRevision: 3 });
    // Only the schedule changes again: the same rollout goes on for revision 4.
    h.apply({ ...v3, schedule: "* * * * * *" });
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "paused", stableRevision: 2, targetRevision: 4, step: 2 });
    // What runs changes again: a new rollout from the first step, from the same stable revision.
    h.apply(changed(v3, "v3", { schedule: "* * * * * *" }));
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "paused", stableRevision: 2, targetRevision: 5, step: 2 });
    expect(revisionsByCluster(second(h, agents), agents)).toEqual({ canary: [5], east: [2], west: [2] });
  });

  it("an undo after a completed rollout makes the new revision the stable one, as every shard runs it", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ weight: 100 }]);
    h.apply(v1);
    h.apply(changed(v1));
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "completed", stableRevision: 2 });
    h.core.applyJob("sweep", v1, "name: sweep", h.now, { undoOf: 1 });
    h.flush();
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "completed", currentRevision: 3, stableRevision: 3, targetRevision: 3, reason: "revision 3 applied at once (undo)" });
    expect(new Set(second(h, agents).map((c) => c.revision))).toEqual(new Set([3]));
  });

  it("applying the stable spec again ends the rollout: every shard runs the latest revision, which runs what the stable one ran", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { pause: {} }]);
    h.apply(v1);
    h.apply(changed(v1));
    h.apply(v1);
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "completed", stableRevision: 3, reason: "revision 3 runs what stable revision 1 runs" });
    const sent = second(h, agents);
    expect(new Set(sent.map((c) => `${c.revision} ${c.parameter}`))).toEqual(new Set(["3 v1"]));
    expect(h.events.some((e) => e.type === "rollout.ended")).toBe(true);
  });

  it("resumes the same step after a controller restart, with the analysis figures so far", () => {
    const h = new CoreHarness();
    let agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { analysis: { minExecutions: 4 } }, { pause: { duration: "10s" } }]);
    h.apply(v1);
    h.apply(changed(v1));
    second(h, agents);
    expect(h.core.rollout("sweep")).toMatchObject({ step: 2, target: { runs: 2 } });
    h.start();
    agents = clusters(h);
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "progressing", step: 2, target: { runs: 2 } });
    // Fires made while the restarted controller has not placed the shards yet (its startup
    // grace; these model agents claim nothing) run the stable revision, and do not count.
    for (let i = 0; i < 10 && h.core.rollout("sweep").step === 2; i++) second(h, agents);
    expect(h.core.rollout("sweep")).toMatchObject({ phase: "progressing", step: 3 });
    expect(h.events.filter((e) => e.type === "rollout.analysis-passed").at(-1)!.message).toMatch(/: 0 of [4-9] runs failed/);
    // The pause's timer is armed again by a restart in its midst.
    h.start();
    agents = clusters(h);
    h.run(11_000);
    expect(h.core.rollout("sweep").phase).toBe("completed");
  });

  it("a selector wave follows the owners: a shard that moves out of the wave runs the stable revision, one that moves in runs the new one", () => {
    const h = new CoreHarness();
    const agents = clusters(h);
    const v1 = job([{ wave: { clusters: ["canary"] } }, { pause: {} }]);
    h.apply(v1);
    h.apply(changed(v1));
    const canaryShards = h.core.listAssignments("sweep").filter((a) => a.agent === "canary").map((a) => a.shard);
    expect(canaryShards).toHaveLength(2);
    // The canary agent leaves: its shards go to east and west, which are not in the wave.
    h.core.goodbye(agents.canary!.session, "drain", h.now);
    h.flush();
    h.releaseRevoked("canary");
    delete agents.canary;
    const sent = second(h, agents);
    expect(new Set(sent.map((c) => c.revision))).toEqual(new Set([1]));
    expect(h.core.rollout("sweep").waiting).toMatch(/no shard runs revision 2 now/);
    // A new canary agent joins and takes shards: they run revision 2.
    agents.canary2 = h.connect("canary-2", { labels: { cluster: "canary" }, capacity: 10 });
    h.run(3000);
    for (const name of ["east", "west"]) h.releaseRevoked(name);
    h.run(2000);
    const later = second(h, agents);
    expect(revisionsByCluster(later, agents).canary2).toEqual([2]);
  });

  it("a new revision's handler that only some agents declare: shards stay with agents of either handler, and only those that can run it run it", () => {
    const h = new CoreHarness();
    const agents = clusters(h, { canary: ["work", "work-v2"] });
    const v1 = job([{ weight: 100 }, { pause: {} }]);
    h.apply(v1);
    h.apply({ ...v1, runs: { kind: "handler", handler: "work-v2" } });
    expect(h.core.listAssignments("sweep").map((a) => a.agent).sort()).toEqual(["canary", "canary", "east", "east", "west", "west"]);
    const sent = second(h, agents);
    expect(revisionsByCluster(sent, agents)).toEqual({ canary: [2], east: [1], west: [1] });
    expect(sent.filter((c) => c.revision === 2).every((c) => c.handler === "work-v2")).toBe(true);
    expect(sent.filter((c) => c.revision === 1).every((c) => c.handler === "work")).toBe(true);
  });
});
