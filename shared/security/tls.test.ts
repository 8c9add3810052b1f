import { copyFile, mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PeerCertificate } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCertificates, pem, type TestCertificates } from "../../test/harness/certificates.js";
import { ShardlineError } from "../errors.js";
import { AdminService } from "../gen/shardline/v1/admin_service_pb.js";
import { addService, createClient, createServer, listen, shutdown, type CallContext } from "../grpc/index.js";
import { certificateIdentities, TlsCertificates, type TlsOptions } from "./tls.js";

let dir: string;
let certs: TestCertificates;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "shardline-tls-unit-"));
  certs = await makeTestCertificates(join(dir, "pki"), "agent-7");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The ShardlineError `make` throws. */
function refusal(make: () => unknown): ShardlineError {
  try {
    make();
  } catch (error) {
    expect(error).toBeInstanceOf(ShardlineError);
    return error as ShardlineError;
  }
  throw new Error("expected a ShardlineError, and nothing was thrown");
}

describe("TlsCertificates, checked at start", () => {
  it("means plaintext when no file is given, on either side", () => {
    expect(TlsCertificates.forServer({})).toBeUndefined();
    expect(TlsCertificates.forClient({ cert: "", key: "", ca: "" })).toBeUndefined();
  });

  it("takes a server's certificate and key, with a CA for mutual TLS, and a client's CA with or without a certificate", () => {
    expect(TlsCertificates.forServer({ ...certs.server })?.verifiesPeers).toBe(false);
    expect(TlsCertificates.forServer({ ...certs.server, ca: certs.ca.certFile })?.verifiesPeers).toBe(true);
    expect(TlsCertificates.forClient({ ca: certs.ca.certFile })?.hasIdentity).toBe(false);
    expect(TlsCertificates.forClient({ ...certs.agent, ca: certs.ca.certFile })?.hasIdentity).toBe(true);
  });

  it.each<[string, () => TlsOptions, "server" | "client", RegExp]>([
    ["a certificate without its key", () => ({ cert: certs.server.cert }), "server", /^--tls-cert needs --tls-key/],
    ["a key without its certificate", () => ({ key: certs.server.key }), "server", /^--tls-key needs --tls-cert/],
    ["a CA without a certificate to serve", () => ({ ca: certs.ca.certFile }), "server", /^--tls-ca needs --tls-cert and --tls-key/],
    ["a client certificate without a CA", () => ({ ...certs.agent }), "client", /^--tls-cert and --tls-key need --tls-ca/],
    ["a file that is not there", () => ({ ...certs.server, ca: join(dir, "missing.pem") }), "server", /^--tls-ca \S*missing\.pem: cannot read it \(ENOENT\)/],
    ["a certificate file holding a key", () => ({ cert: certs.server.key, key: certs.server.key }), "server", /^--tls-cert \S*server\.key: holds no certificate/],
    ["a key file holding a certificate", () => ({ cert: certs.server.cert, key: certs.server.cert }), "server", /^--tls-key \S*server\.pem: not a private key/],
    ["a key of another certificate", () => ({ cert: certs.server.cert, key: certs.agent.key }), "server", /^--tls-key \S*agent\.key: this key does not belong to the certificate of --tls-cert \S*server\.pem \(CN=shardline-controller/],
    ["an expired certificate", () => ({ ...certs.expired, ca: certs.ca.certFile }), "client", /^--tls-cert \S*expired\.pem: the certificate \(CN=agent-expired, serial [0-9A-F]+\) expired on Jan {2}2 00:00:00 2020 GMT; renew it$/],
    ["a CA file that is not PEM", () => ({ ca: certs.ca.certFile.replace(/\.pem$/, ".key") }), "client", /^--tls-ca \S*\.key: holds no certificate/],
  ])("refuses %s, naming the flag", (_what, options, side, message) => {
    const error = refusal(() => (side === "server" ? TlsCertificates.forServer(options()) : TlsCertificates.forClient(options())));
    expect(error.code).toBe("invalid-argument");
    expect(error.message).toMatch(message);
  });

  it("names the fields it is told to, e.g. an agent's options", () => {
    const names = { cert: "tls.cert", key: "tls.key", ca: "tls.ca", refreshIntervalMs: "tls.refreshIntervalMs" };
    expect(refusal(() => TlsCertificates.forClient({ cert: certs.agent.cert }, names)).message).toMatch(/^tls\.cert needs tls\.key/);
    expect(refusal(() => TlsCertificates.forClient({ ca: certs.ca.certFile, refreshIntervalMs: 0 }, names)).message).toMatch(/^tls\.refreshIntervalMs: 0 is not allowed/);
  });
});

describe("TlsCertificates, read again", () => {
  it("passes on a renewed certificate, and keeps the one in use while the files do not make a pair", async () => {
    const live = join(dir, "reload");
    await mkdir(live, { recursive: true });
    const cert = join(live, "tls.crt");
    const key = join(live, "tls.key");
    await copyFile(certs.server.cert, cert);
    await copyFile(certs.server.key, key);
    const errors: ShardlineError[] = [];
    let reported: (() => void) | undefined;
    const tls = TlsCertificates.forServer({
      cert,
      key,
      refreshIntervalMs: 20,
      onReloadError: (error) => {
        errors.push(error);
        reported?.();
      },
    })!;
    const seen: string[] = [];
    let renewed: ((certificate: string) => void) | undefined;
    const listener = (update: { certificate: Buffer } | null): void => {
      const text = update?.certificate.toString() ?? "null";
      seen.push(text);
      renewed?.(text);
    };
    tls.addIdentityCertificateListener(listener);
    try {
      // Half-rotated: the new certificate beside the old key. Reported once, not passed on.
      const reportedOnce = new Promise<void>((resolve) => (reported = resolve));
      await replaceFile(cert, await pem(certs.agent.cert));
      await reportedOnce;
      expect(errors[0]!.message).toMatch(/^--tls-key \S*tls\.key: this key does not belong to the certificate of --tls-cert .*; the certificates read before stay in use$/);
      expect(tls.identity!.certificate.toString()).toBe(await pem(certs.server.cert));

      const expected = await pem(certs.agent.cert);
      const arrived = new Promise<void>((resolve) => (renewed = (text) => text === expected && resolve()));
      await replaceFile(key, await pem(certs.agent.key));
      await arrived;
      expect(tls.identity!.certificate.toString()).toBe(expected);
      expect(errors).toHaveLength(1);
      expect(seen).toEqual([await pem(certs.server.cert), expected]);
    } finally {
      tls.removeIdentityCertificateListener(listener);
    }
  });
});

describe("certificateIdentities", () => {
  it("lists the common name, then the DNS and URI names, and leaves IP addresses and repeats out", () => {
    const peer = {
      subject: { CN: "agent-7" },
      subjectaltname: 'DNS:agent-7.agents.test, IP Address:127.0.0.1, URI:spiffe://shardline.test/agent/agent-7, DNS:"odd, name", DNS:agent-7',
    } as unknown as PeerCertificate;
    expect(certificateIdentities(peer)).toEqual(["agent-7", "agent-7.agents.test", "spiffe://shardline.test/agent/agent-7", "odd, name"]);
    expect(certificateIdentities(undefined)).toEqual([]);
  });
});

describe("CallContext.peerIdentities over real gRPC", () => {
  /** Serves ListJobs, recording what its context says of the client. */
  async function recordingServer(tls: TlsCertificates | undefined): Promise<{ address: string; seen: (readonly string[] | undefined)[]; stop(): Promise<void> }> {
    const seen: (readonly string[] | undefined)[] = [];
    const server = createServer();
    addService(server, AdminService, {
      listJobs: async (_request: unknown, context: CallContext) => {
        seen.push(context.peerIdentities);
        return {};
      },
    });
    const port = await listen(server, "127.0.0.1:0", tls?.serverCredentials());
    return { address: `127.0.0.1:${port}`, seen, stop: () => shutdown(server, 100) };
  }

  it("carries the verified client certificate's CN and names under mutual TLS", async () => {
    const server = await recordingServer(TlsCertificates.forServer({ ...certs.server, ca: certs.ca.certFile }));
    const client = createClient(AdminService, server.address, {
      credentials: TlsCertificates.forClient({ ...certs.agent, ca: certs.ca.certFile })!.channelCredentials(),
    });
    try {
      await client.listJobs({});
      expect(server.seen).toEqual([["agent-7", "agent-7.agents.shardline.test", "spiffe://shardline.test/agent/agent-7"]]);
    } finally {
      client.close();
      await server.stop();
    }
  });

  it("is undefined over TLS without client certificates, and over plaintext", async () => {
    const tlsOnly = await recordingServer(TlsCertificates.forServer({ ...certs.server }));
    const plain = await recordingServer(undefined);
    const tlsClient = createClient(AdminService, tlsOnly.address, { credentials: TlsCertificates.forClient({ ...certs.agent, ca: certs.ca.certFile })!.channelCredentials() });
    const plainClient = createClient(AdminService, plain.address);
    try {
      await tlsClient.listJobs({});
      await plainClient.listJobs({});
      expect([tlsOnly.seen, plain.seen]).toEqual([[undefined], [undefined]]);
    } finally {
      tlsClient.close();
      plainClient.close();
      await tlsOnly.stop();
      await plain.stop();
    }
  });
});

/** Replaces a file's content in one step, as a Kubernetes secret volume or cert-manager does. */
async function replaceFile(path: string, content: string): Promise<void> {
  const next = `${path}.next`;
  await writeFile(next, content);
  await rename(next, path);
}
