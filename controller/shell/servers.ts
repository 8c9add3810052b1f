import { setMaxListeners } from "node:events";
import type { Server as HttpServer } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Server, status } from "@grpc/grpc-js";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentService, type ConnectRequestSchema, type ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import {
  addService,
  type CallContext,
  createServer,
  DEFAULT_MAX_CONCURRENT_CALLS,
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  listen,
  type MessageStream,
  shutdown,
  toGrpcStatus,
} from "../../shared/grpc/index.js";
import { splitHostPort, startHttpServer } from "../../shared/http-server.js";
import type { Logger } from "../../shared/logging.js";
import type { RateLimiter } from "../../shared/security/rate-limit.js";
import type { TlsCertificates } from "../../shared/security/tls.js";
import type { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import { type Authorization, authorizedAdmin } from "./authorization.js";
import { auditedAdmin } from "./audit-trail.js";
import { ADMIN_ROUTE_PREFIX, AdminCallLimit, adminConnectRoutes } from "./connect-routes.js";
import { consoleAssets } from "./console-assets.js";
import { type ControllerStatus, follow, followingAdmin } from "./following.js";
import type { Part } from "./supervisor.js";

type AgentStream = MessageStream<typeof ConnectRequestSchema, typeof ConnectResponseSchema>;

/** How long calls under way may take to finish once the servers halt; then they are cut. */
const GRPC_SHUTDOWN_GRACE_MS = 1000;

/** What the servers serve, and whom they let in. */
export interface ServersOptions {
  /** `--listen`: the gRPC address for agents and admin clients. */
  listen: string;
  /** `--http`: the address of /healthz, /readyz, /metrics, the AdminService over Connect (HTTP/JSON) and the web console. */
  http: string;
  /** Both ports serve TLS with it; without it, plaintext. */
  tls: TlsCertificates | undefined;
  authorization: Authorization;
  /** Admin calls per second per caller; undefined for no limit. */
  adminLimiter: RateLimiter | undefined;
  /** `--max-agents`: agent streams served at once. */
  maxAgents: number;
  /** Where calls go: the leader's sessions and admin service, or the follower's answers. */
  routing: ControllerStatus;
  /** What /readyz says. */
  ready(): Promise<boolean>;
  metrics: MetricsRegistry;
  logger: Logger;
  /** The built web console served at `/` (index.html and assets/); default: the package's dist/console/. */
  consoleDir?: string;
}

/**
 * The servers part: the gRPC port (the agents' stream and the admin service, routed to the
 * leader's implementations while this controller leads, to the follower's answers otherwise) and
 * the HTTP port (probes, metrics, the same AdminService over the Connect protocol: see
 * connect-routes.ts, and the web console: see console-assets.ts). Halting stops both taking
 * calls; those under way get GRPC_SHUTDOWN_GRACE_MS, which is why the driver halts first: the
 * agents' streams, which never end on their own, are closed with a reason by then.
 */
export class Servers implements Part {
  readonly name = "servers";
  readonly #options: ServersOptions;
  #grpc: Server | undefined;
  #http: HttpServer | undefined;
  /** Aborted on halting: ends the HTTP port's watches (WatchEvents over Connect). */
  readonly #httpShutdown = new AbortController();
  #grpcAddress: string | undefined;
  #httpAddress: string | undefined;

  constructor(options: ServersOptions) {
    this.#options = options;
    // Each HTTP call under way listens to it (Connect links its context to it, and lets go when it ends).
    setMaxListeners(0, this.#httpShutdown.signal);
  }

  /** The gRPC address it listens on, the port resolved (with `:0`); once started. */
  get grpcAddress(): string {
    return started(this.#grpcAddress);
  }

  /** The HTTP address it listens on; once started. */
  get httpAddress(): string {
    return started(this.#httpAddress);
  }

  async start(): Promise<void> {
    try {
      await this.#listen();
    } catch (error) {
      await this.halt();
      throw error;
    }
  }

  async #listen(): Promise<void> {
    const { authorization, adminLimiter, routing, logger, tls } = this.#options;
    // An explicit bound on every request, agents' messages included: a larger one is refused
    // with RESOURCE_EXHAUSTED from its length prefix, before any of it is buffered.
    const grpc = createServer({ maxReceiveMessageBytes: DEFAULT_MAX_RECEIVE_MESSAGE_BYTES });
    this.#grpc = grpc;
    const onError = (error: unknown, method: string): void => logger.error({ err: error, method }, "internal error in a call");
    addService(grpc, AgentService, { connect: (stream: AgentStream, context: CallContext) => this.#connect(stream, context) }, { onError });
    // One AdminService for both ports: the HTTP port's Connect routes call this very object, and
    // its calls at once count against the same limit as the gRPC port's.
    // Outermost, the audit trail: it sees every call's outcome, refusals included.
    const admin = auditedAdmin(authorizedAdmin(followingAdmin(routing), authorization, adminLimiter), {
      authorization,
      trail: () => routing.leading()?.audit,
      logger,
    });
    const callLimit = new AdminCallLimit(DEFAULT_MAX_CONCURRENT_CALLS);
    addService(grpc, AdminService, callLimit.counting(admin), { onError, maxConcurrentCalls: DEFAULT_MAX_CONCURRENT_CALLS });
    const port = await listen(grpc, this.#options.listen, tls?.serverCredentials());
    const host = splitHostPort(this.#options.listen, "--listen").host;
    this.#grpcAddress = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    const http = await startHttpServer(
      this.#options.http,
      {
        ready: this.#options.ready,
        metrics: (request, response) => this.#options.metrics.handle(request, response),
        // Probes stay open (the kubelet sends no token, and they tell nothing); metrics are a viewer's.
        authorize: (path, header, peer) => {
          if (path === "/metrics") authorization.check(header, "viewer", "GET /metrics", peer);
        },
        routes: [
          {
            prefix: ADMIN_ROUTE_PREFIX,
            handle: adminConnectRoutes({
              admin: tls?.verifiesPeers === true && !authorization.enabled ? refusingAdmin() : admin,
              limit: callLimit,
              maxReceiveMessageBytes: DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
              shutdownSignal: this.#httpShutdown.signal,
              onError,
            }),
          },
        ],
        // The web console's page and assets: open to all, like the probes (they hold no data; the
        // page asks for a token before it calls the admin API).
        fallback: consoleAssets(this.#options.consoleDir === undefined ? {} : { dir: this.#options.consoleDir }),
      },
      tls,
    );
    this.#http = http.server;
    this.#httpAddress = http.address;
  }

  #connect(stream: AgentStream, context: CallContext): void {
    const { authorization, routing, maxAgents, logger } = this.#options;
    try {
      // A verified client certificate is the agent's credential (its Hello must then name
      // one of the certificate's names); without mutual TLS, an agent token is.
      if (context.peerIdentities === undefined) authorization.checkCall(context.metadata, "agent", "AgentService.Connect", context.peer);
    } catch (error) {
      const { code, details } = toGrpcStatus(error);
      stream.close(code, details);
      return;
    }
    const leading = routing.leading();
    if (leading !== undefined && leading.sessions.size >= maxAgents) {
      logger.warn({ peer: context.peer, maxAgents }, "refused an agent stream: the controller serves its most");
      stream.close(status.RESOURCE_EXHAUSTED, `this controller serves at most ${maxAgents} agent streams (--max-agents); retry later or raise it`);
      return;
    }
    if (leading !== undefined) leading.sessions.connect(stream, context);
    else follow(routing, stream, context);
  }

  /** Stops both ports taking calls; resolves once the gRPC calls under way ended (or were cut) and the HTTP port closed. */
  async halt(): Promise<void> {
    const grpc = this.#grpc;
    const http = this.#http;
    this.#grpc = undefined;
    this.#http = undefined;
    this.#httpShutdown.abort(new ConnectError("the controller is shutting down", Code.Unavailable));
    if (grpc !== undefined) await shutdown(grpc, GRPC_SHUTDOWN_GRACE_MS);
    if (http !== undefined) {
      // Calls under way over HTTP get the same grace; then their connections are cut.
      const cut = setTimeout(() => http.closeAllConnections(), GRPC_SHUTDOWN_GRACE_MS);
      await new Promise<void>((resolve) => http.close(() => resolve()));
      clearTimeout(cut);
    }
  }

  /** Nothing is left once halted. */
  async stop(): Promise<void> {}
}

/**
 * The admin service the HTTP port serves when the controller admits admin callers by client
 * certificate alone (mutual TLS, no token file): every call refused. The HTTP port asks for no
 * client certificate, so serving the service there would let anyone who reaches it in.
 */
function refusingAdmin(): Record<string, unknown> {
  const refusal = new ShardlineError(
    "unauthenticated",
    "the admin API over HTTP needs tokens (--token-file): this controller admits admin callers by client certificate (--tls-ca), which its HTTP port does not ask for; call its gRPC port",
  );
  return Object.fromEntries(
    AdminService.methods.map((method) => [
      method.localName,
      async () => {
        throw refusal;
      },
    ]),
  );
}

function started(address: string | undefined): string {
  if (address === undefined) throw new ShardlineError("internal", "the servers have not started");
  return address;
}
