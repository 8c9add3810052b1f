import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { ADMIN_ROUTE_PREFIX } from "./connect-routes.js";

/**
 * The web console on the controller's HTTP port: the files `npm run build` writes to
 * dist/console/ (console/vite.config.ts). `/assets/NAME` is a hashed file, cached for a year;
 * every other path is the page itself (index.html, never cached), so that the console's own
 * paths (`/jobs/billing-rollup`, `/executions?job=x`) load it and it routes them in the browser.
 *
 * The files hold no data (the page asks the AdminService for that, with the caller's token), so
 * they are served to anyone, like `/healthz`: the page must load before it can ask for a token.
 * Nothing they load comes from elsewhere (air-gapped clusters), which the Content-Security-Policy
 * enforces: scripts, styles, images and calls from the controller only, no inline script, no frame.
 */

/** The paths of the HTTP port's probes: never the page, even when their probe is absent. */
const PROBE_PATHS = new Set(["/healthz", "/readyz", "/livez", "/metrics"]);

/** Where the hashed files are served from, in the built console and on the HTTP port. */
const ASSETS_PREFIX = "/assets/";

/** A built asset's name: the hashed files Vite writes, nothing with a path in it. */
const ASSET_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** The page may load and call the controller only: see the module's comment. */
export const CONSOLE_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Headers on every answer of the console's paths, found or not. */
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": CONSOLE_CONTENT_SECURITY_POLICY,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  // frame-ancestors for browsers that predate it.
  "x-frame-options": "DENY",
};

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".json": "application/json",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

/** Types worth compressing: text. */
const COMPRESSIBLE = new Set([".html", ".js", ".css", ".svg", ".json", ".map", ".txt"]);

const IMMUTABLE = "public, max-age=31536000, immutable";

/** What the page answers while dist/console/ has no index.html. */
export const CONSOLE_NOT_BUILT =
  "the web console is not built: run `npm run build` (it writes dist/console/), then reload; the admin API, /metrics, /healthz and /readyz are served regardless\n";

/** Options of consoleAssets. */
export interface ConsoleAssetsOptions {
  /** The built console (holding index.html and assets/); default: dist/console/ of the package this module belongs to. */
  dir?: string;
}

/** One file, read once: assets are named by their content's hash, so a name never changes its bytes. */
interface LoadedFile {
  body: Buffer;
  gzipped: Buffer | undefined;
  etag: string;
  type: string;
}

/**
 * The HTTP port's fallback (HttpProbes.fallback) serving the web console: GET and HEAD only (the
 * HTTP server answers other methods 405 before it gets here).
 */
export function consoleAssets(options: ConsoleAssetsOptions = {}): RequestListener {
  const dir = options.dir ?? join(packageRoot(dirname(fileURLToPath(import.meta.url))), "dist", "console");
  const assets = new Map<string, LoadedFile>();
  return (request, response) => {
    answer(request, response, dir, assets).catch(() => {
      // A file that vanished between the check and the read (a rebuild under way): as if never built.
      if (!response.headersSent) response.writeHead(404, { ...SECURITY_HEADERS, "content-type": "text/plain; charset=utf-8" });
      response.end(request.method === "HEAD" ? undefined : CONSOLE_NOT_BUILT);
    });
  };
}

async function answer(request: IncomingMessage, response: ServerResponse, dir: string, assets: Map<string, LoadedFile>): Promise<void> {
  const path = (request.url ?? "/").split("?")[0] ?? "/";
  if (PROBE_PATHS.has(path) || path.startsWith(ADMIN_ROUTE_PREFIX) || (request.method !== "GET" && request.method !== "HEAD")) {
    send(request, response, 404, "text/plain; charset=utf-8", Buffer.from("not found\n"), {});
    return;
  }
  if (path.startsWith(ASSETS_PREFIX)) {
    const name = path.slice(ASSETS_PREFIX.length);
    let file = assets.get(name);
    if (file === undefined && ASSET_NAME.test(name) && existsSync(join(dir, "assets", name))) {
      file = load(await readFile(join(dir, "assets", name)), extname(name));
      assets.set(name, file);
    }
    if (file === undefined) {
      // Never the page in place of a missing script: the browser would run HTML as one and say less.
      send(request, response, 404, "text/plain; charset=utf-8", Buffer.from("not found\n"), {});
      return;
    }
    serveFile(request, response, file, IMMUTABLE);
    return;
  }
  const index = join(dir, "index.html");
  if (!existsSync(index)) {
    send(request, response, 404, "text/plain; charset=utf-8", Buffer.from(CONSOLE_NOT_BUILT), {});
    return;
  }
  // Read at each request (it is small): a rebuild's page, naming the new assets, is served at once.
  serveFile(request, response, load(await readFile(index), ".html"), "no-cache");
}

function load(body: Buffer, extension: string): LoadedFile {
  return {
    body,
    gzipped: COMPRESSIBLE.has(extension) && body.length > 512 ? gzipSync(body) : undefined,
    etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
    type: CONTENT_TYPES[extension] ?? "application/octet-stream",
  };
}

function serveFile(request: IncomingMessage, response: ServerResponse, file: LoadedFile, cacheControl: string): void {
  const headers: Record<string, string> = { "cache-control": cacheControl, etag: file.etag };
  if (file.gzipped !== undefined) headers.vary = "accept-encoding";
  if ((request.headers["if-none-match"] ?? "").split(",").some((tag) => tag.trim() === file.etag)) {
    response.writeHead(304, { ...SECURITY_HEADERS, ...headers }).end();
    return;
  }
  if (file.gzipped !== undefined && acceptsGzip(request.headers["accept-encoding"])) {
    send(request, response, 200, file.type, file.gzipped, { ...headers, "content-encoding": "gzip" });
    return;
  }
  send(request, response, 200, file.type, file.body, headers);
}

function send(request: IncomingMessage, response: ServerResponse, code: number, type: string, body: Buffer, headers: Record<string, string>): void {
  response.writeHead(code, { ...SECURITY_HEADERS, ...headers, "content-type": type, "content-length": String(body.length) });
  response.end(request.method === "HEAD" ? undefined : body);
}

/** True unless the client refuses gzip or does not name it (`accept-encoding: gzip;q=0`, or none). */
function acceptsGzip(header: string | undefined): boolean {
  if (header === undefined) return false;
  return header.split(",").some((part) => {
    const [coding, ...params] = part.trim().toLowerCase().split(";");
    if (coding?.trim() !== "gzip" && coding?.trim() !== "*") return false;
    const weight = params.map((param) => /^\s*q=([0-9.]+)\s*$/.exec(param)?.[1]).find((value) => value !== undefined);
    return weight === undefined || Number(weight) > 0;
  });
}

/**
 * The directory of the package this module belongs to: the nearest one up from `from` whose
 * package.json names shardline. The same from the sources (controller/shell/, under vitest) and
 * from the compiled files (dist/controller/shell/), and in an installed copy.
 */
export function packageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && packageName(manifest) === "shardline") return dir;
    if (dirname(dir) === dir) return from;
  }
}

function packageName(manifest: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name;
  } catch {
    // Not ours if unreadable; keep looking further up.
    return undefined;
  }
}
