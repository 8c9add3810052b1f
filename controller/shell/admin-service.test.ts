import { afterEach, describe, expect, it } from "vitest";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { addService, createClient, createServer, listen, shutdown } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { DEFAULT_CORE_CONFIG } from "../core/config.js";
import { ControllerCore } from "../core/controller-core.js";
import { SqliteStore } from "../store/sqlite/sqlite-store.js";
import type { Store } from "../store/store.js";
import { adminService, type AdminServiceOptions } from "./admin-service.js";
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
