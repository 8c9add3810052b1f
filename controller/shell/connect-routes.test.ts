import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { AdminService, ListJobsRequestSchema, ListJobsResponseSchema } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import { makeTestCertificates } from "../../test/harness/certificates.js";
import type { EtcdLeadership } from "../store/etcd/etcd-leadership.js";
import { Authorization } from "./authorization.js";
import { type ControllerLimits, type RunningController, startController } from "./controller.js";
import type { ControllerStatus } from "./following.js";
import type { Leading } from "./leading.js";
import { Servers } from "./servers.js";

const manifest = (name: string, shards = 2) => `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec: {shards: ${shards}, handler: work}\n`;

const ALICE = "alice-admin-token-0123456789";
const OLIVER = "oliver-operator-token-0123456";
const VERA = "vera-viewer-token-0123456789a";
const TOKENS = `${ALICE},alice,admin\n${OLIVER},oliver,operator\n${VERA},vera,viewer\n`;

/** A Connect unary call with JSON, as any HTTP client makes it. */
async function call(address: string, method: string, body: unknown, token?: string): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`http://${address}/shardline.v1.AdminService/${method}`, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: response.status, json: (await response.json()) as Record<string, unknown>, headers: response.headers };
}

describe("the AdminService over Connect on the HTTP port", () => {
  let dir: string | undefined;
  let controller: RunningController | undefined;
  const cleanup: (() => Promise<void>)[] = [];
  const start = async (tokens?: string, limits: Partial<ControllerLimits> = {}, tls?: (dir: string) => Promise<{ cert: string; key: string; ca: string }>): Promise<RunningController> => {
    dir = await mkdtemp(join(tmpdir(), "shardline-connect-"));
    const tlsFiles = tls === undefined ? undefined : await tls(dir);
    if (tokens !== undefined) await writeFile(join(dir, "tokens"), tokens);
    controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: silentLogger(),
      limits,
      ...(tokens === undefined ? {} : { tokenFile: join(dir, "tokens") }),
      ...(tlsFiles === undefined ? {} : { tls: tlsFiles }),
    });
    return controller;
  };
  afterEach(async () => {
    for (const next of cleanup.splice(0)) await next();
    await controller?.stop();
    controller = undefined;
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it("applies and lists jobs with JSON (lowerCamelCase, int64 as strings, defaults written), and answers binary too", async () => {
    const { httpAddress } = await start();
    expect(await call(httpAddress, "ListJobs", {})).toMatchObject({ status: 200, json: { jobs: [] } });

    const applied = await call(httpAddress, "ApplyJob", { manifest: manifest("rollup") });
    expect(applied.status).toBe(200);
    expect(applied.json).toMatchObject({ changed: true, job: { name: "rollup", revision: "1", paused: false, disabledShards: [] } });
    expect((await call(httpAddress, "ApplyJob", { manifest: manifest("rollup") })).json).toMatchObject({ changed: false });

    const listed = await call(httpAddress, "ListJobs", {});
    expect((listed.json.jobs as { name: string }[]).map((job) => job.name)).toEqual(["rollup"]);

    const fired = await call(httpAddress, "TriggerJob", { name: "rollup", shards: [1] });
    expect(fired.status).toBe(200);
    expect(typeof fired.json.fireTimeUnixMs).toBe("string");
    expect(fired.json.executionIds).toHaveLength(1);

    const binary = await fetch(`http://${httpAddress}/shardline.v1.AdminService/ListJobs`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: toBinary(ListJobsRequestSchema, create(ListJobsRequestSchema, {})),
    });
    expect(binary.status).toBe(200);
    expect(binary.headers.get("content-type")).toBe("application/proto");
    expect(fromBinary(ListJobsResponseSchema, new Uint8Array(await binary.arrayBuffer())).jobs.map((job) => job.name)).toEqual(["rollup"]);

    // The gRPC port's wire budget, checked before decoding: 100,001 unpacked entries of `shards` (field 2).
    const entries = new Uint8Array(2 * 100_001).fill(1);
    for (let i = 0; i < entries.length; i += 2) entries[i] = (2 << 3) | 0;
    const flood = await fetch(`http://${httpAddress}/shardline.v1.AdminService/TriggerJob`, { method: "POST", headers: { "content-type": "application/proto" }, body: entries });
    expect(flood.status).toBe(400);
    expect(await flood.json()).toMatchObject({ code: "invalid_argument", message: 'shards: "more than 100000 entries" is not allowed; expected at most 100000 in one message' });
  });

  it("refuses a bad manifest as invalid_argument naming the field, an unknown field, an unknown job as not_found; the other routes are unchanged", async () => {
    const { httpAddress } = await start();
    const bad = await call(httpAddress, "ApplyJob", { manifest: manifest("rollup", 0) });
    expect(bad.status).toBe(400);
    expect(bad.json.code).toBe("invalid_argument");
    expect(bad.json.message).toMatch(/^spec\.shards: 0 is not allowed; expected/);
    expect(bad.json.details).toEqual([
      expect.objectContaining({ type: "google.rpc.ErrorInfo", debug: expect.objectContaining({ reason: "INVALID_ARGUMENT", domain: "shardline.dev", metadata: expect.objectContaining({ field: "spec.shards" }) }) }),
    ]);

    const typo = await call(httpAddress, "GetJob", { nmae: "rollup" });
    expect(typo).toMatchObject({ status: 400, json: { code: "invalid_argument" } });
    expect(typo.json.message).toMatch(/nmae/);

    expect(await call(httpAddress, "GetJob", { name: "nope" })).toMatchObject({ status: 404, json: { code: "not_found" } });

    expect((await fetch(`http://${httpAddress}/shardline.v1.AdminService/NoSuchMethod`, { method: "POST" })).status).toBe(404);
    // Other paths are the console's (console-assets.test.ts); a POST there is no admin call.
    expect((await fetch(`http://${httpAddress}/nope`, { method: "POST" })).status).toBe(405);
    expect((await fetch(`http://${httpAddress}/healthz`)).status).toBe(200);
    const metrics = await fetch(`http://${httpAddress}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^# HELP /m);
  });

  it("checks tokens and roles as the gRPC port does, and shares its rate limit", async () => {
    const { httpAddress, grpcAddress } = await start(TOKENS, { adminCallsPerSecond: 1 });
    const none = await call(httpAddress, "ListJobs", {});
    expect(none.status).toBe(401);
    expect(none.json).toMatchObject({ code: "unauthenticated", message: "ListJobs: this controller needs a token: give --token or set SHARDLINE_TOKEN" });
    expect(none.headers.get("www-authenticate")).toBe('Bearer realm="shardline"');
    expect((await call(httpAddress, "ListJobs", {}, "not-a-token-the-controller-knows")).json.code).toBe("unauthenticated");

    const denied = await call(httpAddress, "ApplyJob", { manifest: manifest("rollup") }, VERA);
    expect(denied.status).toBe(403);
    expect(denied.json).toMatchObject({ code: "permission_denied", message: "ApplyJob: vera has role viewer, and this needs admin" });

    expect((await call(httpAddress, "ApplyJob", { manifest: manifest("rollup") }, ALICE)).status).toBe(200);
    expect((await call(httpAddress, "TriggerJob", { name: "rollup" }, OLIVER)).status).toBe(200);
    // One budget per caller over both ports: once Oliver's gRPC calls are refused, so are his HTTP ones.
    const grpc = createClient(AdminService, grpcAddress, { metadata: { authorization: `Bearer ${OLIVER}` } });
    cleanup.push(async () => grpc.close());
    let refused: unknown;
    for (let i = 0; i < 10 && refused === undefined; i++) refused = await grpc.listJobs({}).then(() => undefined, (error: unknown) => error);
    expect(refused).toMatchObject({ message: expect.stringMatching(/^ListJobs: too many calls from oliver; retry in \d+ ms/) });
    const limited = await call(httpAddress, "ListJobs", {}, OLIVER);
    expect(limited.status).toBe(429);
    expect(limited.json.code).toBe("resource_exhausted");
    expect(limited.json.message).toMatch(/^ListJobs: too many calls from oliver; retry in \d+ ms \(the controller's --admin-rate-limit\)$/);

    // /metrics is unchanged: a viewer's.
    expect((await fetch(`http://${httpAddress}/metrics`)).status).toBe(401);
    expect((await fetch(`http://${httpAddress}/metrics`, { headers: { authorization: `Bearer ${VERA}` } })).status).toBe(200);
  });

  it("serves HTTPS with the controller's certificate; with mutual TLS and no token file it refuses every call, since the HTTP port asks for no certificate", async () => {
    let ca = "";
    const certificates = async (at: string) => {
      const made = await makeTestCertificates(at);
      ca = await readFile(made.ca.certFile, "utf8");
      return { cert: made.server.cert, key: made.server.key, ca: made.ca.certFile };
    };
    const https = (address: string, token?: string) =>
      new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (token !== undefined) headers.authorization = `Bearer ${token}`;
        const sent = httpsRequest(`https://${address}/shardline.v1.AdminService/ListJobs`, { method: "POST", ca, headers }, (response) => {
          let text = "";
          response.on("data", (chunk: Buffer) => (text += chunk.toString()));
          response.on("end", () => resolve({ status: response.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
        });
        sent.on("error", reject);
        sent.end("{}");
      });
    const open = await start(undefined, {}, certificates);
    const refused = await https(open.httpAddress);
    expect(refused.status).toBe(401);
    expect(refused.json).toMatchObject({ code: "unauthenticated", message: expect.stringMatching(/^the admin API over HTTP needs tokens \(--token-file\)/) });
    await open.stop();
    await rm(dir!, { recursive: true, force: true });

    const locked = await start(TOKENS, {}, certificates);
    expect(await https(locked.httpAddress, VERA)).toMatchObject({ status: 200, json: { jobs: [] } });
    expect((await https(locked.httpAddress)).status).toBe(401);
  });

  it("streams WatchEvents over Connect's server streaming", async () => {
    const { httpAddress } = await start();
    const abort = new AbortController();
    const json = new TextEncoder().encode("{}");
    const envelope = new Uint8Array(5 + json.length);
    new DataView(envelope.buffer).setUint32(1, json.length);
    envelope.set(json, 5);
    const response = await fetch(`http://${httpAddress}/shardline.v1.AdminService/WatchEvents`, {
      method: "POST",
      headers: { "content-type": "application/connect+json" },
      body: envelope,
      signal: abort.signal,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/connect+json");
    const reader = response.body!.getReader();
    const applied = call(httpAddress, "ApplyJob", { manifest: manifest("watched") });
    let buffered = new Uint8Array();
    let event: { job?: string; type?: string; timeUnixMs?: string } | undefined;
    while (event?.job !== "watched") {
      const { value, done } = await reader.read();
      if (done) throw new Error("the watch ended");
      buffered = new Uint8Array([...buffered, ...value]);
      while (buffered.length >= 5) {
        const length = new DataView(buffered.buffer, buffered.byteOffset).getUint32(1);
        if (buffered.length < 5 + length) break;
        expect(buffered[0]).toBe(0);
        event = JSON.parse(new TextDecoder().decode(buffered.subarray(5, 5 + length))) as typeof event;
        buffered = buffered.slice(5 + length);
      }
    }
    expect(typeof event.timeUnixMs).toBe("string");
    expect((await applied).status).toBe(200);
    abort.abort();
    await reader.cancel().catch(() => {});
  });
});

describe("the AdminService over Connect, routed as on the gRPC port", () => {
  const halt: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const next of halt.splice(0)) await next();
  });

  const servers = (routing: ControllerStatus): Servers => {
    const logger = silentLogger();
    return new Servers({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      tls: undefined,
      authorization: new Authorization(undefined, logger),
      adminLimiter: undefined,
      maxAgents: 10,
      routing,
      ready: async () => true,
      metrics: new MetricsRegistry({ serviceName: "connect-routes-test" }),
      logger,
    });
  };

  it("answers on a follower unavailable, naming the leader in the text, a header and the error's details", async () => {
    const leadership = { leader: "10.1.2.3:7070", currentTerm: 4, onLeaderChange: () => () => {} } as unknown as EtcdLeadership;
    const part = servers({ leading: () => undefined, stopping: () => false, leadership: () => leadership, advertised: () => "127.0.0.1:7070", elected: new Promise(() => {}) });
    await part.start();
    halt.push(() => part.halt());
    const answer = await call(part.httpAddress, "ListJobs", {});
    expect(answer.status).toBe(503);
    expect(answer.json).toMatchObject({ code: "unavailable", message: "this controller is a follower; the leader is at 10.1.2.3:7070" });
    expect(answer.headers.get("shardline-leader")).toBe("10.1.2.3:7070");
    expect(answer.json.details).toEqual([expect.objectContaining({ debug: expect.objectContaining({ metadata: { leader: "10.1.2.3:7070" } }) })]);
  });

  it("counts calls at once over both ports against one limit of 64", async () => {
    let release: () => void = () => {};
    const blocked = new Promise<void>((resolve) => (release = resolve));
    const admin = {
      listJobs: async () => {
        await blocked;
        return { jobs: [] };
      },
    };
    const leading = { admin } as unknown as Leading;
    const part = servers({ leading: () => leading, stopping: () => false, leadership: () => undefined, advertised: () => undefined, elected: Promise.resolve(1) });
    await part.start();
    halt.push(() => part.halt());
    const grpc = createClient(AdminService, part.grpcAddress);
    halt.push(async () => grpc.close());
    // 40 over gRPC and 24 over HTTP fill the 64 places.
    const held = [...Array.from({ length: 40 }, () => grpc.listJobs({})), ...Array.from({ length: 24 }, () => call(part.httpAddress, "ListJobs", {}))];
    await new Promise((resolve) => setTimeout(resolve, 300));
    const refused = await call(part.httpAddress, "ListJobs", {});
    expect(refused.status).toBe(429);
    expect(refused.json).toMatchObject({
      code: "resource_exhausted",
      message: "shardline.v1.AdminService is already serving 64 calls, its limit of calls at once (fixed: no flag raises it); retry after a backoff",
    });
    await expect(grpc.listJobs({})).rejects.toMatchObject({ message: expect.stringMatching(/already serving 64 calls/) });
    release();
    await Promise.all(held);
    expect((await call(part.httpAddress, "ListJobs", {})).status).toBe(200);
  });
});
