import type { Server } from "node:http";
import { startHttpServer, type Readiness } from "../../shared/http-server.js";
import type { TlsCertificates } from "../../shared/security/tls.js";
import type { MetricsRegistry } from "../../shared/telemetry/metrics.js";

/** An agent's HTTP port, listening. */
export interface AgentHttpServer {
  /** Where it listens, HOST:PORT (the port chosen when 0 was asked for). */
  readonly address: string;
  /** Stops listening and closes its connections. */
  close(): Promise<void>;
}

/**
 * Serves an agent's `/healthz` (the process answers), `/readyz` (200 while `agent.ready`: welcomed
 * by a controller and holding a valid lease; else 503, with the reason when the agent gives its
 * `readiness`, e.g. "not ready: cannot reach the controller at 10.0.0.5:7070: connection refused
 * ...") and, given its MetricsRegistry,
 * `/metrics` in the Prometheus text format, on `hostPort` (`HOST:PORT`, port 0 for any free
 * one). Fails with a ShardlineError naming --http when the address is malformed or taken. With
 * `tls` (the agent's own certificate and key), it serves HTTPS.
 */
export async function startAgentHttpServer(
  hostPort: string,
  agent: { readonly ready: boolean; readonly readiness?: Readiness },
  metrics?: MetricsRegistry,
  tls?: TlsCertificates,
): Promise<AgentHttpServer> {
  // The controller's HTTP port answers the same three paths; the agent's only differs in what ready means.
  const { server, address } = await startHttpServer(hostPort, {
    ready: () => Promise.resolve(agent.readiness ?? agent.ready),
    ...(metrics === undefined ? {} : { metrics: (request, response) => metrics.handle(request, response) }),
  }, tls);
  return { address, close: () => closeServer(server) };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((error) => (error ? reject(error) : resolve()));
    // Keep-alive connections of past scrapes would hold close() open until they time out.
    server.closeAllConnections();
  });
}
