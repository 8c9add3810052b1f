import { X509Certificate } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { get as httpGet } from "node:http";
import { get as httpsGet } from "node:https";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { credentials, status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../agent/index.js";
import { type RunningController, startController } from "../controller/shell/controller.js";
import { ShardlineError } from "../shared/errors.js";
import { AdminService } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentService } from "../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../shared/grpc/index.js";
import { silentLogger } from "../shared/logging.js";
import { TlsCertificates } from "../shared/security/tls.js";
import { type CertificateFiles, makeTestCertificates, type TestCertificates } from "./harness/certificates.js";
import { CliProcess, freePort, requireBuiltCli, shardline, waitFor } from "./harness/processes.js";

const MANIFEST = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: secured}
spec:
  shards: 2
  handler: work
`;

const HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "..", "examples", "handlers.mjs");

/** How often a test controller reads its TLS files again: short, so that a rotation shows up soon. */
const REFRESH_MS = 100;

let dir: string;
let certs: TestCertificates;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "shardline-tls-"));
  certs = await makeTestCertificates(join(dir, "pki"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A controller in this process, serving TLS with `tls`, on a store of its own. */
async function tlsController(name: string, tls: { cert: string; key: string; ca?: string } | undefined): Promise<RunningController> {
  const home = join(dir, name);
  await mkdir(home, { recursive: true });
  return startController({
    listen: "127.0.0.1:0",
    http: "127.0.0.1:0",
    store: `sqlite:${join(home, "state.db")}`,
    logger: silentLogger(),
    ...(tls === undefined ? {} : { tls: { ...tls, refreshIntervalMs: REFRESH_MS } }),
  });
}

/** An admin client: plaintext, or TLS verified with the test CA, presenting `identity` when given. */
function admin(address: string, tls: "plaintext" | { identity?: CertificateFiles }) {
  const credentials =
    tls === "plaintext" ? undefined : TlsCertificates.forClient({ ca: certs.ca.certFile, ...tls.identity })!.channelCredentials();
  return createClient(AdminService, address, { deadlineMs: 5_000, ...(credentials === undefined ? {} : { credentials }) });
}

/**
 * An admin client built straight from grpc-js credentials, so that it presents what Shardline's
 * own clients refuse to (an expired certificate) or cannot check (one from another CA).
 */
async function rawTlsAdmin(address: string, identity: CertificateFiles | undefined) {
  const [ca, key, cert] = await Promise.all([readFile(certs.ca.certFile), identity && readFile(identity.key), identity && readFile(identity.cert)]);
  return createClient(AdminService, address, { deadlineMs: 5_000, credentials: credentials.createSsl(ca, key ?? null, cert ?? null) });
}

/** The error a call fails with. */
async function failure(call: Promise<unknown>): Promise<ShardlineError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ShardlineError);
  return error as ShardlineError;
}

/** The gRPC status code under a ShardlineError from the client. */
function grpcCode(error: ShardlineError): unknown {
  return (error.cause as { code?: unknown } | undefined)?.code;
}

/** The serial number of the certificate a new TLS connection to `address` is shown. */
function servedSerial(address: string, alpn: "h2" | "http/1.1"): Promise<string> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return readFile(certs.ca.certFile).then(
    (ca) =>
      new Promise((resolve, reject) => {
        // servername "localhost" (a SAN of the test certificates): an IP address is no SNI name.
        const socket = tlsConnect({ host, port, ca, servername: "localhost", ALPNProtocols: [alpn] }, () => {
          const serial = socket.getPeerCertificate().serialNumber;
          socket.end();
          resolve(serial);
        });
        socket.once("error", reject);
      }),
  );
}

/** GET `path` on an HTTP port: over HTTPS verified with the test CA, or plaintext. */
function fetchHttp(address: string, path: string, secure: boolean): Promise<{ status: number; body: string }> {
  return readFile(certs.ca.certFile).then(
    (ca) =>
      new Promise((resolve, reject) => {
        const url = `${secure ? "https" : "http"}://${address}${path}`;
        const done = (response: import("node:http").IncomingMessage): void => {
          let body = "";
          response.on("data", (chunk: Buffer) => (body += chunk.toString()));
          response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
        };
        const request = secure ? httpsGet(url, { ca, agent: false }, done) : httpGet(url, { agent: false }, done);
        request.once("error", reject);
      }),
  );
}

async function serialOf(file: string): Promise<string> {
  return new X509Certificate(await readFile(file)).serialNumber;
}

