import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { createClient, type Client } from "../../shared/grpc/index.js";
import { ADMIN_METHOD_ROLES } from "../../shared/security/roles.js";
import { waitFor } from "../../test/harness/processes.js";
import { type RunningController, startController } from "./controller.js";
import { CapturedLogs } from "./testing/hostile-peer.js";

const ALICE = "alice-admin-token-0123456789";
const VERA = "vera-viewer-token-0123456789a";
const manifest = (name: string) => `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec: {shards: 2, handler: work}\n`;

/** A request for each method that changes something: valid where that is easy, else one the controller refuses. */
const REQUESTS: Readonly<Record<string, object>> = {
  ApplyJob: { manifest: manifest("rollup") },
  ApplyJobs: { manifests: [manifest("reports")] },
  TriggerJob: { name: "rollup", shards: [0] },
  PauseJob: { name: "rollup" },
  ResumeJob: { name: "rollup" },
  DisableShard: { job: "rollup", shard: 1 },
  EnableShard: { job: "rollup", shard: 1 },
  DrainAgent: { id: "no-such-agent" },
  UncordonAgent: { id: "no-such-agent" },
  CancelExecution: { id: "no-such-execution", reason: "test" },
  PromoteRollout: { job: "rollup" },
  AbortRollout: { job: "rollup" },
  RetryRollout: { job: "rollup" },
  UndoRollout: { job: "rollup", toRevision: 7n },
  DeleteJob: { name: "reports" },
};

describe("the audit trail", () => {
  let dir = "";
  let controller: RunningController | undefined;
  const clients: Client<typeof AdminService>[] = [];
  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await controller?.stop();
    controller = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it("records every call that changes something, and every refused one, with the caller's token name; reads are not recorded", async () => {
    dir = await mkdtemp(join(tmpdir(), "shardline-audit-"));
    await writeFile(join(dir, "tokens"), `${ALICE},alice,admin\n${VERA},vera,viewer\n`);
    const logs = new CapturedLogs("info");
    controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      tokenFile: join(dir, "tokens"),
      logger: logs.logger,
    });
    const as = (token: string) => {
      const client = createClient(AdminService, controller!.grpcAddress, { deadlineMs: 10_000, metadata: { authorization: `Bearer ${token}` } });
      clients.push(client);
      return client;
    };
    const alice = as(ALICE);
    const vera = as(VERA);

    // Every method a role above viewer needs: a new one without a request here fails this test.
    const mutating = Object.entries(ADMIN_METHOD_ROLES)
      .filter(([, role]) => role !== "viewer")
      .map(([method]) => method);
    expect(mutating.filter((method) => REQUESTS[method] === undefined)).toEqual([]);
    const call = alice as unknown as Record<string, (request: object) => Promise<unknown>>;
    // In REQUESTS' order: the job is applied first and deleted last.
    for (const method of Object.keys(REQUESTS)) {
      const localName = AdminService.method[(method[0]!.toLowerCase() + method.slice(1)) as keyof typeof AdminService.method].localName;
      await call[localName]!(REQUESTS[method]!).catch(() => undefined);
    }
    await alice.listJobs({});
    await vera.pauseJob({ name: "rollup" }).catch(() => undefined);

    const records = await waitFor("every call recorded", async () => {
      const listed = (await alice.listAuditRecords({ limit: 1000 })).records;
      return listed.length >= mutating.length + 1 ? listed : undefined;
    });
    const byMethod = new Map(records.filter((r) => r.caller === "alice").map((r) => [r.method, r]));
    expect([...byMethod.keys()].sort()).toEqual([...mutating].sort());
    expect(byMethod.get("ApplyJob")).toMatchObject({ role: "admin", target: "rollup", summary: "applied revision 1", outcome: "ok" });
    expect(byMethod.get("TriggerJob")).toMatchObject({ target: "rollup", summary: "triggered shards 0: 1 execution", outcome: "ok" });
    expect(byMethod.get("PauseJob")).toMatchObject({ summary: "paused", outcome: "ok" });
    expect(byMethod.get("DrainAgent")).toMatchObject({ target: "no-such-agent", outcome: "not_found", error: expect.stringContaining("no-such-agent") as string });
    expect(byMethod.get("UndoRollout")).toMatchObject({ outcome: "not_found" });
    // A refusal names the caller it refused.
    expect(records.find((r) => r.caller === "vera")).toMatchObject({ role: "viewer", method: "PauseJob", target: "rollup", outcome: "permission_denied" });
    // Reads are not recorded.
    expect(records.some((r) => r.method === "ListJobs" || r.method === "ListAuditRecords")).toBe(false);
    // Each is a structured log line too, for a log shipper.
    expect(logs.entries.filter((line) => line.audit !== undefined).map((line) => (line.audit as { method: string }).method)).toEqual(expect.arrayContaining([...mutating, "PauseJob"]));
  });
});
