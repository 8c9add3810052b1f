import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdServer } from "../../test/harness/etcd.js";
import { silentLogger } from "../../shared/logging.js";
import { LEADER_KEY } from "../store/etcd/etcd-leadership.js";
import { startController } from "./controller.js";

// /readyz: the store answers and, with several replicas on etcd, the leader is known.

async function readyz(httpAddress: string): Promise<number> {
  return (await fetch(`http://${httpAddress}/readyz`)).status;
}

describe("/readyz on SQLite", () => {
  it("is ready while its store answers", async () => {
    const dir = await mkdtemp(join(tmpdir(), "shardline-readyz-"));
    const controller = await startController({ listen: "127.0.0.1:0", http: "127.0.0.1:0", store: `sqlite:${join(dir, "state.db")}`, logger: silentLogger() });
    try {
      expect(await readyz(controller.httpAddress)).toBe(200);
    } finally {
      await controller.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("/readyz with replicas on etcd", () => {
  let etcd: EtcdServer;
  let client: Etcd3;

  beforeAll(async () => {
    etcd = await EtcdServer.start();
    client = etcd.client();
  }, 30_000);

  afterAll(async () => {
    client?.close();
    await etcd?.stop();
  });

  it("is ready on a follower that knows the leader, not while etcd does not answer, and ready again as leader", async () => {
    const prefix = `readyz-${process.pid}/`;
    // Another controller leads: the test holds its leader key on a lease of its own.
    const otherLeader = client.lease(10);
    await otherLeader.put(`${prefix}${LEADER_KEY}`).value("10.9.9.9:7070");
    const follower = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `etcd://${etcd.endpoint}/${prefix}`,
      logger: silentLogger(),
    });
    try {
      expect(follower.term).toBe(0);
      expect(await readyz(follower.httpAddress)).toBe(200);

      etcd.pause();
      try {
        // A probe that was already answered as the pause began may still say 200: polled.
        await expect.poll(() => readyz(follower.httpAddress), { timeout: 20_000, interval: 100 }).toBe(503);
        expect(follower.term).toBe(0);
      } finally {
        etcd.resume();
      }
      // The etcd client holds off a failing endpoint for a while before it tries it again.
      await expect.poll(() => readyz(follower.httpAddress), { timeout: 20_000, interval: 250 }).toBe(200);

      // The other leader goes: this one wins and serves.
      await otherLeader.revoke();
      await follower.elected;
      expect(await readyz(follower.httpAddress)).toBe(200);
    } finally {
      await follower.stop();
    }
  }, 60_000);
});
