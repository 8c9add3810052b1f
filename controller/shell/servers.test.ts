import { createServer, type Server } from "node:net";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import { freePort } from "../../tools/free-port.js";
import { Authorization } from "./authorization.js";
import type { ControllerStatus } from "./following.js";
import { Servers, type ServersOptions } from "./servers.js";
import { rawAgent } from "./testing/raw-agent.js";

/** Routing of a controller that does not lead, stopping as `stopping` says. */
function notLeading(stopping: () => boolean): ControllerStatus {
  return { leading: () => undefined, stopping, leadership: () => undefined, advertised: () => undefined, elected: new Promise(() => {}) };
}

function servers(overrides: Partial<ServersOptions> = {}): Servers {
  const logger = silentLogger();
  return new Servers({
    listen: "127.0.0.1:0",
    http: "127.0.0.1:0",
    tls: undefined,
    authorization: new Authorization(undefined, logger),
    adminLimiter: undefined,
    maxAgents: 10,
    routing: notLeading(() => true),
    ready: async () => true,
    metrics: new MetricsRegistry({ serviceName: "servers-test" }),
    logger,
    ...overrides,
  });
}

async function readyz(address: string): Promise<number> {
  return (await fetch(`http://${address}/readyz`)).status;
}

describe("Servers", () => {
  const halt: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const next of halt.splice(0)) await next();
  });

  it("answers /healthz, and /readyz as ready() says", async () => {
    let ready = true;
    const part = servers({ ready: async () => ready });
    await part.start();
    halt.push(() => part.halt());
    expect((await fetch(`http://${part.httpAddress}/healthz`)).status).toBe(200);
    expect(await readyz(part.httpAddress)).toBe(200);
    ready = false;
    expect(await readyz(part.httpAddress)).toBe(503);
  });

  it("routes calls while nothing leads: an admin call and an agent's stream are refused UNAVAILABLE while the controller stops", async () => {
    const part = servers({ routing: notLeading(() => true) });
    await part.start();
    halt.push(() => part.halt());
    const admin = createClient(AdminService, part.grpcAddress);
    try {
      const error = await admin.listJobs({}).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ShardlineError);
      expect(error).toMatchObject({ code: "unavailable", message: "the controller is shutting down" });
    } finally {
      admin.close();
    }
    const agent = rawAgent(part.grpcAddress);
    agent.stream.send({ kind: { case: "hello", value: { agentId: "a-1", handlers: ["work"] } } });
    expect(await agent.closedStatus()).toMatchObject({ code: status.UNAVAILABLE, details: "the controller is shutting down" });
    agent.close();
  });

  it("fails to start on an HTTP port already taken, naming --http, and lets go of the gRPC port it had bound", async () => {
    const taken: Server = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    halt.push(() => new Promise((resolve) => taken.close(() => resolve())));
    const port = (taken.address() as { port: number }).port;
    const grpcPort = await freePort("127.0.0.1");
    const refused = servers({ listen: `127.0.0.1:${grpcPort}`, http: `127.0.0.1:${port}` });
    await expect(refused.start()).rejects.toThrow(`cannot listen on 127.0.0.1:${port} (--http)`);
    const again = servers({ listen: `127.0.0.1:${grpcPort}` });
    await again.start();
    halt.push(() => again.halt());
    expect(again.grpcAddress).toBe(`127.0.0.1:${grpcPort}`);
  });

  it("closes both ports once halted", async () => {
    const part = servers();
    await part.start();
    await part.halt();
    await expect(fetch(`http://${part.httpAddress}/healthz`)).rejects.toThrow();
    const admin = createClient(AdminService, part.grpcAddress);
    try {
      await expect(admin.listJobs({}, { deadlineMs: 2000 })).rejects.toMatchObject({ code: "unavailable" });
    } finally {
      admin.close();
    }
  });
});
