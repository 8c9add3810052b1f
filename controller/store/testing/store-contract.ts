import { expect, describe, it, beforeEach } from "vitest";
import { ShardlineError } from "../../../shared/errors.js";
import type { JobSpec } from "../../../shared/manifest/job-spec.js";
import { testSpec } from "../../core/testing/core-harness.js";
import type { ExecutionRecord, JobRecord, Store, StoreSnapshot } from "../store.js";

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

      expect(await s.prune({ maxAgeMs: 2 * hour, maxPerJob: 1000 }, now)).toBe(2);
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

      expect(await s.prune({ maxAgeMs: 1000 * hour, maxPerJob: 2 }, now)).toBe(3);
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
      expect(await s.prune({ maxAgeMs: 3.5 * hour, maxPerJob: 2 }, now)).toBe(2);
      expect(ids(await s.listExecutions({ limit: 100 }))).toEqual([`invoices/${now - hour}/0/1`, `invoices/${now - 2 * hour}/0/1`]);
    });

    it("treats an infinite limit as no limit", async () => {
      const s = await opened();
      await s.commit({ executions: [execution({ job: "invoices", fireTime: 0 })] });
      expect(await s.prune({ maxAgeMs: Infinity, maxPerJob: Infinity }, now)).toBe(0);
    });

    it("rejects a negative policy, naming the field", async () => {
      const s = await opened();
      expect((await rejection(s.prune({ maxAgeMs: -1, maxPerJob: 1 }, now))).details.field).toBe("maxAgeMs");
      expect((await rejection(s.prune({ maxAgeMs: 1, maxPerJob: 0.5 }, now))).details.field).toBe("maxPerJob");
    });
  });
}
