import type { Etcd3, Namespace } from "etcd3";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EtcdServer } from "../../../test/harness/etcd.js";
import { FIRE_COMPLETE_SHARD } from "../store.js";
import { describeStoreContract, execution, job, rejection, revision, spec, specStoredBeforeRuns } from "../testing/store-contract.js";
import { EtcdLeadership } from "./etcd-leadership.js";
import { EtcdStore } from "./etcd-store.js";

// A real etcd (Debian's etcd-server) on loopback ports; each test works under its own key prefix.

let etcd: EtcdServer;
let client: Etcd3;
const cleanup: (() => Promise<void>)[] = [];
let prefixes = 0;

beforeAll(async () => {
  etcd = await EtcdServer.start();
  client = etcd.client();
}, 30_000);

afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const logger = pino({ level: "silent" });

function freshNamespace(): Namespace {
  return client.namespace(`test-${process.pid}-${++prefixes}/`);
}

/** A candidate that observes the election, closed after the test. */
async function candidate(ns: Namespace, address: string): Promise<EtcdLeadership> {
  const leadership = new EtcdLeadership(ns, { address, ttlSeconds: 2, logger });
  cleanup.push(() => leadership.close());
  await leadership.observe();
  return leadership;
}

/** Wins the election on `ns` and opens the store under the term won. */
async function lead(ns: Namespace, address = "10.0.0.1:7070") {
  const leadership = await candidate(ns, address);
  const term = await leadership.campaign();
  const store = new EtcdStore(ns, term);
  cleanup.push(() => store.close());
  const snapshot = await store.open();
  return { leadership, store, snapshot, term };
}

describe("EtcdLeadership", () => {
  it("elects one leader at a time, counts terms, and hands over when the leader resigns", async () => {
    const ns = freshNamespace();
    const first = await lead(ns, "10.0.0.1:7070");
    expect(first.term).toBe(1);
    expect(first.leadership.isLeader()).toBe(true);

    const second = await candidate(ns, "10.0.0.2:7070");
    expect(second.leader).toBe("10.0.0.1:7070");
    let won = false;
    const since = Date.now();
    const campaign = second.campaign().then((term) => ((won = true), term));
    // Nothing to wait on but time: past the TTL the first leader's lease had when the second
    // began, which it has kept alive, the second has had every chance to win wrongly.
    await expect.poll(() => Date.now() > since + 2500 && first.leadership.validUntil > since + 2500, { timeout: 10_000, interval: 100 }).toBe(true);
    expect(won).toBe(false);
    expect(first.leadership.isLeader()).toBe(true);

    const changes: (string | undefined)[] = [];
    second.onLeaderChange((address) => changes.push(address));
    await first.leadership.resign();
    expect(await campaign).toBe(2);
    expect(second.isLeader()).toBe(true);
    expect(second.leader).toBe("10.0.0.2:7070");
    expect(changes).toContain("10.0.0.2:7070");
  });

  it("tells a leader it lost when another controller takes the leader key", async () => {
    const ns = freshNamespace();
    const { leadership } = await lead(ns);
    const lost = new Promise<string>((resolve) => leadership.onLost(resolve));
    // What a new leader would do once this one's lease were gone: an operator's etcdctl del and
    // a quick winner, made here by hand.
    await ns.delete().key("leader");
    expect(await lost).toBe("the leader key was deleted");
    expect(leadership.isLeader()).toBe(false);
  });

  it("keeps campaigning while etcd does not answer, and wins once it does", async () => {
    const impatient = etcd.client(300);
    cleanup.push(async () => impatient.close());
    const ns = impatient.namespace(`test-${process.pid}-${++prefixes}/`);
    const warnings: string[] = [];
    const failed = new Promise<void>((resolve) => {
      const watching = pino({ level: "warn" }, { write: (line: string) => (warnings.push(JSON.parse(line).msg as string), resolve()) });
      const leadership = new EtcdLeadership(ns, { address: "10.0.0.9:7070", ttlSeconds: 2, logger: watching });
      cleanup.push(() => leadership.close());
      void leadership.observe().then(() => {
        etcd.pause();
        won = leadership.campaign();
      });
    });
    let won: Promise<number> | undefined;
    try {
      await failed;
    } finally {
      etcd.resume();
    }
    expect(warnings[0]).toBe("campaigning for the leadership failed; retrying");
    expect(await won).toBe(1);
  }, 30_000);

  it("rejects a lease TTL below etcd's minimum, naming the flag", () => {
    expect(() => new EtcdLeadership(freshNamespace(), { address: "a:1", ttlSeconds: 1, logger })).toThrow(/--leader-ttl: 1 is not allowed/);
  });
});

