import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ExecutionRecord, type ExecutionStateName, FIRE_COMPLETE_SHARD, type JobRecord } from "../store.js";
import { describeStoreContract, execution, ids, job, rejection, revision, rollout, spec, specStoredBeforeRuns } from "../testing/store-contract.js";
import { MIGRATIONS, SCHEMA_VERSION } from "./schema.js";
import { executionListing } from "./sqlite-file.js";
import { SqliteStore } from "./sqlite-store.js";

let dir: string;
let dbPath: string;
const opened: SqliteStore[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "shardline-store-"));
  dbPath = join(dir, "state", "shardline.db");
});

afterEach(async () => {
  for (const store of opened.splice(0)) await store.close();
  await rm(dir, { recursive: true, force: true });
});

/** A store on this test's file (or another path), closed after the test. */
function store(path = dbPath): SqliteStore {
  const s = new SqliteStore(path);
  opened.push(s);
  return s;
}

async function reopen(s: SqliteStore): Promise<{ store: SqliteStore; snapshot: Awaited<ReturnType<SqliteStore["open"]>> }> {
  await s.close();
  const next = store(s.path);
  return { store: next, snapshot: await next.open() };
}


describe("SqliteStore.open", () => {
  it("creates the file and its directory, and starts at term 1", async () => {
    const snapshot = await store().open();
    expect(snapshot).toEqual({ term: 1, jobs: [], cursors: new Map(), openExecutions: [], settledOfOpenFires: [], revisions: [] });
  });

  it("takes one more term on every reopen", async () => {
    let s = store();
    expect((await s.open()).term).toBe(1);
    for (const expected of [2, 3, 4]) {
      const next = await reopen(s);
      expect(next.snapshot.term).toBe(expected);
      s = next.store;
    }
  });

  it("brings back jobs, cursors and open executions after close and reopen", async () => {
    const s = store();
    await s.open();
    const running = execution({ job: "invoices", fireTime: 1000, shard: 2, state: "running", startedAt: 1001 });
    await s.commit({
      jobs: [job("invoices"), { ...job("reports", 3), paused: true }],
      cursors: [
        { job: "invoices", fireTime: 1000 },
        { job: "reports", fireTime: 900 },
      ],
      executions: [running],
    });

    const { snapshot } = await reopen(s);
    expect(snapshot.jobs).toEqual([job("invoices"), { ...job("reports", 3), paused: true }]);
    expect(snapshot.cursors).toEqual(new Map([["invoices", 1000], ["reports", 900]]));
    expect(snapshot.openExecutions).toEqual([running]);
  });

  it("loads only pending and running executions into the snapshot", async () => {
    const s = store();
    await s.open();
    const states: ExecutionStateName[] = [
      "pending", "running", "succeeded", "failed", "timed-out", "cancelled", "lost", "misfired",
    ];
    await s.commit({
      executions: states.map((state, shard) => execution({ job: "invoices", fireTime: 1000, shard, state })),
    });

    const { snapshot } = await reopen(s);
    expect(snapshot.openExecutions.map((e) => e.state)).toEqual(["pending", "running"]);
  });

  it("loads the finished executions of fires that still have open ones, and no others", async () => {
    const s = store();
    await s.open();
    const settled = execution({ job: "invoices", fireTime: 1000, shard: 0, state: "succeeded" });
    const failedThenRetrying = execution({ job: "invoices", fireTime: 1000, shard: 1, state: "failed" });
    await s.commit({
      executions: [
        settled,
        failedThenRetrying,
        execution({ job: "invoices", fireTime: 1000, shard: 1, attempt: 2, state: "pending", cause: "retry" }),
        execution({ job: "invoices", fireTime: 2000, shard: 0, state: "succeeded" }),
        execution({ job: "reports", fireTime: 1000, shard: 0, state: "succeeded" }),
      ],
    });

    const { snapshot } = await reopen(s);
    expect(ids(snapshot.settledOfOpenFires)).toEqual(ids([settled, failedThenRetrying]));
  });

  it("keeps a completion hook run's fire outcome", async () => {
    const s = store();
    await s.open();
    const run = execution({
      job: "invoices",
      fireTime: 1000,
      shard: FIRE_COMPLETE_SHARD,
      id: "invoices/1000/complete/1",
      state: "pending",
      cause: "fire-complete",
      fireOutcome: [
        { shard: 0, state: "succeeded", executionId: "invoices/1000/0/1" },
        { shard: 1, state: "failed", executionId: "invoices/1000/1/2", error: "boom" },
      ],
    });
    await s.commit({ executions: [run] });

    const { snapshot } = await reopen(s);
    expect(snapshot.openExecutions).toEqual([run]);
  });

  it("keeps a finished execution's optional fields and leaves absent ones absent", async () => {
    const s = store();
    await s.open();
    const failed = execution({
      job: "invoices", fireTime: 1000, state: "failed", startedAt: 1001, finishedAt: 1500,
      error: "exit 3", result: "partial", cause: "trigger", parameter: "eu", agent: "agent-b",
    });
    const pending = execution({ job: "invoices", fireTime: 2000, state: "pending", agent: "" });
    await s.commit({ executions: [failed, pending] });

    const { store: again } = await reopen(s);
    expect(await again.getExecution(failed.id)).toStrictEqual(failed);
    expect(await again.getExecution(pending.id)).toStrictEqual(pending);
    expect(await again.getExecution("invoices/1/0/1")).toBeUndefined();
  });

  it("writes the current schema version into a new file", async () => {
    const s = store();
    await s.open();
    // Read once it is closed: the file is locked while a store holds it.
    await s.close();
    const raw = new Database(dbPath, { readonly: true });
    expect(raw.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
    raw.close();
  });

  it("refuses a file written by a newer Shardline, naming the path", async () => {
    await (async () => {
      const s = store();
      await s.open();
      await s.close();
    })();
    const raw = new Database(dbPath);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();

    const err = await rejection(store().open());
    expect(err.code).toBe("failed-precondition");
    expect(err.message).toContain(dbPath);
    expect(err.message).toContain("newer");
  });

  it("refuses a file that is not a database, naming the path", async () => {
    const path = join(dir, "garbage.db");
    await writeFile(path, "this is not an SQLite file, it is a shopping list: eggs, milk, flour\n".repeat(100));

    const err = await rejection(store(path).open());
    expect(err.code).toBe("failed-precondition");
    expect(err.message).toContain(path);
    expect(err.details.field).toBe("--store");
    expect(err.cause).toBeInstanceOf(Error);
  });

  it("refuses a path whose directory cannot be created, naming the path", async () => {
    const blocker = join(dir, "a-file");
    await writeFile(blocker, "");
    const path = join(blocker, "shardline.db");

    const err = await rejection(store(path).open());
    expect(err.code).toBe("failed-precondition");
    expect(err.message).toContain(path);
  });

  it("refuses to be opened twice", async () => {
    const s = store();
    await s.open();
    expect((await rejection(s.open())).code).toBe("failed-precondition");
  });

  it("rejects every operation before open and after close", async () => {
    const s = store();
    expect((await rejection(s.commit({}))).code).toBe("failed-precondition");
    await s.open();
    await s.close();
    await s.close();
    expect((await rejection(s.listExecutions({ limit: 1 }))).code).toBe("failed-precondition");
    expect((await rejection(s.getExecution("x"))).code).toBe("failed-precondition");
  });

  it("runs in memory for tests, starting afresh each time", async () => {
    const s = store(":memory:");
    await s.open();
    await s.commit({ jobs: [job("invoices")] });
    const { snapshot } = await reopen(s);
    expect(snapshot).toEqual({ term: 1, jobs: [], cursors: new Map(), openExecutions: [], settledOfOpenFires: [], revisions: [] });
  });
});

describe("one writer per file", () => {
  it("refuses a second store on the file while the first is open, naming the holder; the first keeps committing", async () => {
    const first = store();
    const { term } = await first.open();

    const err = await rejection(store().open());
    expect(err.code).toBe("failed-precondition");
    expect(err.details).toEqual({ field: "--store", value: dbPath });
    expect(err.message).toBe(
      `the SQLite store at ${dbPath} is in use by another controller (pid ${process.pid} on host ${hostname()}, in term ${term} ` +
        `since ${(await ownerRecord()).since}, as recorded in ${dbPath}.owner); a SQLite file takes one controller: stop that one first, ` +
        "or run several replicas on etcd (--store etcd://HOST:2379)",
    );

    const running = execution({ job: "invoices", fireTime: 1000, state: "running", startedAt: 1001 });
    await first.commit({ jobs: [job("invoices")], executions: [running] });
    expect(await first.getExecution(running.id)).toEqual(running);

    // The refused store took no term: the next one after the first is the first's plus one.
    const { snapshot } = await reopen(first);
    expect(snapshot.term).toBe(term + 1);
    expect(snapshot.jobs).toEqual([job("invoices")]);
    expect(snapshot.openExecutions).toEqual([running]);
  });

  it("records its holder beside the file while open, keeps the WAL index in its own memory, and removes the record on close", async () => {
    const s = store();
    const { term } = await s.open();
    const record = await ownerRecord();
    expect(record).toEqual({ pid: process.pid, host: hostname(), since: expect.any(String) as unknown, term });
    expect(Number.isNaN(Date.parse(record.since))).toBe(false);
    expect(existsSync(`${dbPath}-shm`)).toBe(false);
    await s.close();
    expect(existsSync(`${dbPath}.owner`)).toBe(false);
  });

  it("overwrites a record left behind by a holder that died", async () => {
    await mkdir(dirname(dbPath), { recursive: true });
    await writeFile(`${dbPath}.owner`, JSON.stringify({ pid: 999_999, host: "gone", since: "2020-01-01T00:00:00.000Z", term: 41 }));
    const { term } = await store().open();
    expect(await ownerRecord()).toMatchObject({ pid: process.pid, host: hostname(), term });
  });

  it("names no holder when the file is locked by a program that recorded none", async () => {
    const s = store();
    await s.open();
    await s.close();
    const other = new Database(dbPath);
    other.pragma("locking_mode = EXCLUSIVE");
    other.exec("BEGIN IMMEDIATE; COMMIT");
    try {
      const err = await rejection(store().open());
      expect(err.code).toBe("failed-precondition");
      expect(err.message).toContain(`the SQLite store at ${dbPath} is locked by another process (${dbPath}.owner names no holder: `);
      expect(err.message).toContain("; a SQLite file takes one controller: ");
    } finally {
      other.close();
    }
    expect((await reopen(s)).snapshot.term).toBe(2);
  });

  it("takes no lock and writes no record in memory", async () => {
    await store(":memory:").open();
    await store(":memory:").open();
    expect(existsSync(":memory:.owner")).toBe(false);
  });
});

async function ownerRecord(): Promise<{ pid: number; host: string; since: string; term: number }> {
  return JSON.parse(await readFile(`${dbPath}.owner`, "utf8")) as { pid: number; host: string; since: string; term: number };
}

describe("schema upgrades", () => {
  it("keeps disabled shards and a retry's not-before time", async () => {
    const s = store();
    await s.open();
    const retry = { ...execution({ job: "a", fireTime: 1000, attempt: 2, state: "pending", agent: "" }), cause: "retry" as const, notBefore: 5000 };
    await s.commit({ jobs: [{ ...job("a"), disabledShards: [1, 3] }], executions: [retry] });
    const { snapshot } = await reopen(s);
    expect(snapshot.jobs[0]!.disabledShards).toEqual([1, 3]);
    expect(snapshot.openExecutions).toEqual([retry]);
  });

  it("stores a job's spec in the manifest's shape, as every version did, so an older controller reads it too", async () => {
    const s = store();
    await s.open();
    await s.commit({ jobs: [job("a")] });
    await s.close();
    const raw = new Database(dbPath, { readonly: true });
    const row = raw.prepare("SELECT spec_json FROM jobs WHERE name = ?").get("a") as { spec_json: string };
    raw.close();
    expect(row.spec_json).toBe(specStoredBeforeRuns("a"));
  });

  it("stores a revision's spec in the manifest's shape, as a job's, and reads one stored so", async () => {
    const s = store();
    await s.open();
    const first = revision("a", 1, { spec: spec("a") });
    await s.commit({ jobs: [job("a")], revisions: [first] });
    expect(await s.getRevision("a", 1)).toEqual(first);
    await s.close();
    const raw = new Database(dbPath, { readonly: true });
    const row = raw.prepare("SELECT spec_json FROM revisions WHERE job = ? AND revision = ?").get("a", 1) as { spec_json: string };
    raw.close();
    expect(row.spec_json).toBe(specStoredBeforeRuns("a"));
    const { snapshot } = await reopen(s);
    expect(snapshot.revisions).toEqual([first]);
  });

  it("reads a job whose spec was stored before JobSpec.runs", async () => {
    const s = store();
    await s.open();
    await s.commit({ jobs: [job("a")] });
    await s.close();
    const edit = new Database(dbPath);
    edit.prepare("UPDATE jobs SET spec_json = ? WHERE name = ?").run(specStoredBeforeRuns("a"), "a");
    edit.close();
    const snapshot = await store().open();
    expect(snapshot.jobs).toEqual([job("a")]);
  });

  it("upgrades a file written by the first schema in place, keeping its rows", async () => {
    await mkdir(dirname(dbPath), { recursive: true });
    const old = new Database(dbPath);
    old.exec(MIGRATIONS[0]!);
    old.pragma("user_version = 1");
    old.prepare("INSERT INTO jobs (name, manifest, spec_json, paused, revision) VALUES (?, ?, ?, 0, 1)").run("a", "m", JSON.stringify(spec("a")));
    old.close();
    const s = store();
    const snapshot = await s.open();
    expect(snapshot.jobs.map((j) => [j.name, j.disabledShards])).toEqual([["a", []]]);
    await s.close();
    const check = new Database(dbPath, { readonly: true });
    expect(check.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    check.close();
  });

  it("upgrades a file whose executions_by_state held every state, keeping its rows and what each state lists", async () => {
    const before = 8;
    await mkdir(dirname(dbPath), { recursive: true });
    const old = new Database(dbPath);
    for (const step of MIGRATIONS.slice(0, before)) old.exec(step);
    old.pragma(`user_version = ${before}`);
    const states: ExecutionStateName[] = ["pending", "running", "succeeded", "failed", "succeeded", "unknown", "lost"];
    const rows = states.map((state, shard) => execution({ job: "a", fireTime: 2000, shard, state }));
    const insert = old.prepare("INSERT INTO executions (id, job, shard, fire_time, attempt, agent, state, cause, parameter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    for (const e of rows) insert.run(e.id, e.job, e.shard, e.fireTime, e.attempt, e.agent, e.state, e.cause, e.parameter);
    old.close();

    const s = store();
    const snapshot = await s.open();
    expect(ids(snapshot.openExecutions)).toEqual(ids(rows.filter((e) => ["pending", "running", "unknown"].includes(e.state))));
    for (const state of new Set(states)) expect(await s.listExecutions({ state, limit: 10 })).toEqual(rows.filter((e) => e.state === state));
    await s.close();
    const check = new Database(dbPath, { readonly: true });
    const index = check.prepare("SELECT sql FROM sqlite_master WHERE name = 'executions_by_state'").get() as { sql: string };
    check.close();
    expect(index.sql).toContain("WHERE state <> 'succeeded'");
  });

  it("upgrades a file written before revisions were kept, keeping its rows, with no revision or rollout", async () => {
    const before = 5;
    expect(SCHEMA_VERSION).toBeGreaterThan(before);
    await mkdir(dirname(dbPath), { recursive: true });
    const old = new Database(dbPath);
    for (const step of MIGRATIONS.slice(0, before)) old.exec(step);
    old.pragma(`user_version = ${before}`);
    old.prepare("INSERT INTO meta (id, term) VALUES (1, 7)").run();
    old.prepare("INSERT INTO jobs (name, manifest, spec_json, paused, revision, disabled_shards) VALUES (?, ?, ?, 1, 4, '[2]')").run("a", job("a").manifest, specStoredBeforeRuns("a"));
    old.prepare("INSERT INTO cursors (job, fire_time) VALUES ('a', 2000)").run();
    const insert = old.prepare(
      `INSERT INTO executions (id, job, shard, fire_time, attempt, agent, state, started_at, finished_at, error, result, cause, parameter, not_before, fire_outcome, trace_context, grace_ms)
       VALUES (?, 'a', ?, 2000, 1, 'agent-a', ?, 2001, ?, NULL, NULL, 'schedule', 'eu', NULL, NULL, ?, ?)`,
    );
    insert.run("a/2000/0/1", 0, "running", null, '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}', 15_000);
    insert.run("a/2000/1/1", 1, "succeeded", 2500, null, 15_000);
    old.close();

    const s = store();
    const snapshot = await s.open();
    const running = execution({
      job: "a", fireTime: 2000, state: "running", startedAt: 2001, parameter: "eu", disconnectGraceMs: 15_000,
      traceContext: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
    });
    const settled = execution({ job: "a", fireTime: 2000, shard: 1, state: "succeeded", startedAt: 2001, finishedAt: 2500, parameter: "eu", disconnectGraceMs: 15_000 });
    expect(snapshot).toEqual({
      term: 8,
      jobs: [{ ...job("a", 4), paused: true, disabledShards: [2] }],
      cursors: new Map([["a", 2000]]),
      openExecutions: [running],
      settledOfOpenFires: [settled],
      revisions: [],
    });
    expect(snapshot.jobs[0]).not.toHaveProperty("rollout");
    for (const e of [...snapshot.openExecutions, ...snapshot.settledOfOpenFires]) expect(e).not.toHaveProperty("revision");
    expect(await s.listRevisions("a")).toEqual([]);
    expect(await s.getExecution(settled.id)).toStrictEqual(settled);

    // What the new columns and table hold is written and read next to the old rows.
    const pinned = { ...running, revision: 4 };
    await s.commit({ jobs: [{ ...job("a", 4), rollout: rollout(3, 4) }], revisions: [revision("a", 3), revision("a", 4)], executions: [pinned] });
    const { snapshot: after } = await reopen(s);
    expect(after.jobs).toEqual([{ ...job("a", 4), rollout: rollout(3, 4) }]);
    expect(after.openExecutions).toEqual([pinned]);
    expect(after.revisions).toEqual([revision("a", 3), revision("a", 4)]);
  });
});

describe("SqliteStore.commit", () => {
  it("replaces an execution with the same id", async () => {
    const s = store();
    await s.open();
    const pending = execution({ job: "invoices", fireTime: 1000, state: "pending", agent: "" });
    const done = { ...pending, state: "succeeded" as const, agent: "agent-a", startedAt: 1001, finishedAt: 1002, result: "ok" };
    await s.commit({ executions: [pending] });
    await s.commit({ executions: [done] });

    expect(await s.listExecutions({ limit: 10 })).toStrictEqual([done]);
  });

  it("replaces a job and its cursor", async () => {
    const s = store();
    await s.open();
    await s.commit({ jobs: [job("invoices", 1)], cursors: [{ job: "invoices", fireTime: 1000 }] });
    const changed: JobRecord = { ...job("invoices", 2), manifest: "changed", paused: true };
    await s.commit({ jobs: [changed], cursors: [{ job: "invoices", fireTime: 2000 }] });

    const { snapshot } = await reopen(s);
    expect(snapshot.jobs).toEqual([changed]);
    expect(snapshot.cursors).toEqual(new Map([["invoices", 2000]]));
  });

  it("deletes a job but keeps its cursor and its execution history", async () => {
    const s = store();
    await s.open();
    const history = [
      execution({ job: "invoices", fireTime: 1000 }),
      execution({ job: "invoices", fireTime: 2000, state: "running" }),
    ];
    await s.commit({
      jobs: [job("invoices"), job("reports")],
      cursors: [{ job: "invoices", fireTime: 2000 }, { job: "reports", fireTime: 500 }],
      executions: history,
    });
    await s.commit({ deletedJobs: ["invoices"] });

    const { store: again, snapshot } = await reopen(s);
    expect(snapshot.jobs.map((j) => j.name)).toEqual(["reports"]);
    // The cursor stays: a job applied again under the name fires after it (see StoreBatch).
    expect(snapshot.cursors).toEqual(new Map([["invoices", 2000], ["reports", 500]]));
    expect(ids(await again.listExecutions({ job: "invoices", limit: 10 }))).toEqual([
      "invoices/2000/0/1",
      "invoices/1000/0/1",
    ]);
  });

  it("writes nothing of a batch that fails midway, and keeps what was there", async () => {
    const s = store();
    await s.open();
    await s.commit({ jobs: [job("invoices", 1)], cursors: [{ job: "invoices", fireTime: 1000 }] });

    const broken = { ...execution({ job: "reports", fireTime: 3000, shard: 1 }), cause: null } as unknown as ExecutionRecord;
    const err = await rejection(
      s.commit({
        jobs: [job("invoices", 2), job("reports")],
        deletedJobs: ["invoices"],
        cursors: [{ job: "reports", fireTime: 3000 }],
        executions: [execution({ job: "reports", fireTime: 3000, shard: 0 }), broken],
      }),
    );
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("NOT NULL");
    expect(err.cause).toBeInstanceOf(Error);

    const { store: again, snapshot } = await reopen(s);
    expect(snapshot.jobs).toEqual([job("invoices", 1)]);
    expect(snapshot.cursors).toEqual(new Map([["invoices", 1000]]));
    expect(await again.listExecutions({ limit: 10 })).toEqual([]);
  });

  it("commits 10,000 executions, then their updates, each in one batch", async () => {
    const s = store();
    await s.open();
    const batch = Array.from({ length: 10_000 }, (_, i) =>
      execution({ job: `job-${i % 20}`, fireTime: 1_700_000_000_000 + Math.floor(i / 20) * 1000, shard: i % 7, state: "pending", agent: "" }),
    );
    await s.commit({ executions: batch, cursors: [{ job: "job-0", fireTime: 1_700_000_000_000 }] });
    const updated = batch.map((e) => ({ ...e, state: "running" as const, agent: "agent-a", startedAt: e.fireTime + 5 }));
    await s.commit({ executions: updated });
    const open = (await reopen(s)).snapshot.openExecutions;
    expect(open).toHaveLength(10_000);
    expect(open.every((e) => e.state === "running" && e.agent === "agent-a")).toBe(true);
  });

  it("writes commits made back to back, without waiting, in the order they were made", async () => {
    const s = store();
    await s.open();
    const commits: Promise<void>[] = [];
    for (let i = 1; i <= 200; i++) {
      const e = execution({ job: "tick", fireTime: 1000, state: i % 2 === 0 ? "running" : "pending", agent: `agent-${i}` });
      commits.push(s.commit({ executions: [e], cursors: [{ job: "tick", fireTime: i }] }));
    }
    await Promise.all(commits);
    const { snapshot } = await reopen(s);
    expect(snapshot.cursors).toEqual(new Map([["tick", 200]]));
    expect(snapshot.openExecutions).toEqual([execution({ job: "tick", fireTime: 1000, state: "running", agent: "agent-200" })]);
  });

  it("after a failed commit, fails every later one and writes none of them", async () => {
    const s = store();
    await s.open();
    await s.commit({ cursors: [{ job: "tick", fireTime: 1 }] });
    const broken = { ...execution({ job: "tick", fireTime: 2000 }), cause: null } as unknown as ExecutionRecord;
    const failing = s.commit({ executions: [broken], cursors: [{ job: "tick", fireTime: 2 }] });
    const later = s.commit({ cursors: [{ job: "tick", fireTime: 3 }] });
    expect((await rejection(failing)).message).toContain("NOT NULL");
    expect((await rejection(later)).message).toContain("NOT NULL");
    expect((await rejection(s.commit({ cursors: [{ job: "tick", fireTime: 4 }] }))).code).toBe("unavailable");
    const { snapshot } = await reopen(s);
    expect(snapshot.cursors).toEqual(new Map([["tick", 1]]));
  });

  it("fails a batch it cannot hand to its thread, and every later one, writing none of them", async () => {
    const s = store();
    await s.open();
    await s.commit({ cursors: [{ job: "tick", fireTime: 1 }] });
    const unwritable = { ...execution({ job: "tick", fireTime: 2000 }), traceContext: { traceparent: 1n } } as unknown as ExecutionRecord;
    const err = await rejection(s.commit({ executions: [unwritable], cursors: [{ job: "tick", fireTime: 2 }] }));
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain("BigInt");
    expect((await rejection(s.commit({ cursors: [{ job: "tick", fireTime: 3 }] }))).message).toBe(err.message);
    const { snapshot } = await reopen(s);
    expect(snapshot.cursors).toEqual(new Map([["tick", 1]]));
  });
});

describe("execution listings", () => {
  it("walk an index for every combination of filters, never the whole table", async () => {
    const s = store();
    await s.open();
    await s.commit({ executions: [execution({ job: "invoices", fireTime: 1000 }), execution({ job: "invoices", fireTime: 1000, shard: 1, state: "failed" })] });
    await s.close();
    const raw = new Database(dbPath, { readonly: true });
    const filters = { job: "invoices", shard: 1, agent: "agent-a", state: "failed", since: 500, until: 2000 } as const;
    const names = Object.keys(filters) as (keyof typeof filters)[];
    try {
      for (let chosen = 0; chosen < 1 << names.length; chosen++) {
        for (const state of ["failed", "pending", "succeeded"] as const) {
          const query = Object.fromEntries(names.filter((_, i) => chosen & (1 << i)).map((name) => [name, name === "state" ? state : filters[name]]));
          const { sql, params } = executionListing({ ...query, limit: 10 });
          const plan = (raw.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map((row) => row.detail);
          // Listed by job, agent or a state in executions_by_state: a search of an index by it; else a walk of one in listing order.
          const selective = "job" in query || "agent" in query || ("state" in query && state !== "succeeded");
          const walk = selective ? /^SEARCH executions USING INDEX executions_by_/ : /^(SEARCH|SCAN) executions USING INDEX executions_by_/;
          expect(plan.some((step) => walk.test(step)), `${JSON.stringify(query)}: ${plan.join(" / ")}`).toBe(true);
        }
      }
    } finally {
      raw.close();
    }
  });
});

describe("SqliteStore.commit of executions it wrote before", () => {
  it("updates an open execution's changing columns and keeps those its id fixes as first written", async () => {
    const s = store();
    await s.open();
    const pending = execution({ job: "invoices", fireTime: 1000, state: "pending", agent: "", parameter: "eu", cause: "trigger", revision: 2, traceContext: { traceparent: "00-a-b-01" } });
    await s.commit({ executions: [pending] });
    const running = { ...pending, agent: "agent-a", state: "running" as const, startedAt: 1001, disconnectGraceMs: 15_000 };
    await s.commit({ executions: [running] });
    // A later record that also says other things about what the id fixes: those stay as first written.
    const done = { ...running, state: "failed" as const, finishedAt: 1500, error: "exit 3", result: "partial", parameter: "us", cause: "retry" as const, traceContext: { traceparent: "00-c-d-01" }, revision: 3 };
    await s.commit({ executions: [done] });

    const stored = { ...done, parameter: "eu", cause: "trigger" as const, traceContext: { traceparent: "00-a-b-01" } };
    expect(await s.getExecution(pending.id)).toStrictEqual(stored);
    expect(await s.listExecutions({ agent: "agent-a", limit: 10 })).toStrictEqual([stored]);
    expect(await s.listExecutions({ state: "failed", limit: 10 })).toStrictEqual([stored]);
    expect(await s.listExecutions({ agent: "", limit: 10 })).toEqual([]);
    expect((await reopen(s)).snapshot.openExecutions).toEqual([]);
  });

  it("clears an update's optional columns the record no longer has, and moves it to a new agent", async () => {
    const s = store();
    await s.open();
    const retry = execution({ job: "invoices", fireTime: 1000, state: "pending", agent: "agent-a", notBefore: 5000, error: "earlier" });
    await s.commit({ executions: [retry] });
    const { notBefore: _n, error: _e, ...withoutThem } = retry;
    const moved = { ...withoutThem, agent: "agent-b", state: "running" as const, startedAt: 6000 };
    await s.commit({ executions: [moved] });
    expect(await s.getExecution(retry.id)).toStrictEqual(moved);
    expect(ids(await s.listExecutions({ agent: "agent-b", limit: 10 }))).toEqual([retry.id]);
    expect(await s.listExecutions({ agent: "agent-a", limit: 10 })).toEqual([]);
    expect((await reopen(s)).snapshot.openExecutions).toStrictEqual([moved]);
  });

  it("writes several records of one execution in one batch, and in a group of batches, in the order given", async () => {
    const s = store();
    await s.open();
    const pending = execution({ job: "invoices", fireTime: 1000, state: "pending", agent: "" });
    const running = { ...pending, state: "running" as const, agent: "agent-a", startedAt: 1001 };
    const lost = { ...running, state: "lost" as const, finishedAt: 1002 };
    const unknown = { ...running, state: "unknown" as const };
    await s.commit({ executions: [pending, running, lost, unknown] });
    expect(await s.getExecution(pending.id)).toStrictEqual(unknown);
    const succeeded = { ...running, state: "succeeded" as const, finishedAt: 1003 };
    await Promise.all([s.commit({ executions: [running] }), s.commit({ executions: [succeeded] }), s.commit({ executions: [unknown, lost] })]);
    expect(await s.getExecution(pending.id)).toStrictEqual(lost);
    expect((await reopen(s)).snapshot.openExecutions).toEqual([]);
  });

  it("updates the open executions of the snapshot it opened with", async () => {
    const s = store();
    await s.open();
    const running = execution({ job: "invoices", fireTime: 1000, state: "running", agent: "agent-a", startedAt: 1001 });
    await s.commit({ executions: [running] });
    const { store: again } = await reopen(s);
    const done = { ...running, state: "succeeded" as const, finishedAt: 1500 };
    await again.commit({ executions: [done] });
    expect(await again.getExecution(running.id)).toStrictEqual(done);
  });

  it("keeps text as it was given: quotes, control characters, non-ASCII and empty strings", async () => {
    const s = store();
    await s.open();
    const odd = execution({
      job: "invoices",
      fireTime: 1000,
      state: "running",
      agent: "agent-ä",
      parameter: "",
      traceContext: { traceparent: "00-\"q\"\\-\n-01", tracestate: "名前=値,🚀=1" },
    });
    await s.commit({ executions: [odd] });
    const done = { ...odd, state: "failed" as const, error: "line 1\nline 2\t\"quoted\" \\ 🚀 \u0000", result: "", finishedAt: 2000 };
    await s.commit({ executions: [done] });
    expect(await s.getExecution(odd.id)).toStrictEqual(done);
  });
});


describeStoreContract(
  "SqliteStore",
  async () => {
    const s = store();
    await s.open();
    return s;
  },
  async (s) => (await reopen(s as SqliteStore)).snapshot,
);
