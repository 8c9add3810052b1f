import { expect, describe, it, beforeEach } from "vitest";
import { ShardlineError } from "../../../shared/errors.js";
import type { JobSpec } from "../../../shared/manifest/job-spec.js";
import { testSpec } from "../../core/testing/core-harness.js";
import type { AuditRecord, ExecutionRecord, JobRecord, RevisionRecord, RolloutState, Store, StoreSnapshot } from "../store.js";

// What every Store backend must do alike, run by each backend's tests, with the records they share.

/** A job spec with every field set, some away from their defaults, for round trips through a store. */
export function spec(name: string): JobSpec {
  return testSpec(name, { labels: { team: "billing" }, schedule: "*/5 * * * *", shardParameters: { 0: "eu", 3: "us" }, handler: "invoice" });
}

/**
 * spec(name) as a version before JobSpec.runs stored it (SQLite's spec_json, etcd's jobs/NAME):
 * what the job runs in the manifest's own field, spec.handler.
 */
export function specStoredBeforeRuns(name: string): string {
  return (
    `{"name":"${name}","labels":{"team":"billing"},"description":"","schedule":"*/5 * * * *","timeZone":"UTC","shards":4,` +
    '"shardParameters":{"0":"eu","3":"us"},"parameter":"","handler":"invoice","strategy":"sticky","failover":"fenced","misfire":"fire-once",' +
    '"maxCatchUp":10,"overlap":"forbid","timeoutSeconds":0,"retries":{"limit":0,"backoffSeconds":10},"placement":{"selector":{}},"suspend":false}'
  );
}

export function job(name: string, revision = 1): JobRecord {
  return { name, manifest: `metadata:\n  name: ${name}\n`, spec: spec(name), paused: false, revision, disabledShards: [] };
}

export function execution(fields: Partial<ExecutionRecord> & { job: string; fireTime: number }): ExecutionRecord {
  const shard = fields.shard ?? 0;
  const attempt = fields.attempt ?? 1;
  return {
    id: `${fields.job}/${fields.fireTime}/${shard}/${attempt}`,
    shard,
    attempt,
    agent: "agent-a",
    state: "succeeded",
    cause: "schedule",
    parameter: "",
    ...fields,
  };
}

/** Revision `revision` of job `name`, each with its own spec and hash. */
export function revision(name: string, revision: number, fields: Partial<RevisionRecord> = {}): RevisionRecord {
  return {
    job: name,
    revision,
    manifest: `metadata:\n  name: ${name}\nspec:\n  parameter: r${revision}\n`,
    spec: { ...spec(name), parameter: `r${revision}` },
    hash: revision.toString(16).padStart(64, "0"),
    appliedAt: 1_700_000_000_000 + revision * 60_000,
    appliedBy: "alice",
    ...fields,
  };
}

/** A rollout of `target` over `stable` with every field set; `ended` adds the reason and end an aborted one has. */
export function rollout(stable: number, target: number, ended = false): RolloutState {
  return {
    stableRevision: stable,
    targetRevision: target,
    phase: ended ? "aborted" : "progressing",
    step: 2,
    stepStartedAt: 1_700_000_100_000,
    stepFires: 3,
    selectors: [{ matchLabels: { zone: "eu-1" }, matchExpressions: [{ key: "cluster", operator: "In", values: ["a", "b"] }] }],
    shards: [0, 3],
    since: 1_700_000_050_000,
    target: { runs: 12, failures: 3, durationsMs: [120, 95, 3000] },
    stable: { runs: 40, failures: 0, durationsMs: [] },
    ...(ended ? { reason: "analysis: 3 of 12 runs failed", endedAt: 1_700_000_200_000 } : {}),
  };
}

export function ids(records: ExecutionRecord[]): string[] {
  return records.map((r) => r.id);
}

export async function rejection(promise: Promise<unknown>): Promise<ShardlineError> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ShardlineError);
  return err as ShardlineError;
}

/** A W3C trace context as a traced controller stores it with an execution. */
export const TRACE_CONTEXT: Readonly<Record<string, string>> = {
  traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  tracestate: "vendor=opaque,other=1",
};