describe("EtcdStore", () => {
  it("brings back jobs, cursors, open executions and the settled ones of open fires under the next leader", async () => {
    const ns = freshNamespace();
    const first = await lead(ns);
    expect(first.snapshot).toEqual({ term: 1, jobs: [], cursors: new Map(), openExecutions: [], settledOfOpenFires: [], revisions: [], predecessorLeasesEndWithinMs: 0 });
    const running = execution({ job: "invoices", fireTime: 2000, shard: 0, state: "running", startedAt: 2001 });
    const settled = execution({ job: "invoices", fireTime: 2000, shard: 1, state: "failed", error: "boom", finishedAt: 2005 });
    const hook = execution({ job: "invoices", fireTime: 1000, shard: FIRE_COMPLETE_SHARD, state: "pending", fireOutcome: [{ shard: 0, state: "succeeded", executionId: "invoices/1000/0/1" }] });
    hook.id = "invoices/1000/complete/1";
    await first.store.commit({
      jobs: [job("invoices"), job("reports")],
      cursors: [{ job: "invoices", fireTime: 2000 }],
      executions: [
        execution({ job: "invoices", fireTime: 1000, shard: 0, state: "succeeded" }),
        hook,
        running,
        settled,
        execution({ job: "reports", fireTime: 500, state: "pending" }),
      ],
    });
    await first.store.commit({ deletedJobs: ["reports"] });
    await first.leadership.resign();

    const second = await lead(ns);
    expect(second.snapshot.term).toBe(2);
    expect(second.snapshot.jobs).toEqual([job("invoices")]);
    expect(second.snapshot.cursors).toEqual(new Map([["invoices", 2000]]));
    expect(second.snapshot.openExecutions.map((e) => e.id)).toEqual(["reports/500/0/1", "invoices/1000/complete/1", "invoices/2000/0/1"]);
    expect(second.snapshot.openExecutions[1]).toEqual(hook);
    expect(second.snapshot.settledOfOpenFires).toEqual([execution({ job: "invoices", fireTime: 1000, shard: 0, state: "succeeded" }), settled]);
  });

  it("reads a job whose spec was stored before JobSpec.runs", async () => {
    const ns = freshNamespace();
    await ns.put("jobs/invoices").value(JSON.stringify({ ...job("invoices"), spec: JSON.parse(specStoredBeforeRuns("invoices")) as unknown }));
    const { snapshot } = await lead(ns);
    expect(snapshot.jobs).toEqual([job("invoices")]);
  });

  it("keeps revisions under revisions/JOB/REVISION, zero-padded, with the spec in the manifest's shape, and reads one stored before JobSpec.runs", async () => {
    const ns = freshNamespace();
    const { store } = await lead(ns);
    const first = revision("invoices", 1, { spec: spec("invoices") });
    await store.commit({ jobs: [job("invoices", 12)], revisions: [revision("invoices", 12), first] });
    expect(await store.listRevisions("invoices")).toEqual([revision("invoices", 12), first]);
    expect(await ns.getAll().prefix("revisions/").keys()).toEqual(["revisions/invoices/000000000001", "revisions/invoices/000000000012"]);
    const stored = JSON.parse((await ns.get("revisions/invoices/000000000001").string())!) as { spec: unknown };
    expect(JSON.stringify(stored.spec)).toBe(specStoredBeforeRuns("invoices"));

    await ns.put("revisions/reports/000000000003").value(JSON.stringify({ ...revision("reports", 3), spec: JSON.parse(specStoredBeforeRuns("reports")) as unknown }));
    expect(await store.getRevision("reports", 3)).toEqual(revision("reports", 3, { spec: spec("reports") }));
  });

  it("applies the revisions in WAL entries a crashed leader left, a deleted job's with it, also over a partly applied entry", async () => {
    const ns = freshNamespace();
    const { leadership } = await lead(ns);
    const again = revision("a", 1, { hash: "b".repeat(64) });
    const first = [{ jobs: [job("a", 2)], revisions: [revision("a", 1), revision("a", 2)] }];
    const second = [{ deletedJobs: ["a"] }, { jobs: [job("a", 1)], revisions: [again] }];
    await ns.put("wal/000000000001-000000000001").value(JSON.stringify(first));
    await ns.put("wal/000000000001-000000000002").value(JSON.stringify(second));
    // The first entry was applied in part before the crash.
    await ns.put("revisions/a/000000000002").value(JSON.stringify({ ...revision("a", 2), spec: JSON.parse(specStoredBeforeRuns("a")) as unknown }));
    await leadership.resign();

    const next = await lead(ns);
    expect(next.snapshot.jobs).toEqual([job("a", 1)]);
    expect(next.snapshot.revisions).toEqual([again]);
    expect(await next.store.listRevisions("a")).toEqual([again]);
    expect(await ns.getAll().prefix("revisions/").keys()).toEqual(["revisions/a/000000000001"]);
  });

  it("tells the next leader how long the agent leases of one that stepped down on purpose still run, once", async () => {
    const ns = freshNamespace();
    const first = await lead(ns);
    await first.store.handOver(1234.2);
    await first.leadership.resign();
    const second = await lead(ns);
    expect(second.snapshot.predecessorLeasesEndWithinMs).toBe(1235);
    await second.leadership.resign();
    expect((await lead(ns)).snapshot.predecessorLeasesEndWithinMs).toBe(0);
  });

  it("moves an execution from open to done when it finishes", async () => {
    const ns = freshNamespace();
    const { store } = await lead(ns);
    await store.commit({ executions: [execution({ job: "a", fireTime: 1, state: "running" })] });
    await store.commit({ executions: [execution({ job: "a", fireTime: 1, state: "succeeded" })] });
    expect((await store.getExecution("a/1/0/1"))?.state).toBe("succeeded");
    expect(await store.listExecutions({ limit: 10 })).toHaveLength(1);
    expect(await ns.getAll().prefix("open/").keys()).toEqual([]);
  });

  it("fences a deposed leader: its commit fails, writes nothing, and every later commit fails", async () => {
    const ns = freshNamespace();
    const old = await lead(ns, "10.0.0.1:7070");
    await old.store.commit({ cursors: [{ job: "tick", fireTime: 1 }] });
    // The old leader's lease lapses (a pause, a partition) and another controller wins.
    await ns.delete().key("leader");
    const next = await lead(ns, "10.0.0.2:7070");
    expect(next.term).toBe(2);

    const err = await rejection(old.store.commit({ cursors: [{ job: "tick", fireTime: 2 }] }));
    expect(err.code).toBe("failed-precondition");
    expect(err.message).toContain("term 1 is over (etcd holds term 2)");
    expect((await rejection(old.store.commit({ cursors: [{ job: "tick", fireTime: 3 }] }))).code).toBe("unavailable");
    expect(await ns.get("cursors/tick").string()).toBe("1");
  });

  it("commits 10,000 executions in one batch through a WAL entry in parts, and a new leader reads them back", async () => {
    const ns = freshNamespace();
    const { store, leadership } = await lead(ns);
    const batch = Array.from({ length: 10_000 }, (_, i) => execution({ job: "wide", fireTime: 1_700_000_000_000, shard: i, state: "pending", parameter: "é".repeat(40) }));
    await store.commit({ executions: batch, cursors: [{ job: "wide", fireTime: 1_700_000_000_000 }] });
    expect(await store.listExecutions({ job: "wide", limit: 20_000 })).toHaveLength(10_000);
    expect(await ns.getAll().prefix("wal").keys()).toEqual([]);
    await leadership.resign();

    const next = await lead(ns);
    expect(next.snapshot.openExecutions).toEqual(batch);
  });

  it("writes commits made back to back, without waiting, in the order they were made", async () => {
    const ns = freshNamespace();
    const { store, leadership } = await lead(ns);
    const commits = [];
    for (let i = 1; i <= 200; i++) {
      commits.push(store.commit({ executions: [execution({ job: "tick", fireTime: 5, state: i < 200 ? "running" : "succeeded", result: String(i) })], cursors: [{ job: "tick", fireTime: i }] }));
    }
    await Promise.all(commits);
    expect((await store.getExecution("tick/5/0/1"))?.result).toBe("200");
    await leadership.resign();
    expect((await lead(ns)).snapshot.cursors).toEqual(new Map([["tick", 200]]));
  });

  it("applies the WAL entries a crashed leader left, in order, and drops parts that never got their manifest", async () => {
    const ns = freshNamespace();
    const { leadership } = await lead(ns);
    // What a leader that crashed after making two commits durable, and midway through a third
    // written in parts, leaves behind.
    const first = [{ jobs: [job("a")], executions: [execution({ job: "a", fireTime: 1, state: "running" })] }];
    const second = [{ executions: [execution({ job: "a", fireTime: 1, state: "succeeded" })], cursors: [{ job: "a", fireTime: 1 }] }];
    await ns.put("wal/000000000001-000000000001").value(JSON.stringify(first));
    await ns.put("wal/000000000001-000000000002").value(JSON.stringify(second));
    await ns.put("wal-part/wal/000000000001-000000000003/000000000000").value('[{"deletedJobs":["a"]');
    await leadership.resign();

    const next = await lead(ns);
    expect(next.snapshot.jobs).toEqual([job("a")]);
    expect(next.snapshot.cursors).toEqual(new Map([["a", 1]]));
    expect(next.snapshot.openExecutions).toEqual([]);
    expect((await next.store.getExecution("a/1/0/1"))?.state).toBe("succeeded");
    expect(await ns.getAll().prefix("wal").keys()).toEqual([]);
  });

  it("rejects every operation before open and after close", async () => {
    const ns = freshNamespace();
    const store = new EtcdStore(ns, 1);
    expect((await rejection(store.commit({}))).code).toBe("failed-precondition");
    await expect(store.listExecutions({ limit: 1 })).rejects.toThrow("not open");
    const { store: opened } = await lead(ns);
    await opened.close();
    expect((await rejection(opened.commit({}))).code).toBe("failed-precondition");
  });
});

/** The namespace and leadership of each store the contract opened, to hand it over to a next leader. */
const contractStores = new WeakMap<EtcdStore, { ns: Namespace; leadership: EtcdLeadership }>();

describeStoreContract(
  "EtcdStore",
  async () => {
    const ns = freshNamespace();
    const { store, leadership } = await lead(ns);
    contractStores.set(store, { ns, leadership });
    return store;
  },
  async (store) => {
    const { ns, leadership } = contractStores.get(store as EtcdStore)!;
    await store.close();
    await leadership.resign();
    return (await lead(ns)).snapshot;
  },
);
