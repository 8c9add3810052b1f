import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { TokenFile } from "../../shared/security/token-file.js";
import { addService, createClient, createServer, listen, shutdown } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { DEFAULT_CORE_CONFIG } from "../core/config.js";
import { ControllerCore } from "../core/controller-core.js";
import { SqliteStore } from "../store/sqlite/sqlite-store.js";
import type { Store } from "../store/store.js";
import { adminService, type AdminServiceOptions } from "./admin-service.js";
import { Authorization, authorizedAdmin } from "./authorization.js";
import { CoreDriver } from "./core-driver.js";

/**
 * A real SQLite store whose history reads wait until the test lets them go, to see how many
 * reach the store at once and in which order. Each read is named by the job it asks for.
 */
class GatedStore {
  readonly reads: { job: string; release: () => void }[] = [];
  readonly inner = new SqliteStore(":memory:");
  #arrived: (() => void)[] = [];

  asStore(): Store {
    const gate = <T>(job: string, read: () => Promise<T>): Promise<T> =>
      new Promise<void>((resolve) => {
        this.reads.push({ job, release: resolve });
        for (const wake of this.#arrived.splice(0)) wake();
      }).then(read);
    return {
      open: () => this.inner.open(),
      commit: (batch) => this.inner.commit(batch),
      listExecutions: (query) => gate(query.job ?? "", () => this.inner.listExecutions(query)),
      getExecution: (id) => gate(id, () => this.inner.getExecution(id)),
      listRevisions: (job) => this.inner.listRevisions(job),
      getRevision: (job, revision) => this.inner.getRevision(job, revision),
      prune: (policy, now) => this.inner.prune(policy, now),
      close: () => this.inner.close(),
    };
  }

  /** Resolves once `count` reads have reached the store. */
  async reached(count: number): Promise<void> {
    while (this.reads.length < count) await new Promise<void>((resolve) => this.#arrived.push(resolve));
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The admin service over a gated store, served on loopback, and a client of it. */
async function serve(options: AdminServiceOptions = {}) {
  const gated = new GatedStore();
  const store = gated.asStore();
  const core = new ControllerCore(DEFAULT_CORE_CONFIG, await store.open(), Date.now());
  const driver = new CoreDriver(core, store, silentLogger(), (error) => {
    throw error;
  });
  await driver.start();
  const server = createServer();
  addService(server, AdminService, adminService(core, driver, store, new Map(), options));
  const port = await listen(server, "127.0.0.1:0");
  const client = createClient(AdminService, `127.0.0.1:${port}`, { deadlineMs: 10_000 });
  cleanups.push(async () => {
    client.close();
    for (const read of gated.reads) read.release();
    await shutdown(server, 100);
    driver.stop();
    await store.close();
  });
  return { gated, client };
}

describe("AdminService history reads", () => {
  it("lets one read reach the store at a time, in the order the calls came", async () => {
    const { gated, client } = await serve({ maxHistoryReads: 1 });
    const first = client.listExecutions({ job: "first" });
    await gated.reached(1);
    const second = client.listExecutions({ job: "second" });
    // Calls on one connection are served in the order they were sent: once a later one is
    // answered, the second is waiting for its turn.
    await client.listJobs({});
    const third = client.getExecution({ id: "third/1700000000000/0/1" }).catch((e: unknown) => e);
    await client.listJobs({});
    expect(gated.reads.map((r) => r.job)).toEqual(["first"]);

    gated.reads[0]!.release();
    expect((await first).executions).toEqual([]);
    await gated.reached(2);
    expect(gated.reads.map((r) => r.job)).toEqual(["first", "second"]);
    gated.reads[1]!.release();
    await second;
    await gated.reached(3);
    gated.reads[2]!.release();
    expect(String(await third)).toMatch(/not found/);
    expect(gated.reads.map((r) => r.job)).toEqual(["first", "second", "third/1700000000000/0/1"]);
  });

  it("takes a call that ends while it waits out of the line, so it never reads", async () => {
    const { gated, client } = await serve({ maxHistoryReads: 1 });
    const first = client.listExecutions({ job: "first" });
    await gated.reached(1);
    const abort = new AbortController();
    const abandoned = client.listExecutions({ job: "abandoned" }, { signal: abort.signal }).catch((e: unknown) => e);
    await client.listJobs({});
    abort.abort(new Error("the user gave up"));
    expect(String(await abandoned)).toMatch(/the user gave up/);
    const next = client.listExecutions({ job: "next" });
    await client.listJobs({});

    gated.reads[0]!.release();
    await first;
    await gated.reached(2);
    gated.reads[1]!.release();
    await next;
    expect(gated.reads.map((r) => r.job)).toEqual(["first", "next"]);
  });

  it("lets two reads reach the store at once by default", async () => {
    const { gated, client } = await serve();
    const calls = ["a", "b", "c"].map((job) => client.listExecutions({ job }));
    await gated.reached(2);
    await client.listJobs({});
    expect(gated.reads.map((r) => r.job)).toEqual(["a", "b"]);
    gated.reads[1]!.release();
    await gated.reached(3);
    for (const read of gated.reads) read.release();
    await Promise.all(calls);
    expect(gated.reads.map((r) => r.job)).toEqual(["a", "b", "c"]);
  });

  it("refuses a bound below 1, naming the option", () => {
    const store = new SqliteStore(":memory:");
    const core = new ControllerCore(DEFAULT_CORE_CONFIG, { term: 1, jobs: [], cursors: new Map(), openExecutions: [], settledOfOpenFires: [], revisions: [] }, 0);
    const driver = new CoreDriver(core, store, silentLogger(), () => {});
    expect(() => adminService(core, driver, store, new Map(), { maxHistoryReads: 0 })).toThrow(/maxHistoryReads: 0 is not allowed/);
  });
});

const ALICE = "alice-token-0123456789abcdef";
const BOB = "bob-token-0123456789abcdef";

/**
 * The admin service on a real SQLite store, served on loopback; with `tokens`, behind the
 * authorization wrapper (alice is an admin, bob an operator), and a client for each name.
 */
async function serveRollouts(tokens: boolean) {
  const store = new SqliteStore(":memory:");
  const core = new ControllerCore(DEFAULT_CORE_CONFIG, await store.open(), Date.now());
  const driver = new CoreDriver(core, store, silentLogger(), (error) => {
    throw error;
  });
  await driver.start();
  const dir = await mkdtemp(join(tmpdir(), "shardline-admin-"));
  await writeFile(join(dir, "tokens"), `${ALICE},alice,admin\n${BOB},bob,operator\n`);
  const impl = adminService(core, driver, store, new Map());
  const server = createServer();
  addService(server, AdminService, tokens ? authorizedAdmin(impl as Record<string, unknown>, new Authorization(new TokenFile(join(dir, "tokens")), silentLogger())) : impl);
  const port = await listen(server, "127.0.0.1:0");
  const clientOf = (token?: string) =>
    createClient(AdminService, `127.0.0.1:${port}`, { deadlineMs: 10_000, ...(token === undefined ? {} : { metadata: { authorization: `Bearer ${token}` } }) });
  const alice = clientOf(tokens ? ALICE : undefined);
  const bob = clientOf(tokens ? BOB : undefined);
  cleanups.push(async () => {
    alice.close();
    bob.close();
    await shutdown(server, 100);
    driver.stop();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { alice, bob };
}

/** A job of four shards, manual triggers only, whose changes go to half the shards, then wait to be promoted. */
function sweep(parameter: string): string {
  return `apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: sweep}
spec: {shards: 4, handler: work, parameter: ${parameter}, rollout: {steps: [{weight: 50}, {pause: {}}]}}`;
}

/** What a call failed with: the error's code and message. */
async function failure(call: Promise<unknown>): Promise<{ code: string; message: string }> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof ShardlineError)) throw new Error(`expected a ShardlineError, got ${String(error)}`);
  return { code: error.code, message: error.message };
}

describe("AdminService rollouts and revisions", () => {
  it("shows each job's revision and rollout, and records who applied each revision by its token's name", async () => {
    const { alice, bob } = await serveRollouts(true);
    expect((await alice.applyJob({ manifest: sweep("v1") })).job?.rollout).toMatchObject({ phase: "none", currentRevision: 1n, stableRevision: 1n, step: 0 });
    const applied = await alice.applyJob({ manifest: sweep("v2") });
    expect(applied.job?.revision).toBe(2n);
    const status = (await bob.getRollout({ job: "sweep" })).rollout!;
    expect(status).toMatchObject({
      phase: "paused",
      currentRevision: 2n,
      stableRevision: 1n,
      targetRevision: 2n,
      steps: ["weight: 50% of the shards", "pause: until promoted"],
      step: 2,
      waiting: "paused until promoted (shardline rollout promote)",
      target: { runs: 0, failures: 0 },
      reason: "",
      endedAtUnixMs: 0n,
    });
    expect(status.target?.p95DurationMs).toBeUndefined();
    expect(status.stepStartedAtUnixMs).toBeGreaterThan(0n);
    expect(status.shardsByRevision.map((entry) => [entry.revision, entry.shards.length])).toEqual([
      [1n, 2],
      [2n, 2],
    ]);
    expect((await bob.getJob({ name: "sweep" })).job?.rollout).toEqual(status);
    expect((await bob.listJobs({})).jobs[0]?.rollout).toEqual(status);

    const revisions = (await bob.listRevisions({ job: "sweep" })).revisions;
    expect(revisions.map((r) => [r.job, r.revision, r.appliedBy, r.undoOf])).toEqual([
      ["sweep", 2n, "alice", 0n],
      ["sweep", 1n, "alice", 0n],
    ]);
    expect(revisions[0]!.manifest).toBe(sweep("v2"));
    expect(revisions[0]!.specHash).toMatch(/^[0-9a-f]{64}$/);
    expect(revisions[0]!.specHash).not.toBe(revisions[1]!.specHash);
    expect(revisions[0]!.appliedAtUnixMs).toBeGreaterThan(0n);

    // Every execution says which revision it runs: the shards of one fire run two while the rollout is under way.
    await bob.triggerJob({ name: "sweep" });
    const { executions } = await bob.listExecutions({ job: "sweep" });
    expect(executions.map((e) => [e.shard, e.state, e.revision]).sort()).toEqual(
      status.shardsByRevision.flatMap((entry) => entry.shards.map((shard) => [shard, ExecutionState.PENDING, entry.revision])).sort(),
    );
    expect((await bob.getExecution({ id: executions[0]!.id })).execution?.revision).toBe(executions[0]!.revision);
  });

  it("promotes, aborts and retries a rollout, and refuses each with the core's words when none is in progress", async () => {
    const { alice, bob } = await serveRollouts(true);
    await alice.applyJob({ manifest: sweep("v1") });
    expect(await failure(bob.promoteRollout({ job: "sweep" }))).toEqual({ code: "failed-precondition", message: "job sweep has never rolled out a change: nothing to promote" });
    await alice.applyJob({ manifest: sweep("v2") });

    const promoted = (await bob.promoteRollout({ job: "sweep" })).rollout!;
    expect(promoted).toMatchObject({ phase: "completed", stableRevision: 2n, targetRevision: 2n, step: 3 });
    expect(promoted.shardsByRevision).toEqual([expect.objectContaining({ revision: 2n, shards: [0, 1, 2, 3] })]);
    expect(await failure(bob.abortRollout({ job: "sweep" }))).toEqual({ code: "failed-precondition", message: "job sweep has no rollout in progress: nothing to abort" });

    await alice.applyJob({ manifest: sweep("v3") });
    const aborted = (await bob.abortRollout({ job: "sweep" })).rollout!;
    expect(aborted).toMatchObject({ phase: "aborted", stableRevision: 2n, targetRevision: 3n, reason: "aborted by bob", waiting: "" });
    expect(aborted.endedAtUnixMs).toBeGreaterThan(0n);
    expect(aborted.shardsByRevision).toEqual([expect.objectContaining({ revision: 2n, shards: [0, 1, 2, 3] })]);
    expect(await failure(bob.promoteRollout({ job: "sweep", full: true }))).toMatchObject({
      code: "failed-precondition",
      message: "job sweep has no rollout in progress (the last one was aborted; rollout retry starts it again): nothing to promote",
    });

    expect((await bob.retryRollout({ job: "sweep" })).rollout).toMatchObject({ phase: "paused", stableRevision: 2n, targetRevision: 3n, step: 2, reason: "" });
    expect(await failure(bob.retryRollout({ job: "sweep" }))).toMatchObject({ code: "failed-precondition" });
    expect((await bob.promoteRollout({ job: "sweep", full: true })).rollout).toMatchObject({ phase: "completed", stableRevision: 3n });

    for (const call of [bob.getRollout({ job: "nope" }), bob.promoteRollout({ job: "nope" }), bob.abortRollout({ job: "nope" }), bob.retryRollout({ job: "nope" }), bob.listRevisions({ job: "nope" })]) {
      expect(await failure(call)).toEqual({ code: "not-found", message: 'job "nope" not found' });
    }
  });

  it("undoes to the rollout's stable revision while one is in progress, else to the one before the current, at once and as the caller", async () => {
    const { alice, bob } = await serveRollouts(true);
    await alice.applyJob({ manifest: sweep("v1") });
    expect(await failure(bob.undoRollout({ job: "sweep" }))).toEqual({
      code: "not-found",
      message: 'job sweep has no revision kept before its current revision 1 to go back to; run "shardline rollout history sweep" to list the revisions kept',
    });
    await alice.applyJob({ manifest: sweep("v2") });
    await bob.promoteRollout({ job: "sweep", full: true });
    await alice.applyJob({ manifest: sweep("v3") });
    expect((await bob.getRollout({ job: "sweep" })).rollout).toMatchObject({ phase: "paused", stableRevision: 2n, targetRevision: 3n });

    // In progress: back to the stable revision 2, on every shard at once.
    const undone = await bob.undoRollout({ job: "sweep" });
    expect(undone).toMatchObject({ undoOf: 2n, changed: true, job: { name: "sweep", revision: 4n, manifest: sweep("v2") } });
    expect(undone.job?.rollout).toMatchObject({ phase: "completed", currentRevision: 4n, stableRevision: 4n });
    expect(undone.job?.rollout?.shardsByRevision).toEqual([expect.objectContaining({ revision: 4n, shards: [0, 1, 2, 3] })]);

    // Nothing in progress: back to the newest revision below the current one (3), also at once.
    const again = await bob.undoRollout({ job: "sweep" });
    expect(again).toMatchObject({ undoOf: 3n, changed: true, job: { revision: 5n, manifest: sweep("v3") } });
    expect(again.job?.rollout?.shardsByRevision).toEqual([expect.objectContaining({ revision: 5n, shards: [0, 1, 2, 3] })]);

    // A revision named outright; the same spec again changes nothing.
    expect(await bob.undoRollout({ job: "sweep", toRevision: 1n })).toMatchObject({ undoOf: 1n, changed: true, job: { revision: 6n, manifest: sweep("v1") } });
    expect(await bob.undoRollout({ job: "sweep", toRevision: 1n })).toMatchObject({ undoOf: 1n, changed: false, job: { revision: 6n } });

    const revisions = (await alice.listRevisions({ job: "sweep" })).revisions;
    expect(revisions.map((r) => [r.revision, r.appliedBy, r.undoOf])).toEqual([
      [6n, "bob", 1n],
      [5n, "bob", 3n],
      [4n, "bob", 2n],
      [3n, "alice", 0n],
      [2n, "alice", 0n],
      [1n, "alice", 0n],
    ]);
    const hash = new Map(revisions.map((r) => [r.revision, r.specHash]));
    expect([hash.get(4n), hash.get(5n), hash.get(6n)]).toEqual([hash.get(2n), hash.get(3n), hash.get(1n)]);

    expect(await failure(bob.undoRollout({ job: "sweep", toRevision: 99n }))).toEqual({
      code: "not-found",
      message: 'revision 99 of job sweep not found: the controller keeps each job\'s newest revisions (--revision-history) and those still in use; run "shardline rollout history sweep" to list them',
    });
    expect(await failure(bob.undoRollout({ job: "nope" }))).toEqual({ code: "not-found", message: 'job "nope" not found' });
  });

  it("undoes an aborted rollout to its stable revision", async () => {
    const { alice, bob } = await serveRollouts(true);
    await alice.applyJob({ manifest: sweep("v1") });
    await alice.applyJob({ manifest: sweep("v2") });
    await bob.abortRollout({ job: "sweep" });
    expect(await bob.undoRollout({ job: "sweep" })).toMatchObject({ undoOf: 1n, changed: true, job: { revision: 3n, rollout: { phase: "completed", stableRevision: 3n } } });
  });

  it("records no name where the controller checks no tokens", async () => {
    const { alice, bob } = await serveRollouts(false);
    await alice.applyJob({ manifest: sweep("v1") });
    await alice.applyJob({ manifest: sweep("v2") });
    expect((await bob.abortRollout({ job: "sweep" })).rollout?.reason).toBe("aborted by an operator");
    await bob.undoRollout({ job: "sweep" });
    expect((await bob.listRevisions({ job: "sweep" })).revisions.map((r) => [r.revision, r.appliedBy, r.undoOf])).toEqual([
      [3n, "", 1n],
      [2n, "", 0n],
      [1n, "", 0n],
    ]);
  });
});

const job = (name: string, shards = 2, extra = "") => `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec: {shards: ${shards}, handler: work${extra}}`;

describe("AdminService applies, dry runs and several manifests at once", () => {
  it("answers a dry run with what would change and stores nothing", async () => {
    const { alice } = await serveRollouts(false);
    const fresh = await alice.applyJob({ manifest: job("rollup"), dryRun: true });
    expect(fresh).toMatchObject({ changed: true, job: { name: "rollup", revision: 1n } });
    expect(fresh.warnings).toEqual([expect.stringMatching(/^no connected agent can run it now: /)]);
    expect((await alice.listJobs({})).jobs).toEqual([]);

    await alice.applyJob({ manifest: job("rollup") });
    expect(await alice.applyJob({ manifest: job("rollup"), dryRun: true })).toMatchObject({ changed: false, job: { revision: 1n } });
    expect(await alice.applyJob({ manifest: job("rollup", 3), dryRun: true })).toMatchObject({ changed: true, job: { revision: 2n } });
    expect((await alice.getJob({ name: "rollup" })).job).toMatchObject({ revision: 1n, specJson: expect.stringContaining('"shards":2') as string });
    expect(await failure(alice.applyJob({ manifest: job("rollup", 0), dryRun: true }))).toMatchObject({ code: "invalid-argument", message: expect.stringMatching(/^spec\.shards: 0 is not allowed/) as string });
  });

  it("applies several manifests all or nothing: one bad one, a name twice or too many new jobs apply none", async () => {
    const { alice } = await serveRollouts(false);
    const applied = await alice.applyJobs({ manifests: [job("rollup"), job("reindex", 3)] });
    expect(applied.results.map((r) => [r.job?.name, r.changed])).toEqual([
      ["rollup", true],
      ["reindex", true],
    ]);

    const bad = await failure(alice.applyJobs({ manifests: [job("rollup", 4), job("broken", 0)] }));
    expect(bad).toEqual({ code: "invalid-argument", message: expect.stringMatching(/^manifests\[1\]: spec\.shards: 0 is not allowed.*; nothing was applied$/) as string });
    const twice = await failure(alice.applyJobs({ manifests: [job("rollup", 4), job("rollup", 5)] }));
    expect(twice.message).toMatch(/^manifests\[1\]\.metadata\.name: "rollup" is not allowed; expected each job once; manifests\[0\] names it too/);
    expect(await failure(alice.applyJobs({ manifests: [] }))).toMatchObject({ code: "invalid-argument", message: expect.stringContaining("1 to 100") as string });
    // None of the refused batches changed anything.
    const stored = (await alice.listJobs({})).jobs.map((j) => [j.name, j.revision]);
    expect(stored).toEqual([
      ["reindex", 1n],
      ["rollup", 1n],
    ]);

    const dry = await alice.applyJobs({ manifests: [job("rollup"), job("reindex", 4), job("new-one")], dryRun: true });
    expect(dry.results.map((r) => r.changed)).toEqual([false, true, true]);
    expect((await alice.listJobs({})).jobs).toHaveLength(2);
  });

  it("refuses a batch whose new jobs pass --max-jobs, applying none of them", async () => {
    const store = new SqliteStore(":memory:");
    const core = new ControllerCore(DEFAULT_CORE_CONFIG, await store.open(), Date.now());
    const driver = new CoreDriver(core, store, silentLogger(), (error) => {
      throw error;
    });
    await driver.start();
    const server = createServer();
    addService(server, AdminService, adminService(core, driver, store, new Map(), { maxJobs: 3 }));
    const client = createClient(AdminService, `127.0.0.1:${await listen(server, "127.0.0.1:0")}`, { deadlineMs: 10_000 });
    cleanups.push(async () => {
      client.close();
      await shutdown(server, 100);
      driver.stop();
      await store.close();
    });
    await client.applyJob({ manifest: job("a") });
    // RESOURCE_EXHAUSTED reads as "unavailable" on the client: try again later.
    expect(await failure(client.applyJobs({ manifests: [job("a", 3), job("b"), job("c"), job("d")] }))).toEqual({
      code: "unavailable",
      message: "manifests: this controller holds 1 jobs and 3 at most (--max-jobs), so 3 new ones do not fit; nothing was applied; delete some or raise the limit",
    });
    expect((await client.listJobs({})).jobs.map((j) => j.name)).toEqual(["a"]);
    expect((await client.getVersion({})).api).toBe("shardline.v1");
  });
});