describe("a controller serving TLS", () => {
  let controller: RunningController | undefined;

  afterEach(async () => {
    await controller?.stop();
    controller = undefined;
  });

  it("answers admin calls over TLS verified with --tls-ca, and a plaintext client fails with UNAVAILABLE", async () => {
    controller = await tlsController("server-tls", certs.server);
    const secure = admin(controller.grpcAddress, {});
    const plain = admin(controller.grpcAddress, "plaintext");
    try {
      await secure.applyJob({ manifest: MANIFEST });
      expect((await secure.listJobs({})).jobs.map((job) => job.name)).toEqual(["secured"]);
      const refused = await failure(plain.listJobs({}));
      expect([refused.code, grpcCode(refused)]).toEqual(["unavailable", status.UNAVAILABLE]);
    } finally {
      secure.close();
      plain.close();
    }
  });

  it("serves its HTTP port over HTTPS with the server certificate, and nothing over plaintext there", async () => {
    controller = await tlsController("server-https", certs.server);
    expect(await fetchHttp(controller.httpAddress, "/healthz", true)).toEqual({ status: 200, body: "ok\n" });
    const plaintext = await fetchHttp(controller.httpAddress, "/healthz", false).then(
      (answer) => answer.status,
      (error: NodeJS.ErrnoException) => error.code,
    );
    expect(plaintext === "ECONNRESET" || plaintext === 400).toBe(true);
  });

  it("keeps its HTTP port plaintext without TLS", async () => {
    controller = await tlsController("plaintext", undefined);
    expect(await fetchHttp(controller.httpAddress, "/healthz", false)).toEqual({ status: 200, body: "ok\n" });
  });

  it("uses a renewed certificate and key for new connections on both ports, without a restart", async () => {
    const live = join(dir, "rotation");
    await mkdir(live, { recursive: true });
    const files = { cert: join(live, "tls.crt"), key: join(live, "tls.key") };
    await copyFile(certs.server.cert, files.cert);
    await copyFile(certs.server.key, files.key);
    controller = await tlsController("rotation-store", files);
    const before = await serialOf(certs.server.cert);
    expect(await servedSerial(controller.grpcAddress, "h2")).toBe(before);
    expect(await servedSerial(controller.httpAddress, "http/1.1")).toBe(before);

    const renewed = await certs.ca.issue("server-renewed", { cn: "shardline-controller-renewed", dns: ["localhost"], ip: ["127.0.0.1"], usage: ["serverAuth"] });
    const after = await serialOf(renewed.cert);
    expect(after).not.toBe(before);
    // Each file is replaced in one step, the key first, as a secret volume swaps them together.
    await copyFile(renewed.key, `${files.key}.next`);
    await copyFile(renewed.cert, `${files.cert}.next`);
    await rename(`${files.key}.next`, files.key);
    await rename(`${files.cert}.next`, files.cert);

    const address = controller.grpcAddress;
    await waitFor("the gRPC port to present the renewed certificate", async () => ((await servedSerial(address, "h2")) === after ? true : undefined), 10_000);
    const httpAddress = controller.httpAddress;
    await waitFor("the HTTP port to present the renewed certificate", async () => ((await servedSerial(httpAddress, "http/1.1")) === after ? true : undefined), 10_000);
    const client = admin(address, {});
    try {
      expect((await client.listJobs({})).jobs).toEqual([]);
    } finally {
      client.close();
    }
  });

  it("refuses to start on a key that does not match its certificate, naming the flag", async () => {
    const error = await failure(tlsController("mismatch", { cert: certs.server.cert, key: certs.admin.key }));
    expect(error.message).toMatch(/^--tls-key \S*admin\.key: this key does not belong to the certificate of --tls-cert \S*server\.pem/);
  });
});