/**
 * Defines the tests every backend must pass. `opened` gives a new, opened, empty store; the
 * backend's own tests close it. `restarted` closes a store the way a controller stops (or steps
 * down) and returns the snapshot the next controller of the same data opens with.
 */
export function describeStoreContract(name: string, opened: () => Promise<Store>, restarted: (store: Store) => Promise<StoreSnapshot>): void {
  describe(`${name} trace context`, () => {
    it("keeps an execution's trace context through its updates, listing, reading and a restart", async () => {
      const s = await opened();
      const pending = execution({ job: "invoices", fireTime: 1000, state: "pending", traceContext: { ...TRACE_CONTEXT } });
      const finished = execution({ job: "invoices", fireTime: 1000, shard: 1, state: "running", traceContext: { traceparent: TRACE_CONTEXT.traceparent! } });
      const untraced = execution({ job: "invoices", fireTime: 1000, shard: 2, state: "running" });
      await s.commit({ executions: [pending, finished, untraced] });
      const running = { ...pending, state: "running" as const, startedAt: 1001 };
      const done = { ...finished, state: "succeeded" as const, finishedAt: 1002 };
      await s.commit({ executions: [running, done] });

      expect(await s.getExecution(running.id)).toEqual(running);
      expect(await s.getExecution(done.id)).toEqual(done);
      // Untraced stays absent rather than becoming an empty object.
      expect(await s.getExecution(untraced.id)).toEqual(untraced);
      expect(await s.listExecutions({ job: "invoices", limit: 10 })).toEqual([running, done, untraced]);

      const snapshot = await restarted(s);
      expect(snapshot.openExecutions).toEqual([running, untraced]);
      expect(snapshot.settledOfOpenFires).toEqual([done]);
    });
  });

  describe(`${name} disconnect grace`, () => {
    it("keeps the disconnect grace an execution was dispatched with, and an unknown one's state, through a restart", async () => {
      const s = await opened();
      const waiting = execution({ job: "invoices", fireTime: 1000, state: "pending" });
      const dispatched = execution({ job: "invoices", fireTime: 1000, shard: 1, agent: "agent-a", state: "running", disconnectGraceMs: 15_000 });
      const unknown = execution({ job: "invoices", fireTime: 1000, shard: 2, agent: "agent-b", state: "unknown", disconnectGraceMs: 0 });
      await s.commit({ executions: [waiting, dispatched, unknown] });
      expect(await s.getExecution(dispatched.id)).toEqual(dispatched);
      expect(await s.getExecution(unknown.id)).toEqual(unknown);
      // Undispatched stays absent rather than becoming 0.
      expect(await s.getExecution(waiting.id)).toEqual(waiting);
      const snapshot = await restarted(s);
      expect(snapshot.openExecutions).toEqual([waiting, dispatched, unknown]);
    });
  });

  describe(`${name} job revisions`, () => {
    /** A job's revision numbers as the store lists them. */
    const numbers = async (s: Store, job: string): Promise<number[]> => (await s.listRevisions(job)).map((r) => r.revision);

    it("keeps a job's revisions, lists them newest first and reads one by number; one written again stays as first written", async () => {
      const s = await opened();
      const [r1, r2] = [revision("invoices", 1), revision("invoices", 2)];
      const undo = revision("invoices", 3, { undoOf: 1, appliedBy: "" });
      await s.commit({ jobs: [job("invoices", 2)], revisions: [r2, r1] });
      await s.commit({ jobs: [job("invoices", 3)], revisions: [undo, { ...r1, hash: "f".repeat(64), manifest: "changed" }] });
      await s.commit({ jobs: [job("reports")], revisions: [revision("reports", 1)] });

      expect(await s.listRevisions("invoices")).toEqual([undo, r2, r1]);
      expect(await s.listRevisions("reports")).toEqual([revision("reports", 1)]);
      expect(await s.getRevision("invoices", 1)).toEqual(r1);
      expect(await s.getRevision("invoices", 3)).toEqual(undo);
      // Not undone stays absent rather than becoming 0.
      expect(await s.getRevision("invoices", 2)).not.toHaveProperty("undoOf");
    });

    it("reads a revision it does not hold as undefined, and a job without any as none", async () => {
      const s = await opened();
      await s.commit({ jobs: [job("invoices")], revisions: [revision("invoices", 1)] });
      expect(await s.getRevision("invoices", 2)).toBeUndefined();
      expect(await s.getRevision("nobody", 1)).toBeUndefined();
      expect(await s.listRevisions("nobody")).toEqual([]);
    });

    it("deletes a deleted job's revisions in the same commit, keeps other jobs', and starts afresh when the job is applied again", async () => {
      const s = await opened();
      await s.commit({ jobs: [job("invoices", 2), job("reports")], revisions: [revision("invoices", 1), revision("invoices", 2), revision("reports", 1)] });
      await s.commit({ deletedJobs: ["invoices"] });
      expect(await s.listRevisions("invoices")).toEqual([]);
      expect(await s.getRevision("invoices", 1)).toBeUndefined();
      expect(await s.listRevisions("reports")).toEqual([revision("reports", 1)]);

      // Made, deleted and applied again back to back, without waiting: one group commit where the store makes them.
      const again = revision("invoices", 1, { hash: "a".repeat(64), appliedAt: 1_800_000_000_000 });
      await Promise.all([
        s.commit({ jobs: [job("invoices", 2)], revisions: [revision("invoices", 1), revision("invoices", 2)] }),
        s.commit({ deletedJobs: ["invoices"] }),
        s.commit({ jobs: [job("invoices", 1)], revisions: [again] }),
      ]);
      expect(await s.listRevisions("invoices")).toEqual([again]);
      // A batch that makes a revision of a job it deletes leaves none.
      await s.commit({ revisions: [revision("reports", 2)], deletedJobs: ["reports"] });
      expect(await s.listRevisions("reports")).toEqual([]);

      const snapshot = await restarted(s);
      expect(snapshot.jobs.map((j) => j.name)).toEqual(["invoices"]);
      expect(snapshot.revisions).toEqual([again]);
    });

    it("loads into the snapshot each revision an open execution names and each job's current and stable one", async () => {
      const s = await opened();
      const invoices = [1, 2, 3, 4, 5, 6].map((n) => revision("invoices", n));
      const reports = [revision("reports", 1), revision("reports", 2)];
      await s.commit({
        // "legacy" was applied before revisions were kept: it has none.
        jobs: [{ ...job("invoices", 6), rollout: rollout(3, 6) }, job("reports", 2), job("legacy", 4)],
        revisions: [...invoices, ...reports],
        executions: [
          execution({ job: "invoices", fireTime: 1000, state: "running", revision: 2 }),
          execution({ job: "invoices", fireTime: 1000, shard: 1, state: "succeeded", revision: 1 }),
          execution({ job: "invoices", fireTime: 2000, state: "unknown", revision: 4 }),
          execution({ job: "reports", fireTime: 1000, state: "pending" }),
          execution({ job: "legacy", fireTime: 1000, state: "running" }),
        ],
      });

      const snapshot = await restarted(s);
      for (const needed of [invoices[1], invoices[2], invoices[3], invoices[5], reports[1]]) expect(snapshot.revisions).toContainEqual(needed);
      // Whatever more it loads is the jobs' own history, each revision once.
      for (const loaded of snapshot.revisions) expect([...invoices, ...reports]).toContainEqual(loaded);
      expect(new Set(snapshot.revisions.map((r) => `${r.job}/${r.revision}`)).size).toBe(snapshot.revisions.length);
    });

    it("prunes each job's revisions beyond the limit but its current and stable ones and those open executions name, and counts only executions", async () => {
      const s = await opened();
      const hour = 3_600_000;
      const now = 1000 * hour;
      const running = execution({ job: "invoices", fireTime: now - hour, state: "running", revision: 3 });
      await s.commit({
        // "reports" has revisions past its current one (as a revision made before its job was written would be).
        jobs: [{ ...job("invoices", 8), rollout: rollout(2, 8) }, job("reports", 1)],
        revisions: [...[1, 2, 3, 4, 5, 6, 7, 8].map((n) => revision("invoices", n)), ...[1, 2, 3].map((n) => revision("reports", n))],
        executions: [
          running,
          execution({ job: "invoices", fireTime: now - hour, shard: 1, state: "succeeded", revision: 4 }),
          execution({ job: "invoices", fireTime: now - 300 * hour, state: "failed", revision: 5 }),
        ],
      });

      const policy = { maxAgeMs: 100 * hour, maxPerJob: 1000, revisionsPerJob: 3 };
      expect(await s.prune(policy, now)).toBe(1);
      expect(await numbers(s, "invoices")).toEqual([8, 7, 6, 3, 2]);
      expect(await numbers(s, "reports")).toEqual([3, 2, 1]);
      expect(await s.getRevision("invoices", 3)).toEqual(revision("invoices", 3));

      // The run finishes and the rollout is over: nothing pins 3 and 2 any more.
      await s.commit({ jobs: [job("invoices", 8)], executions: [{ ...running, state: "succeeded", finishedAt: now }] });
      expect(await s.prune({ ...policy, revisionsPerJob: Infinity }, now)).toBe(0);
      expect(await numbers(s, "invoices")).toEqual([8, 7, 6, 3, 2]);
      expect(await s.prune({ ...policy, revisionsPerJob: 1 }, now)).toBe(0);
      expect(await numbers(s, "invoices")).toEqual([8]);
      expect(await numbers(s, "reports")).toEqual([3, 1]);
    });
  });

  describe(`${name} revision and rollout fields`, () => {
    it("keeps an execution's revision and a job's rollout through updates, listing, reading and a restart; absent ones stay absent", async () => {
      const s = await opened();
      const rolling = { ...job("invoices", 3), rollout: rollout(2, 3) };
      const aborted = { ...job("reports", 5), rollout: rollout(4, 5, true) };
      const plain = job("plain");
      const pending = execution({ job: "invoices", fireTime: 1000, state: "pending", agent: "", revision: 2 });
      const settled = execution({ job: "invoices", fireTime: 1000, shard: 1, state: "succeeded", revision: 3 });
      const unpinned = execution({ job: "invoices", fireTime: 1000, shard: 2, state: "running" });
      const older = execution({ job: "invoices", fireTime: 500, state: "failed" });
      await s.commit({ jobs: [rolling, { ...aborted, rollout: rollout(4, 5) }, { ...plain, rollout: rollout(0, 1) }], executions: [pending, settled, unpinned, older] });
      const running = { ...pending, state: "running" as const, agent: "agent-a", startedAt: 1001 };
      // The rollout ends for one job and goes for another.
      await s.commit({ jobs: [aborted, plain], executions: [running] });

      expect(await s.getExecution(running.id)).toEqual(running);
      expect(await s.getExecution(settled.id)).toEqual(settled);
      expect(await s.getExecution(unpinned.id)).not.toHaveProperty("revision");
      expect(await s.listExecutions({ job: "invoices", limit: 10 })).toEqual([running, settled, unpinned, older]);
      expect((await s.listExecutions({ job: "invoices", limit: 10 }))[3]).not.toHaveProperty("revision");

      const snapshot = await restarted(s);
      expect(snapshot.jobs).toEqual([rolling, plain, aborted]);
      expect(snapshot.jobs[0]!.rollout).toStrictEqual(rolling.rollout);
      expect(snapshot.jobs[2]!.rollout).toStrictEqual(aborted.rollout);
      expect(snapshot.jobs[1]).not.toHaveProperty("rollout");
      expect(snapshot.openExecutions).toEqual([running, unpinned]);
      expect(snapshot.openExecutions[1]).not.toHaveProperty("revision");
      expect(snapshot.settledOfOpenFires).toEqual([settled]);
    });
  });

  describe(`${name}.listExecutions`, () => {
    let s: Store;
    const history = [
      execution({ job: "invoices", fireTime: 1000, shard: 0, agent: "agent-a", state: "succeeded" }),
      execution({ job: "invoices", fireTime: 1000, shard: 1, agent: "agent-b", state: "failed" }),
      execution({ job: "invoices", fireTime: 1000, shard: 1, attempt: 2, agent: "agent-a", state: "succeeded" }),
      execution({ job: "invoices", fireTime: 2000, shard: 0, agent: "agent-a", state: "running" }),
      execution({ job: "invoices", fireTime: 2000, shard: 1, agent: "agent-b", state: "pending" }),
      execution({ job: "reports", fireTime: 1500, shard: 0, agent: "agent-b", state: "succeeded" }),
      execution({ job: "reports", fireTime: 3000, shard: 0, agent: "agent-c", state: "misfired" }),
    ];

    beforeEach(async () => {
      s = await opened();
      // Written out of order, so the order seen is the store's own.
      await s.commit({ executions: [...history].reverse() });
    });

    it("lists newest fire first, then shard ascending, then latest attempt first", async () => {
      expect(ids(await s.listExecutions({ limit: 100 }))).toEqual([
        "reports/3000/0/1",
        "invoices/2000/0/1",
        "invoices/2000/1/1",
        "reports/1500/0/1",
        "invoices/1000/0/1",
        "invoices/1000/1/2",
        "invoices/1000/1/1",
      ]);
    });

    it("applies the limit after ordering", async () => {
      expect(ids(await s.listExecutions({ limit: 2 }))).toEqual(["reports/3000/0/1", "invoices/2000/0/1"]);
      expect(await s.listExecutions({ limit: 0 })).toEqual([]);
    });

    it("filters by job", async () => {
      expect(ids(await s.listExecutions({ job: "reports", limit: 100 }))).toEqual(["reports/3000/0/1", "reports/1500/0/1"]);
    });

    it("filters by shard", async () => {
      expect(ids(await s.listExecutions({ shard: 1, limit: 100 }))).toEqual([
        "invoices/2000/1/1",
        "invoices/1000/1/2",
        "invoices/1000/1/1",
      ]);
    });

    it("filters by agent", async () => {
      expect(ids(await s.listExecutions({ agent: "agent-b", limit: 100 }))).toEqual([
        "invoices/2000/1/1",
        "reports/1500/0/1",
        "invoices/1000/1/1",
      ]);
    });

    it("filters by state", async () => {
      expect(ids(await s.listExecutions({ state: "succeeded", limit: 100 }))).toEqual([
        "reports/1500/0/1",
        "invoices/1000/0/1",
        "invoices/1000/1/2",
      ]);
    });

    it("filters by since, inclusive", async () => {
      expect(ids(await s.listExecutions({ since: 2000, limit: 100 }))).toEqual([
        "reports/3000/0/1",
        "invoices/2000/0/1",
        "invoices/2000/1/1",
      ]);
    });

    it("filters by until, exclusive", async () => {
      expect(ids(await s.listExecutions({ until: 1500, limit: 100 }))).toEqual([
        "invoices/1000/0/1",
        "invoices/1000/1/2",
        "invoices/1000/1/1",
      ]);
    });

    it("narrows by every filter given at once", async () => {
      const query = { job: "invoices", shard: 1, agent: "agent-b", state: "failed" as const, since: 1000, until: 2000 };
      expect(ids(await s.listExecutions({ ...query, limit: 100 }))).toEqual(["invoices/1000/1/1"]);
      expect(await s.listExecutions({ ...query, agent: "agent-a", limit: 100 })).toEqual([]);
    });

    it("rejects a limit that is negative or not an integer, naming it", async () => {
      for (const limit of [-1, 1.5, Number.NaN]) {
        const err = await rejection(s.listExecutions({ limit }));
        expect(err.code).toBe("invalid-argument");
        expect(err.details.field).toBe("limit");
      }
    });
  });

  describe(`${name} execution logs`, () => {
    const line = (text: string): { time: number; stream: string; text: string } => ({ time: 5, stream: "stdout", text });

    it("keeps each line once across resends and drops what the agent dropped", async () => {
      const s = await opened();
      const run = execution({ job: "invoices", fireTime: 1000, state: "running" });
      await s.commit({ executions: [run], logs: [{ executionId: run.id, firstLine: 0, keptFrom: 0, lines: [line("a"), line("b")] }] });
      await s.commit({ logs: [{ executionId: run.id, firstLine: 1, keptFrom: 0, lines: [line("b"), line("c")] }] });
      await s.commit({ logs: [{ executionId: run.id, firstLine: 3, keptFrom: 2, lines: [line("d")] }] });

      const log = await s.getExecutionLog!(run.id);
      expect(log?.lines.map((l) => [l.number, l.text])).toEqual([
        [2, "c"],
        [3, "d"],
      ]);
      expect(log?.keptFrom).toBe(2);
      expect(log?.nextLine).toBe(4);
      expect(await s.getExecutionLog!("invoices/1000/1/1")).toBeUndefined();
    });

    it("drops an execution's log with the execution when retention drops it", async () => {
      const s = await opened();
      const hour = 3_600_000;
      const old = execution({ job: "invoices", fireTime: 1000, state: "succeeded" });
      const kept = execution({ job: "invoices", fireTime: 5 * hour, state: "succeeded" });
      await s.commit({
        executions: [old, kept],
        logs: [old, kept].map((e) => ({ executionId: e.id, firstLine: 0, keptFrom: 0, lines: [line(e.id)] })),
      });
      expect(await s.prune({ maxAgeMs: hour, maxPerJob: 1000, revisionsPerJob: 10 }, 5 * hour)).toBe(1);
      expect(await s.getExecutionLog!(old.id)).toBeUndefined();
      expect((await s.getExecutionLog!(kept.id))?.lines.map((l) => l.text)).toEqual([kept.id]);
    });
  });

  describe(`${name} audit trail`, () => {
    const record = (time: number, fields: Partial<AuditRecord> = {}): AuditRecord => ({
      time,
      caller: "alice",
      role: "admin",
      peer: "127.0.0.1:5000",
      method: "PauseJob",
      target: "invoices",
      summary: "paused",
      outcome: "ok",
      error: "",
      ...fields,
    });

    it("lists the audit trail newest first, filtered, and prunes it by its own age and count", async () => {
      const s = await opened();
      const a = record(1000);
      const b = record(2000, { caller: "bob", method: "TriggerJob", summary: "triggered every shard: 2 executions" });
      const c = record(2000, { caller: "", role: "", method: "DeleteJob", target: "reports", outcome: "permission_denied", error: "DeleteJob: vera has role viewer" });
      await s.commit({ audit: [a] });
      await s.commit({ audit: [b, c] });
      expect(await s.listAudit!({ limit: 10 })).toEqual([c, b, a]);
      expect(await s.listAudit!({ limit: 2 })).toEqual([c, b]);
      expect(await s.listAudit!({ limit: 10, caller: "bob" })).toEqual([b]);
      expect(await s.listAudit!({ limit: 10, target: "invoices", since: 1500 })).toEqual([b]);

      const d = record(5000);
      const e = record(5500, { method: "ResumeJob", summary: "resumed" });
      const f = record(5900, { method: "PauseJob" });
      await s.commit({ audit: [d, e, f] });
      await s.prune({ maxAgeMs: Infinity, maxPerJob: Infinity, revisionsPerJob: Infinity, audit: { maxAgeMs: 3500, maxRecords: 2 } }, 6000);
      // Age drops what came before 2500 (a, b, c); count keeps the two newest of the rest.
      expect(await s.listAudit!({ limit: 10 })).toEqual([f, e]);
    });
  });

  describe(`${name}.prune`, () => {
    const hour = 3_600_000;
    const now = 100 * hour;

    it("drops finished executions older than maxAgeMs and never open ones", async () => {
      const s = await opened();
      await s.commit({
        executions: [
          execution({ job: "invoices", fireTime: now - 3 * hour, state: "succeeded" }),
          execution({ job: "invoices", fireTime: now - 3 * hour, shard: 1, state: "lost" }),
          execution({ job: "invoices", fireTime: now - 3 * hour, shard: 2, state: "running" }),
          execution({ job: "invoices", fireTime: now - 3 * hour, shard: 3, state: "pending" }),
          execution({ job: "invoices", fireTime: now - 2 * hour, state: "failed" }),
          execution({ job: "reports", fireTime: now - hour, state: "succeeded" }),
        ],
      });

      expect(await s.prune({ maxAgeMs: 2 * hour, maxPerJob: 1000, revisionsPerJob: 10 }, now)).toBe(2);
      expect(ids(await s.listExecutions({ limit: 100 }))).toEqual([
        `reports/${now - hour}/0/1`,
        `invoices/${now - 2 * hour}/0/1`,
        `invoices/${now - 3 * hour}/2/1`,
        `invoices/${now - 3 * hour}/3/1`,
      ]);
    });

    it("keeps the maxPerJob newest finished executions of each job and every open one", async () => {
      const s = await opened();
      const fires = [1, 2, 3, 4, 5].map((n) => now - n * hour);
      await s.commit({
        executions: [
          ...fires.map((fireTime) => execution({ job: "invoices", fireTime })),
          execution({ job: "invoices", fireTime: fires[4] as number, shard: 1, state: "running" }),
          execution({ job: "invoices", fireTime: fires[0] as number, shard: 1, state: "pending" }),
          execution({ job: "reports", fireTime: fires[4] as number, state: "cancelled" }),
        ],
      });

      expect(await s.prune({ maxAgeMs: 1000 * hour, maxPerJob: 2, revisionsPerJob: 10 }, now)).toBe(3);
      expect(ids(await s.listExecutions({ limit: 100 }))).toEqual([
        `invoices/${fires[0]}/0/1`,
        `invoices/${fires[0]}/1/1`,
        `invoices/${fires[1]}/0/1`,
        `reports/${fires[4]}/0/1`,
        `invoices/${fires[4]}/1/1`,
      ]);
    });

    it("applies both rules in one call and counts every deletion", async () => {
      const s = await opened();
      await s.commit({
        executions: [1, 2, 3, 4].map((n) => execution({ job: "invoices", fireTime: now - n * hour, state: "timed-out" })),
      });

      // Age drops the fire 4 hours back; count then drops the third newest of the rest.
      expect(await s.prune({ maxAgeMs: 3.5 * hour, maxPerJob: 2, revisionsPerJob: 10 }, now)).toBe(2);
      expect(ids(await s.listExecutions({ limit: 100 }))).toEqual([`invoices/${now - hour}/0/1`, `invoices/${now - 2 * hour}/0/1`]);
    });

    it("treats an infinite limit as no limit", async () => {
      const s = await opened();
      await s.commit({ executions: [execution({ job: "invoices", fireTime: 0 })] });
      expect(await s.prune({ maxAgeMs: Infinity, maxPerJob: Infinity, revisionsPerJob: Infinity }, now)).toBe(0);
    });

    it("rejects a negative policy, naming the field", async () => {
      const s = await opened();
      expect((await rejection(s.prune({ maxAgeMs: -1, maxPerJob: 1, revisionsPerJob: 1 }, now))).details.field).toBe("maxAgeMs");
      expect((await rejection(s.prune({ maxAgeMs: 1, maxPerJob: 0.5, revisionsPerJob: 1 }, now))).details.field).toBe("maxPerJob");
      expect((await rejection(s.prune({ maxAgeMs: 1, maxPerJob: 1, revisionsPerJob: -1 }, now))).details.field).toBe("revisionsPerJob");
      expect((await rejection(s.prune({ maxAgeMs: 1, maxPerJob: 1, revisionsPerJob: 1.5 }, now))).details.field).toBe("revisionsPerJob");
    });
  });
}
