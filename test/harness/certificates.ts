import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The openssl binary the certificates are made with (OpenSSL 3.0 or later). */
const OPENSSL = process.env.OPENSSL ?? "openssl";

/** A certificate and its private key, as PEM files. */
export interface CertificateFiles {
  cert: string;
  key: string;
}

/** What a certificate is for, and who it names. */
export interface CertificateRequest {
  /** The subject's common name, e.g. an agent's id. */
  cn: string;
  /** DNS names in the subjectAltName. */
  dns?: string[];
  /** IP addresses in the subjectAltName. */
  ip?: string[];
  /** URIs in the subjectAltName, e.g. a SPIFFE id. */
  uri?: string[];
  /** Extended key usages; default both serverAuth and clientAuth. */
  usage?: ("serverAuth" | "clientAuth")[];
  /** Valid in the past only (2020-01-01 to 2020-01-02), so that every peer refuses it. */
  expired?: boolean;
}

/**
 * A certificate authority made for one test with the openssl binary, in `dir`. It issues
 * certificates with `openssl x509 -req`, and expired ones with `openssl ca -startdate -enddate`
 * (OpenSSL 3.0's x509 command cannot backdate a certificate).
 */
export class TestCertificateAuthority {
  private constructor(
    readonly dir: string,
    readonly name: string,
    /** The CA certificate, PEM: what --tls-ca names. */
    readonly certFile: string,
    private readonly keyFile: string,
  ) {}

  static async create(dir: string, name: string): Promise<TestCertificateAuthority> {
    await mkdir(dir, { recursive: true });
    const cert = join(dir, `${name}.pem`);
    const key = join(dir, `${name}.key`);
    await openssl([
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${name}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    return new TestCertificateAuthority(dir, name, cert, key);
  }

  /** Issues a certificate (a new key, a random serial) to `file`.pem and `file`.key. */
  async issue(file: string, request: CertificateRequest): Promise<CertificateFiles> {
    const cert = join(this.dir, `${file}.pem`);
    const key = join(this.dir, `${file}.key`);
    const csr = join(this.dir, `${file}.csr`);
    const extensions = join(this.dir, `${file}.ext`);
    await openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj", `/CN=${request.cn}`]);
    const names = [
      ...(request.dns ?? []).map((name) => `DNS:${name}`),
      ...(request.ip ?? []).map((address) => `IP:${address}`),
      ...(request.uri ?? []).map((uri) => `URI:${uri}`),
    ];
    const lines = [
      "basicConstraints = critical, CA:FALSE",
      "keyUsage = critical, digitalSignature, keyEncipherment",
      `extendedKeyUsage = ${(request.usage ?? ["serverAuth", "clientAuth"]).join(", ")}`,
      ...(names.length === 0 ? [] : [`subjectAltName = ${names.join(", ")}`]),
    ];
    await writeFile(extensions, `${lines.join("\n")}\n`);
    if (request.expired) {
      await this.#issueBackdated(csr, cert, extensions);
    } else {
      await openssl([
        "x509", "-req", "-in", csr, "-CA", this.certFile, "-CAkey", this.keyFile, "-out", cert,
        "-days", "1", "-set_serial", `0x${randomBytes(8).toString("hex")}`, "-extfile", extensions,
      ]);
    }
    return { cert, key };
  }

  /** `openssl ca` with its own small database, the one OpenSSL 3.0 command that takes a start and an end date. */
  async #issueBackdated(csr: string, cert: string, extensions: string): Promise<void> {
    const db = join(this.dir, `${this.name}-db`);
    await mkdir(db, { recursive: true });
    await writeFile(join(db, "index.txt"), "", { flag: "a" });
    await writeFile(join(db, "serial"), `${randomBytes(8).toString("hex")}\n`);
    const config = join(db, "ca.cnf");
    await writeFile(
      config,
      [
        "[ ca ]",
        "default_ca = backdating",
        "[ backdating ]",
        `database = ${join(db, "index.txt")}`,
        `new_certs_dir = ${db}`,
        `serial = ${join(db, "serial")}`,
        "default_md = sha256",
        "policy = any_subject",
        "unique_subject = no",
        "[ any_subject ]",
        "commonName = supplied",
        "",
      ].join("\n"),
    );
    await openssl([
      "ca", "-batch", "-notext", "-config", config, "-cert", this.certFile, "-keyfile", this.keyFile,
      "-in", csr, "-out", cert, "-extfile", extensions, "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
    ]);
  }
}

/** The certificates a TLS test needs, all made fresh in `dir`. */
export interface TestCertificates {
  /** The CA every legitimate party trusts. */
  ca: TestCertificateAuthority;
  /** The controller's: SAN IP:127.0.0.1 and DNS:localhost. */
  server: CertificateFiles;
  /** A client certificate whose CN is the agent id `agentId`, with a DNS, an IP (127.0.0.1, for its --http port) and a SPIFFE URI SAN. */
  agent: CertificateFiles;
  agentId: string;
  /** A client certificate for an admin (CN `ops-admin`). */
  admin: CertificateFiles;
  /** A client certificate from another CA, which the controller does not trust. */
  stranger: CertificateFiles;
  /** A client certificate from the right CA, expired. */
  expired: CertificateFiles;
}

/** Makes a CA, a server certificate, client certificates, one from another CA and an expired one. */
export async function makeTestCertificates(dir: string, agentId = "agent-tls-1"): Promise<TestCertificates> {
  const ca = await TestCertificateAuthority.create(dir, "shardline-test-ca");
  const other = await TestCertificateAuthority.create(dir, "other-ca");
  const [server, agent, admin, stranger, expired] = await Promise.all([
    ca.issue("server", { cn: "shardline-controller", dns: ["localhost"], ip: ["127.0.0.1"], usage: ["serverAuth"] }),
    ca.issue("agent", { cn: agentId, dns: [`${agentId}.agents.shardline.test`], ip: ["127.0.0.1"], uri: [`spiffe://shardline.test/agent/${agentId}`] }),
    ca.issue("admin", { cn: "ops-admin", usage: ["clientAuth"] }),
    other.issue("stranger", { cn: "agent-from-elsewhere", usage: ["clientAuth"] }),
    ca.issue("expired", { cn: "agent-expired", usage: ["clientAuth"], expired: true }),
  ]);
  return { ca, server, agent, agentId, admin, stranger, expired };
}

/** The PEM text of a file, e.g. to compare the certificate a peer presented with the one on disk. */
export function pem(file: string): Promise<string> {
  return readFile(file, "utf8");
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run(OPENSSL, args, { timeout: 30_000 });
  } catch (error) {
    const { code, stderr } = error as { code?: unknown; stderr?: string };
    if (code === "ENOENT") throw new Error(`the openssl binary is missing: install the "openssl" package (or set OPENSSL to its path)`);
    throw new Error(`openssl ${args[0]} failed: ${stderr ?? String(error)}`);
  }
}
