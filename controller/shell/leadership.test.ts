import type { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../shared/logging.js";
import { EtcdServer } from "../../test/harness/etcd.js";
import { LEADER_KEY } from "../store/etcd/etcd-leadership.js";
import { EtcdElection, type EtcdElectionOptions, SingleWriter } from "./leadership.js";
import { EtcdConnection } from "./store-connection.js";

describe("SingleWriter (SQLite)", () => {
  it("leads at once, with the term the store's open will say, and is ready only while leading", async () => {
    const leadership = new SingleWriter();
    const terms: (number | undefined)[] = [];
    await leadership.lead(async (term) => void terms.push(term));
    expect(terms).toEqual([undefined]);
    expect(await leadership.ready(true)).toBe(true);
    expect(await leadership.ready(false)).toBe(false);
  });
});

describe("EtcdElection", () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  let run = 0;

  beforeAll(async () => {
    etcd = await EtcdServer.start();
    client = etcd.client();
  }, 30_000);

  afterAll(async () => {
    client?.close();
    await etcd?.stop();
  });

  /** A replica's store and election parts under a prefix of their own, started. */
  async function replica(prefix: string, options: Partial<EtcdElectionOptions> = {}): Promise<{ store: EtcdConnection; election: EtcdElection }> {
    const store = new EtcdConnection([etcd.endpoint], prefix);
    await store.start();
    const election = new EtcdElection({
      store,
      advertise: undefined,
      grpcAddress: () => `127.0.0.1:${7000 + run}`,
      ttlSeconds: 2,
      stopping: () => false,
      handedOver: () => true,
      onFatal: (error) => {
        throw error;
      },
      logger: silentLogger(),
      ...options,
    });
    await election.start();
    return { store, election };
  }

  const leaderKey = async (prefix: string): Promise<string | null> => client.namespace(prefix).get(LEADER_KEY).string();

  it("follows while another leads, ready once it knows that leader, then leads with the term it wins", async () => {
    const prefix = `election-${process.pid}-${++run}/`;
    const other = client.lease(10);
    await other.put(`${prefix}${LEADER_KEY}`).value("10.9.9.9:7070");
    const { store, election } = await replica(prefix, { advertise: "10.0.0.1:7070" });
    try {
      expect(election.advertised).toBe("10.0.0.1:7070");
      expect(await election.ready(false)).toBe(true);
      const won = new Promise<number | undefined>((resolve) => void election.lead(async (term) => resolve(term)));
      await other.revoke();
      expect(await won).toBe(1);
      expect(election.election?.term).toBe(1);
      expect(await election.ready(true)).toBe(true);
      expect(await leaderKey(prefix)).toBe("10.0.0.1:7070");
    } finally {
      await election.stop();
      await store.stop();
    }
  });

  it("advertises the servers' address without --advertise, and resigns on stop once handed over: the leader key goes at once", async () => {
    const prefix = `election-${process.pid}-${++run}/`;
    const { store, election } = await replica(prefix);
    try {
      await new Promise<void>((resolve) => void election.lead(async () => resolve()));
      expect(await leaderKey(prefix)).toBe(`127.0.0.1:${7000 + run}`);
    } finally {
      await election.stop();
      await store.stop();
    }
    expect(await leaderKey(prefix)).toBeNull();
  });

  it("leaves its lease to run out when the next leader was not handed the agents' leases", async () => {
    const prefix = `election-${process.pid}-${++run}/`;
    const { store, election } = await replica(prefix, { handedOver: () => false });
    await new Promise<void>((resolve) => void election.lead(async () => resolve()));
    await election.stop();
    await store.stop();
    // Still held: another replica may lead only once the TTL has run out.
    expect(await leaderKey(prefix)).not.toBeNull();
    await expect.poll(() => leaderKey(prefix), { timeout: 10_000, interval: 200 }).toBeNull();
  });

  it("ends the controller when the leadership it won is lost", async () => {
    const prefix = `election-${process.pid}-${++run}/`;
    const fatal: Error[] = [];
    const { store, election } = await replica(prefix, { onFatal: (error) => void fatal.push(error) });
    try {
      await new Promise<void>((resolve) => void election.lead(async () => resolve()));
      await client.namespace(prefix).delete().key(LEADER_KEY);
      await expect.poll(() => fatal.map((error) => error.message)).toEqual(["lost the leadership: the leader key was deleted"]);
    } finally {
      await election.stop();
      await store.stop();
    }
  });
});