describe("a controller requiring client certificates (mutual TLS)", () => {
  let controller: RunningController;

  beforeAll(async () => {
    controller = await tlsController("mutual", { ...certs.server, ca: certs.ca.certFile });
  });

  afterAll(async () => {
    await controller?.stop();
  });

  it.each<[string, () => keyof TestCertificates | undefined]>([
    ["no client certificate", () => undefined],
    ["a client certificate from another CA", () => "stranger"],
    ["an expired client certificate", () => "expired"],
  ])("refuses %s at the handshake with UNAVAILABLE, and still serves a well-configured client", async (_what, which) => {
    const key = which();
    const refusedClient = await rawTlsAdmin(controller.grpcAddress, key === undefined ? undefined : (certs[key] as CertificateFiles));
    const goodClient = admin(controller.grpcAddress, { identity: certs.admin });
    try {
      const refused = await failure(refusedClient.listJobs({}));
      expect([refused.code, grpcCode(refused)]).toEqual(["unavailable", status.UNAVAILABLE]);
      expect((await goodClient.listJobs({})).jobs).toEqual([]);
    } finally {
      refusedClient.close();
      goodClient.close();
    }
  });

  it("lets an agent with a certificate connect and run a job's executions", async () => {
    const ran: number[] = [];
    const agent = new Agent({
      controller: controller.grpcAddress,
      id: certs.agentId,
      handlers: { work: (context) => void ran.push(context.shard) },
      tls: { ca: certs.ca.certFile, ...certs.agent },
    });
    const client = admin(controller.grpcAddress, { identity: certs.admin });
    try {
      agent.start();
      await client.applyJob({ manifest: MANIFEST });
      await waitFor("the agent to own both shards", async () => {
        const [listed] = (await client.listAgents({})).agents;
        return listed?.id === certs.agentId && listed.shards.length === 2 ? true : undefined;
      });
      const fired = await client.triggerJob({ name: "secured" });
      const states = await waitFor("both executions to succeed", async () => {
        const executions = (await client.listExecutions({ job: "secured" })).executions.filter((e) => fired.executionIds.includes(e.id));
        return executions.length === 2 && executions.every((e) => e.state === ExecutionState.SUCCEEDED) ? executions.map((e) => e.agent) : undefined;
      });
      expect(states).toEqual([certs.agentId, certs.agentId]);
      expect(ran.sort()).toEqual([0, 1]);
    } finally {
      await agent.stop();
      await client.deleteJob({ name: "secured" }).catch(() => undefined);
      client.close();
    }
  });

  it("asks no client certificate on its HTTP port", async () => {
    expect(await fetchHttp(controller.httpAddress, "/readyz", true)).toEqual({ status: 200, body: "ready\n" });
  });

  it.each([
    ["its certificate's CN", (): string => certs.agentId, "welcome"],
    ["its certificate's DNS SAN", (): string => `${certs.agentId}.agents.shardline.test`, "welcome"],
    ["another agent's id", (): string => "agent-someone-else", status.PERMISSION_DENIED],
  ] as const)("lets an agent say hello under %s: %s", async (_what, id, expected) => {
    const credentials = TlsCertificates.forClient({ ca: certs.ca.certFile, ...certs.agent })!.channelCredentials();
    const client = createClient(AgentService, controller.grpcAddress, { credentials });
    const stream = client.connect();
    const ended = new Promise<status | "welcome">((resolve) => {
      stream.onMessage((message) => message.kind.case === "welcome" && resolve("welcome"));
      stream.onClose((closed) => resolve(closed.code));
    });
    stream.send({ kind: { case: "hello", value: { agentId: id(), handlers: ["work"], capacity: 1 } } });
    try {
      expect(await ended).toBe(expected);
    } finally {
      stream.close(status.CANCELLED, "test over");
      client.close();
    }
  });
});

