import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { ShardlineError } from "./errors.js";
import type { TlsCertificates } from "./security/tls.js";

/** What `/readyz` says: ready or not, and when not, optionally why (sent as the 503's body). */
export interface Readiness {
  ready: boolean;
  /** Why not, in words for an operator, e.g. "cannot reach the controller at 10.0.0.5:7070: connection refused". */
  reason?: string;
}

/** What the HTTP endpoints report on. */
export interface HttpProbes {
  /**
   * True while the process can do its part (controller: the store answers and the leader is
   * known; agent: welcomed, leased). A Readiness may say why not: `/readyz` answers 503 with
   * "not ready: <reason>" instead of "not ready".
   */
  ready(): Promise<boolean | Readiness>;
  /** Answers a scrape of `/metrics` (MetricsRegistry.handle); absent, `/metrics` is not found. */
  metrics?(request: IncomingMessage, response: ServerResponse): void;
  /**
   * Decides whether a request for `path` may be answered, from its `authorization` header:
   * throws ShardlineError "unauthenticated" (401) or "permission-denied" (403) when not. Absent,
   * every route is open.
   */
  authorize?(path: string, authorization: string | undefined, peer: string): void;
  /**
   * More routes: a request whose path starts with a route's `prefix` goes to its `handle`
   * whatever its method, before `authorize` and the probes (the route checks its callers itself,
   * and answers the paths under its prefix it does not know). The controller serves its
   * AdminService over the Connect protocol this way.
   */
  routes?: readonly HttpRoute[];
  /**
   * Answers a GET or HEAD whose path no probe answers, after `authorize` (the controller's web
   * console: its page and assets); absent, such a path is 404. It answers the probes' own paths
   * only when their probe is absent (`/metrics` without `metrics`), and should refuse them then.
   */
  fallback?: RequestListener;
}

/** A route of the HTTP port besides the probes: every path under `prefix`. */
export interface HttpRoute {
  /** E.g. `/shardline.v1.AdminService/`. */
  prefix: string;
  handle: RequestListener;
}

/**
 * The HTTP port of a controller or an agent (`--http`): `/healthz` says the process serves
 * requests, `/readyz` that it can do its job, `/metrics` its Prometheus metrics, `routes`
 * whatever else the process serves there (the controller's AdminService), and `fallback` the
 * other GET and HEAD paths (the controller's web console). With `tls`, it
 * serves HTTPS with that certificate, and takes a renewed one when `tls` reads it (each refresh
 * interval); it asks no client certificate, even when `tls` verifies the gRPC port's clients:
 * probes and scrapers authenticate with tokens, or not at all.
 */
export async function startHttpServer(hostPort: string, probes: HttpProbes, tls?: TlsCertificates): Promise<{ server: Server; address: string }> {
  const { host, port } = splitHostPort(hostPort, "--http");
  const handle: RequestListener = (request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    const route = probes.routes?.find((candidate) => path?.startsWith(candidate.prefix) === true);
    if (route !== undefined) {
      route.handle(request, response);
      return;
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    try {
      probes.authorize?.(path ?? "/", request.headers.authorization, request.socket.remoteAddress ?? "");
    } catch (error) {
      const denied = error instanceof ShardlineError && (error.code === "unauthenticated" || error.code === "permission-denied");
      const code = !denied ? 500 : error.code === "unauthenticated" ? 401 : 403;
      const headers: Record<string, string> = { "content-type": "text/plain" };
      if (code === 401) headers["www-authenticate"] = 'Bearer realm="shardline"';
      response.writeHead(code, headers).end(denied ? `${error.message}\n` : "internal error\n");
      return;
    }
    if (path === "/healthz") {
      response.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    if (path === "/readyz") {
      probes.ready().then(
        (answer) => {
          const { ready, reason } = typeof answer === "boolean" ? { ready: answer, reason: undefined } : answer;
          if (ready || reason === undefined) {
            response.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ready\n" : "not ready\n");
          } else {
            // A reason may quote a controller's text, which is not always ASCII.
            response.writeHead(503, { "content-type": "text/plain; charset=utf-8" }).end(`not ready: ${oneLine(reason)}\n`);
          }
        },
        () => response.writeHead(503, { "content-type": "text/plain" }).end("not ready\n"),
      );
      return;
    }
    if (path === "/metrics" && probes.metrics !== undefined) {
      probes.metrics(request, response);
      return;
    }
    if (probes.fallback !== undefined) {
      probes.fallback(request, response);
      return;
    }
    response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  };
  const server = tls === undefined ? createServer(handle) : httpsServer(tls, handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => {
      // Closed, so that nothing it holds (the certificate files' watch) outlives the failed start.
      server.close();
      reject(new ShardlineError("unavailable", `cannot listen on ${hostPort} (--http): ${error.message}`, {}, { cause: error }));
    });
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  return { server, address: `${host.includes(":") ? `[${host}]` : host}:${bound.port}` };
}

/** An HTTPS server with `tls`'s certificate, following its renewals until the server closes. */
function httpsServer(tls: TlsCertificates, handle: RequestListener): Server {
  const identity = tls.identity;
  if (identity === undefined) throw new ShardlineError("internal", "an HTTPS port needs a certificate and key");
  const server = createHttpsServer({ cert: identity.certificate, key: identity.privateKey }, handle);
  const renewed = (update: { certificate: Buffer; privateKey: Buffer } | null): void => {
    // Only checked contents arrive here; null never does (TlsCertificates keeps the last good ones).
    if (update !== null) server.setSecureContext({ cert: update.certificate, key: update.privateKey });
  };
  tls.addIdentityCertificateListener(renewed);
  server.once("close", () => tls.removeIdentityCertificateListener(renewed));
  return server;
}

/** A reason on one line: a probe's body is read by people and by tools that split on lines. */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

/** Splits `host:port` (or `[v6]:port`), naming `field` when it is malformed. */
export function splitHostPort(value: string, field: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || !(port >= 0 && port <= 65535)) {
    throw ShardlineError.invalid(field, value, "HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:7071");
  }
  return { host: match[1] ?? match[2]!, port };
}
