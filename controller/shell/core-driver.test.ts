import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../shared/logging.js";
import { DEFAULT_CORE_CONFIG } from "../core/config.js";
import { ControllerCore } from "../core/controller-core.js";
import type { AgentHello } from "../core/messages.js";
import type { Outbound } from "../core/outbox.js";
import { testSpec } from "../core/testing/core-harness.js";
import { SqliteStore } from "../store/sqlite/sqlite-store.js";
import type { Store, StoreBatch } from "../store/store.js";
import { CoreDriver } from "./core-driver.js";

/**
 * A real SQLite store whose commits the test releases one by one, to see what the driver sends
 * while a commit is still on its way to disk.
 */
class GatedStore {
  readonly gates: { batch: StoreBatch; release: () => void; fail: (error: Error) => void }[] = [];
  readonly inner = new SqliteStore(":memory:");

  asStore(): Store {
    return {
      open: () => this.inner.open(),
      commit: (batch) =>
        new Promise<void>((resolve, reject) => {
          const written = this.inner.commit(batch);
          this.gates.push({ batch, release: () => void written.then(resolve, reject), fail: reject });
        }),
      listExecutions: (query) => this.inner.listExecutions(query),
      getExecution: (id) => this.inner.getExecution(id),
      listRevisions: (job) => this.inner.listRevisions(job),
      getRevision: (job, revision) => this.inner.getRevision(job, revision),
      prune: (policy, now) => this.inner.prune(policy, now),
      close: () => this.inner.close(),
    };
  }
}

const hello: AgentHello = {
  agentId: "a",
  labels: {},
  capacity: 1,
  handlers: ["work"],
  executors: [],
  maxConcurrent: 0,
  version: "test",
  held: [],
  executions: [],
};

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

async function setup(): Promise<{ gated: GatedStore; driver: CoreDriver; sent: Outbound[]; fatal: unknown[] }> {
  const gated = new GatedStore();
  const store = gated.asStore();
  const snapshot = await store.open();
  const core = new ControllerCore(DEFAULT_CORE_CONFIG, snapshot, Date.now());
  const fatal: unknown[] = [];
  const driver = new CoreDriver(core, store, silentLogger(), (error) => fatal.push(error));
  const sent: Outbound[] = [];
  driver.deliver = (messages) => sent.push(...messages);
  cleanup = async () => {
    driver.stop();
    await store.close();
  };
  await driver.start();
  await driver.run((now) => core.hello("s1", hello, now));
  return { gated, driver, sent, fatal };
}

function kinds(sent: Outbound[]): string[] {
  return sent.map((m) => m.command.kind);
}

describe("CoreDriver", () => {
  it("sends a batch only once its commit is durable, and later batches after it", async () => {
    const { gated, driver, sent } = await setup();
    const core = (driver as unknown as { core: ControllerCore }).core;
    sent.length = 0;
    const first = driver.run((now) => core.applyJob("one", testSpec("one", { shards: 1, schedule: "0 0 1 1 *" }), "m1", now));
    await until(() => gated.gates.length === 1);
    const second = driver.run((now) => core.applyJob("two", testSpec("two", { shards: 1, schedule: "0 0 1 1 *" }), "m2", now));
    // The second batch reaches the store while the first one is still syncing.
    await until(() => gated.gates.length === 2);
    gated.gates[1]!.release();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(sent).toEqual([]);
    gated.gates[0]!.release();
    await Promise.all([first, second]);
    expect(kinds(sent)).toEqual(["assignments", "assignments"]);
  });

  it("after a failed commit, reports it and sends neither that batch nor any later one", async () => {
    const { gated, driver, sent, fatal } = await setup();
    const core = (driver as unknown as { core: ControllerCore }).core;
    sent.length = 0;
    void driver.run((now) => core.applyJob("one", testSpec("one", { shards: 1, schedule: "0 0 1 1 *" }), "m1", now));
    await until(() => gated.gates.length === 1);
    void driver.run((now) => core.applyJob("two", testSpec("two", { shards: 1, schedule: "0 0 1 1 *" }), "m2", now));
    await until(() => gated.gates.length === 2);
    gated.gates[1]!.release();
    gated.gates[0]!.fail(new Error("disk full"));
    await driver.idle();
    expect(fatal).toHaveLength(1);
    expect(sent).toEqual([]);
  });
});

async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("the condition did not come true within 10 s");
    await new Promise((resolve) => setImmediate(resolve));
  }
}