describe("mutual TLS with a token file", () => {
  it("takes an agent's certificate in place of a join token, and still asks admin callers for theirs", async () => {
    const home = join(dir, "mutual-tokens");
    await mkdir(home, { recursive: true });
    const viewer = "viewer-token-0123456789abcdef";
    await writeFile(join(home, "tokens"), `${viewer},grafana,viewer\n`);
    const controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(home, "state.db")}`,
      logger: silentLogger(),
      tls: { ...certs.server, ca: certs.ca.certFile, refreshIntervalMs: REFRESH_MS },
      tokenFile: join(home, "tokens"),
    });
    const agent = new Agent({ controller: controller.grpcAddress, id: certs.agentId, handlers: { work: () => undefined }, tls: { ca: certs.ca.certFile, ...certs.agent } });
    const credentials = TlsCertificates.forClient({ ca: certs.ca.certFile, ...certs.admin })!.channelCredentials();
    const anonymous = createClient(AdminService, controller.grpcAddress, { credentials });
    const reader = createClient(AdminService, controller.grpcAddress, { credentials, metadata: { authorization: `Bearer ${viewer}` } });
    try {
      agent.start();
      await waitFor("the agent to be connected", async () => ((await reader.listAgents({})).agents.some((a) => a.id === certs.agentId) ? true : undefined));
      expect(grpcCode(await failure(anonymous.listAgents({})))).toBe(status.UNAUTHENTICATED);
    } finally {
      await agent.stop();
      anonymous.close();
      reader.close();
      await controller.stop();
    }
  });
});

describe("the shardline binary with TLS", () => {
  let controller: CliProcess | undefined;
  let agent: CliProcess | undefined;

  afterAll(async () => {
    await agent?.stop();
    await controller?.stop();
  });

  it("runs a controller and an agent over mutual TLS, and admin commands with the TLS flags", async () => {
    requireBuiltCli();
    const [grpcPort, httpPort, agentHttpPort] = [await freePort(), await freePort(), await freePort()];
    const address = `127.0.0.1:${grpcPort}`;
    const home = join(dir, "cli");
    await mkdir(home, { recursive: true });
    const adminFlags = ["--controller", address, "--tls-ca", certs.ca.certFile, "--tls-cert", certs.admin.cert, "--tls-key", certs.admin.key];
    controller = new CliProcess("controller", [
      "controller", "--listen", address, "--http", `127.0.0.1:${httpPort}`, "--store", `sqlite:${join(home, "state.db")}`,
      "--tls-cert", certs.server.cert, "--tls-key", certs.server.key, "--tls-ca", certs.ca.certFile, "--tls-refresh-interval", "0.5",
    ]);
    await waitFor("the controller to answer over mutual TLS", async () => {
      if (!controller!.running) throw new Error(`the controller exited:\n${controller!.output}`);
      return (await shardline(["get", "jobs", "-o", "json", ...adminFlags])).code === 0 ? true : undefined;
    });

    agent = new CliProcess(certs.agentId, [
      "agent", "--controller", address, "--id", certs.agentId, "--handlers", HANDLERS,
      "--tls-ca", certs.ca.certFile, "--tls-cert", certs.agent.cert, "--tls-key", certs.agent.key, "--http", `127.0.0.1:${agentHttpPort}`,
    ]);
    await waitFor("the agent to be ready on its HTTPS port", async () => {
      if (!agent!.running) throw new Error(`the agent exited:\n${agent!.output}`);
      return (await fetchHttp(`127.0.0.1:${agentHttpPort}`, "/readyz", true)).status === 200 ? true : undefined;
    });

    const listed = await shardline(["get", "agents", "-o", "json", ...adminFlags]);
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((a) => a.id)).toEqual([certs.agentId]);

    const plaintext = await shardline(["get", "jobs", "--controller", address]);
    expect(plaintext.code).toBe(5);
    const noCertificate = await shardline(["get", "jobs", "--controller", address, "--tls-ca", certs.ca.certFile]);
    expect(noCertificate.code).toBe(5);
    expect(noCertificate.stderr).toMatch(/certificate required.*; check --controller or SHARDLINE_CONTROLLER \(default 127\.0\.0\.1:7070\), and --tls-ca, --tls-cert and --tls-key\n/);
  });

  it.each<[string, () => string[], RegExp]>([
    ["get: a certificate without its key", () => ["get", "jobs", "--controller", "127.0.0.1:1", "--tls-ca", certs.ca.certFile, "--tls-cert", certs.admin.cert], /--tls-cert needs --tls-key/],
    ["get: a CA file that is not there", () => ["get", "jobs", "--controller", "127.0.0.1:1", "--tls-ca", join(dir, "nope.pem")], /--tls-ca \S*nope\.pem: cannot read it \(ENOENT\)/],
    [
      "get: an expired certificate",
      () => ["get", "jobs", "--controller", "127.0.0.1:1", "--tls-ca", certs.ca.certFile, "--tls-cert", certs.expired.cert, "--tls-key", certs.expired.key],
      /--tls-cert \S*expired\.pem: the certificate .* expired on/,
    ],
    [
      "agent: a client certificate without a CA",
      () => ["agent", "--controller", "127.0.0.1:1", "--id", "a-1", "--allow-http", "--tls-cert", certs.agent.cert, "--tls-key", certs.agent.key],
      /--tls-cert and --tls-key need --tls-ca/,
    ],
    [
      "controller: a key that is not its certificate's",
      () => ["controller", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--store", `sqlite:${join(dir, "refused.db")}`, "--tls-cert", certs.server.cert, "--tls-key", certs.agent.key],
      /--tls-key \S*agent\.key: this key does not belong to the certificate of --tls-cert/,
    ],
  ])("refuses %s before serving or connecting, with exit code 2 and a message naming the flag", async (_what, args, message) => {
    requireBuiltCli();
    const result = await shardline(args());
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });
});
