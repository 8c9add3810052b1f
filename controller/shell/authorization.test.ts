import { Writable } from "node:stream";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentService } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { createLogger } from "../../shared/logging.js";
import { ADMIN_METHOD_ROLES, roleAllows, type Role } from "../../shared/security/roles.js";
import { type RunningController, startController } from "./controller.js";

const TOKENS: Record<Role, string> = {
  viewer: "viewer-token-0123456789abcdef",
  operator: "operator-token-0123456789abcdef",
  admin: "admin-token-0123456789abcdef",
  agent: "agent-token-0123456789abcdef",
};
const UNKNOWN = "unknown-token-0123456789abcdef";
const MANIFEST = "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: rollup}\nspec: {shards: 1, handler: work}\n";

/** What a call with these headers ends in: "ok", or the gRPC status code it failed with. */
async function outcome(method: (typeof AdminService.methods)[number], metadata: Record<string, string>, address: string, poke: () => Promise<void>): Promise<status | "ok"> {
  const client = createClient(AdminService, address, { metadata, deadlineMs: 10_000 });
  try {
    const fn = (client as unknown as Record<string, (request: object) => unknown>)[method.localName]!;
    if (method.methodKind === "server_streaming") {
      const events = (fn({}) as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      const first = events.next();
      // Awaited below; a denial may come while the event is being made.
      first.catch(() => {});
      // An allowed watch waits for an event: make one, and again until one arrives: an event
      // made before the watch has reached the controller (admin calls start one a turn) is
      // not the watch's to see. Bounded: a denial or a deadline ends the wait too.
      let settled = false;
      first.then(
        () => (settled = true),
        () => (settled = true),
      );
      for (let attempt = 0; attempt < 40 && !settled; attempt++) {
        await poke();
        await Promise.race([first.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 250))]);
      }
      await first;
      await events.return?.();
      return "ok";
    }
    await fn({});
    return "ok";
  } catch (error) {
    const code = (error as ShardlineError).cause as { code?: status } | undefined;
    return code?.code ?? status.UNKNOWN;
  } finally {
    client.close();
  }
}

describe("authorization with --token-file", () => {
  let dir: string;
  let controller: RunningController;
  const logs: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "shardline-auth-"));
    await writeFile(join(dir, "tokens"), Object.entries(TOKENS).map(([role, token]) => `${token},${role}-user,${role}`).join("\n"));
    const destination = new Writable({ write: (chunk: Buffer, _encoding, done) => (logs.push(chunk.toString()), done()) });
    controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: createLogger({ name: "controller", level: "info", destination }),
      tokenFile: join(dir, "tokens"),
    });
  });

  afterAll(async () => {
    await controller.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const poke = async () => {
    const admin = createClient(AdminService, controller.grpcAddress, { metadata: { authorization: `Bearer ${TOKENS.admin}` } });
    await admin.applyJob({ manifest: MANIFEST.replace("shards: 1", `shards: ${1 + Math.floor(Math.random() * 100)}`) });
    admin.close();
  };

  const cases = AdminService.methods.flatMap((method) =>
    (["viewer", "operator", "admin", "agent"] as Role[]).map((role) => ({ method, role, allowed: roleAllows(role, ADMIN_METHOD_ROLES[method.name]!) })),
  );
  it.each(cases)("$method.name with a token of role $role: allowed $allowed", async ({ method, role, allowed }) => {
    const result = await outcome(method, { authorization: `Bearer ${TOKENS[role]}` }, controller.grpcAddress, poke);
    if (allowed) expect([status.UNAUTHENTICATED, status.PERMISSION_DENIED]).not.toContain(result);
    else expect(result).toBe(status.PERMISSION_DENIED);
  });

  it.each(AdminService.methods.map((method) => ({ method })))("$method.name without a token, or with an unknown one, is UNAUTHENTICATED", async ({ method }) => {
    expect(await outcome(method, {}, controller.grpcAddress, poke)).toBe(status.UNAUTHENTICATED);
    expect(await outcome(method, { authorization: `Bearer ${UNKNOWN}` }, controller.grpcAddress, poke)).toBe(status.UNAUTHENTICATED);
    expect(await outcome(method, { authorization: TOKENS.admin }, controller.grpcAddress, poke)).toBe(status.UNAUTHENTICATED);
  });

  it.each([
    ["an agent token", TOKENS.agent, "welcome"],
    ["no token", undefined, status.UNAUTHENTICATED],
    ["an unknown token", UNKNOWN, status.UNAUTHENTICATED],
    ["an admin's token", TOKENS.admin, status.PERMISSION_DENIED],
  ] as const)("lets an agent connect with %s: %s", async (_what, token, expected) => {
    const client = createClient(AgentService, controller.grpcAddress, token === undefined ? {} : { metadata: { authorization: `Bearer ${token}` } });
    const stream = client.connect();
    const ended = new Promise<status | "welcome">((resolve) => {
      stream.onMessage((message) => message.kind.case === "welcome" && resolve("welcome"));
      stream.onClose((closed) => resolve(closed.code));
    });
    stream.send({ kind: { case: "hello", value: { agentId: `auth-${String(expected)}`, handlers: ["work"], capacity: 1 } } });
    expect(await ended).toBe(expected);
    client.close();
  });

  it("answers /metrics 401 without a token, 403 to an agent, 200 to a viewer, and leaves the probes open", async () => {
    const url = (path: string) => `http://${controller.httpAddress}${path}`;
    const get = (path: string, token?: string) => fetch(url(path), token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
    const anonymous = await get("/metrics");
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toContain("Bearer");
    expect((await get("/metrics", TOKENS.agent)).status).toBe(403);
    const viewer = await get("/metrics", TOKENS.viewer);
    expect(viewer.status).toBe(200);
    expect(await viewer.text()).toContain("shardline_");
    expect((await get("/healthz")).status).toBe(200);
    expect((await get("/readyz")).status).toBe(200);
  });

  it("logs each denial with the caller's name, never a token", async () => {
    await outcome(AdminService.method.deleteJob, { authorization: `Bearer ${TOKENS.viewer}` }, controller.grpcAddress, poke);
    const denial = logs.find((line) => line.includes("viewer-user") && line.includes("DeleteJob"));
    expect(denial).toBeDefined();
    for (const token of [...Object.values(TOKENS), UNKNOWN]) expect(logs.join("")).not.toContain(token);
  });
});
