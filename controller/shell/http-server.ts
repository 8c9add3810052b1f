import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ShardlineError } from "../../shared/errors.js";

/** What the HTTP endpoints report on. */
export interface HttpProbes {
  /** True while the store answers and the controller runs. */
  ready(): Promise<boolean>;
}

/**
 * The controller's HTTP port: `/healthz` says the process serves requests, `/readyz` that it can
 * do its job (the store answers). Metrics and the web page are served here too once they exist.
 */
export async function startHttpServer(hostPort: string, probes: HttpProbes): Promise<{ server: Server; address: string }> {
  const { host, port } = splitHostPort(hostPort, "--http");
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      response.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    if (path === "/readyz") {
      probes.ready().then(
        (ready) => response.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ready\n" : "not ready\n"),
        () => response.writeHead(503, { "content-type": "text/plain" }).end("not ready\n"),
      );
      return;
    }
    response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) =>
      reject(new ShardlineError("unavailable", `cannot listen on ${hostPort} (--http): ${error.message}`, {}, { cause: error })),
    );
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  return { server, address: `${host.includes(":") ? `[${host}]` : host}:${bound.port}` };
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
