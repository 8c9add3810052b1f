import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../shared/logging.js";
import { TokenFile } from "../../shared/security/token-file.js";
import { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import { Authorization } from "./authorization.js";
import { CONSOLE_CONTENT_SECURITY_POLICY, CONSOLE_NOT_BUILT, packageRoot } from "./console-assets.js";
import type { ControllerStatus } from "./following.js";
import { Servers } from "./servers.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const PAGE = `<!doctype html><html><head><script type="module" src="/assets/index-Ab12Cd34.js"></script></head><body><div id="app"></div></body></html>\n`;
const SCRIPT = `console.log(${JSON.stringify("shardline ".repeat(200))});\n`;
const VERA = "vera-viewer-token-0123456789a";

/** A raw HTTP request, its path sent as written (fetch would resolve `..` before sending). */
function get(address: string, path: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  const [host, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const call = request({ host, port: Number(port), path, method: options.method ?? "GET", headers: options.headers ?? {} }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, headers: response.headers as Record<string, string>, body: Buffer.concat(chunks) }));
    });
    call.on("error", reject);
    call.end();
  });
}

describe("the web console on the controller's HTTP port", () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const next of cleanup.splice(0).reverse()) await next();
  });

  /** A built console (a page and one hashed script) in a temporary directory, or an empty one. */
  const consoleDir = async (built = true): Promise<string> => {
    const dir = await mkdtemp(join(tmpdir(), "shardline-console-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    if (built) {
      await mkdir(join(dir, "assets"));
      await writeFile(join(dir, "index.html"), PAGE);
      await writeFile(join(dir, "assets", "index-Ab12Cd34.js"), SCRIPT);
      await writeFile(join(dir, "assets", "index-Ef56Gh78.css"), "body{margin:0}\n");
    }
    return dir;
  };

  /** The controller's servers part, not leading, serving `dir` as the console; with tokens when given. */
  const serve = async (dir: string, tokens?: string): Promise<string> => {
    const logger = silentLogger();
    let tokenFile: TokenFile | undefined;
    if (tokens !== undefined) {
      const secrets = await mkdtemp(join(tmpdir(), "shardline-console-tokens-"));
      cleanup.push(() => rm(secrets, { recursive: true, force: true }));
      await writeFile(join(secrets, "tokens"), tokens);
      tokenFile = new TokenFile(join(secrets, "tokens"));
    }
    const routing: ControllerStatus = { leading: () => undefined, stopping: () => false, leadership: () => undefined, advertised: () => undefined, elected: new Promise(() => {}) };
    const servers = new Servers({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      tls: undefined,
      authorization: new Authorization(tokenFile, logger),
      adminLimiter: undefined,
      maxAgents: 10,
      routing,
      ready: async () => true,
      metrics: new MetricsRegistry({ serviceName: "console-assets-test" }),
      logger,
      consoleDir: dir,
    });
    await servers.start();
    cleanup.push(() => servers.halt());
    return servers.httpAddress;
  };

  it("serves the page at / and at every console path (client-side routes), never cached, with a strict Content-Security-Policy", async () => {
    const address = await serve(await consoleDir());
    for (const path of ["/", "/jobs", "/jobs/billing-rollup", "/executions?job=x&state=failed", "/executions/rollup/1767225600000/3/1", "/agents"]) {
      const answer = await get(address, path);
      expect(answer.status, path).toBe(200);
      expect(answer.body.toString(), path).toBe(PAGE);
      expect(answer.headers["content-type"]).toBe("text/html; charset=utf-8");
      expect(answer.headers["cache-control"]).toBe("no-cache");
      expect(answer.headers["content-security-policy"]).toBe(CONSOLE_CONTENT_SECURITY_POLICY);
      expect(answer.headers["x-content-type-options"]).toBe("nosniff");
      expect(answer.headers["referrer-policy"]).toBe("no-referrer");
    }
    const policy = CONSOLE_CONTENT_SECURITY_POLICY.split("; ");
    expect(policy).toContain("default-src 'self'");
    expect(policy).toContain("script-src 'self'");
    expect(policy).toContain("frame-ancestors 'none'");
    expect(CONSOLE_CONTENT_SECURITY_POLICY).not.toContain("unsafe-inline");
    expect(CONSOLE_CONTENT_SECURITY_POLICY).not.toContain("unsafe-eval");
  });

  it("serves hashed assets with their type and a year's immutable cache, gzipped when the browser accepts it, 304 for the etag it holds", async () => {
    const address = await serve(await consoleDir());
    const plain = await get(address, "/assets/index-Ab12Cd34.js");
    expect(plain.status).toBe(200);
    expect(plain.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(plain.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(plain.headers["content-security-policy"]).toBe(CONSOLE_CONTENT_SECURITY_POLICY);
    expect(plain.body.toString()).toBe(SCRIPT);
    expect(plain.headers["content-encoding"]).toBeUndefined();

    const gzipped = await get(address, "/assets/index-Ab12Cd34.js", { headers: { "accept-encoding": "gzip, deflate, br" } });
    expect(gzipped.headers["content-encoding"]).toBe("gzip");
    expect(gzipped.headers.vary).toBe("accept-encoding");
    expect(gunzipSync(gzipped.body).toString()).toBe(SCRIPT);
    expect(gzipped.body.length).toBeLessThan(SCRIPT.length / 4);
    expect((await get(address, "/assets/index-Ab12Cd34.js", { headers: { "accept-encoding": "gzip;q=0" } })).headers["content-encoding"]).toBeUndefined();

    const css = await get(address, "/assets/index-Ef56Gh78.css");
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");

    const again = await get(address, "/assets/index-Ab12Cd34.js", { headers: { "if-none-match": plain.headers.etag! } });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
  });

  it("answers HEAD with the headers alone", async () => {
    const address = await serve(await consoleDir());
    const page = await get(address, "/jobs", { method: "HEAD" });
    expect(page.status).toBe(200);
    expect(page.headers["content-length"]).toBe(String(Buffer.byteLength(PAGE)));
    expect(page.body.length).toBe(0);
    const script = await get(address, "/assets/index-Ab12Cd34.js", { method: "HEAD" });
    expect(script.status).toBe(200);
    expect(script.body.length).toBe(0);
  });

  it("never answers the page for a missing asset, a path out of assets/, the probes or the admin API", async () => {
    const address = await serve(await consoleDir());
    for (const path of ["/assets/index-00000000.js", "/assets/../index.html", "/assets/%2e%2e%2findex.html", "/assets/", "/assets/sub/x.js"]) {
      const answer = await get(address, path);
      expect(answer.status, path).toBe(404);
      expect(answer.body.toString(), path).toBe("not found\n");
    }
    expect((await get(address, "/healthz")).body.toString()).toBe("ok\n");
    expect((await get(address, "/readyz")).body.toString()).toBe("ready\n");
    expect((await get(address, "/metrics")).body.toString()).not.toContain("<html");
    // An unknown method of the admin API is the Connect routes' 404, not the page.
    const unknown = await get(address, "/shardline.v1.AdminService/NoSuchMethod");
    expect(unknown.status).toBe(404);
    expect(unknown.body.toString()).not.toContain("<html");
    expect((await get(address, "/jobs", { method: "POST" })).status).toBe(405);
  });

  it("says to run npm run build while the console is not built", async () => {
    const address = await serve(await consoleDir(false));
    for (const path of ["/", "/jobs/billing-rollup"]) {
      const answer = await get(address, path);
      expect(answer.status).toBe(404);
      expect(answer.body.toString()).toBe(CONSOLE_NOT_BUILT);
      expect(answer.body.toString()).toContain("npm run build");
    }
    expect((await get(address, "/healthz")).status).toBe(200);
  });

  it("serves the page and its assets without a token where the admin API and /metrics need one", async () => {
    const dir = await consoleDir();
    const address = await serve(dir, `${VERA},vera,viewer\n`);
    expect((await get(address, "/")).status).toBe(200);
    expect((await get(address, "/jobs/billing-rollup")).status).toBe(200);
    expect((await get(address, "/assets/index-Ab12Cd34.js")).status).toBe(200);
    expect((await get(address, "/metrics")).status).toBe(401);
    expect((await get(address, "/metrics", { headers: { authorization: `Bearer ${VERA}` } })).status).toBe(200);
  });

  it("finds the package root, and so dist/console/, from the sources and from the compiled files alike", () => {
    const root = join(HERE, "..", "..");
    expect(packageRoot(HERE)).toBe(root);
    expect(packageRoot(join(root, "dist", "controller", "shell"))).toBe(root);
  });
});
