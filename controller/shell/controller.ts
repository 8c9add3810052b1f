import type { Server as HttpServer } from "node:http";
import { type Server, status } from "@grpc/grpc-js";
import { Etcd3, type Namespace } from "etcd3";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentService, type ConnectRequestSchema, type ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { addService, type CallContext, createServer, toGrpcStatus, DEFAULT_MAX_RECEIVE_MESSAGE_BYTES, listen, type MessageStream, shutdown } from "../../shared/grpc/index.js";
import { createLogger, type Logger } from "../../shared/logging.js";
import { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import { registeredTracer } from "../../shared/telemetry/tracing.js";
import { VERSION } from "../../shared/version.js";
import { type CoreConfig, DEFAULT_CORE_CONFIG } from "../core/config.js";
import { NO_TRACING } from "../core/execution-tracing.js";
import { loadCustomStrategies, type StrategyModule } from "../core/sharding/custom-strategy.js";
import { EtcdLeadership, LEADER_KEY } from "../store/etcd/etcd-leadership.js";
import { EtcdStore } from "../store/etcd/etcd-store.js";
import { parseStoreUrl } from "../store/store-url.js";
import { SqliteStore } from "../store/sqlite/sqlite-store.js";
import type { RetentionPolicy, Store } from "../store/store.js";
import { DEFAULT_MAX_JOBS } from "./admin-service.js";
import { Authorization, authorizedAdmin } from "./authorization.js";
import { RateLimiter } from "../../shared/security/rate-limit.js";
import { TokenFile } from "../../shared/security/token-file.js";
import { TlsCertificates, type TlsFiles } from "../../shared/security/tls.js";
import { ControllerMetrics } from "./controller-metrics.js";
import type { FailureNotifierSettings } from "./failure-notifier.js";
import { type Leading, startLeading } from "./leading.js";
import { type ControllerStatus, follow, followingAdmin } from "./following.js";
import { FireTracing } from "./fire-tracing.js";
import { splitHostPort, startHttpServer } from "../../shared/http-server.js";

/** How to run a controller. */
export interface ControllerOptions {
  /** gRPC address for agents and admin clients; default 127.0.0.1:7070. */
  listen: string;
  /** HTTP address for /healthz, /readyz and /metrics; default 127.0.0.1:7071. */
  http: string;
  /** `sqlite:PATH` (default `sqlite:./shardline.db`), or `etcd://HOST:PORT[,...][/PREFIX]` for several replicas. */
  store: string;
  /**
   * With etcd: the gRPC address followers send agents and clients to while this controller leads.
   * Default: the address it listens on (set it when that is not reachable from them, e.g. 0.0.0.0).
   */
  advertise?: string;
  /** With etcd: the TTL of the leader's etcd lease, in whole seconds (at least 2; default 2). */
  leaderTtlSeconds?: number;
  heartbeatIntervalMs?: number;
  leaseTtlMs?: number;
  /** How long agents keep a run going after their lease lapsed, for jobs that do not say (default 15 s). */
  disconnectGraceMs?: number;
  logLevel?: string;
  /** Finished executions kept; default 1,000 per job and 7 days. */
  retention?: RetentionPolicy;
  /**
   * `--strategy NAME=MODULE`: user modules loaded and validated before anything starts, for jobs
   * with `spec.strategy: custom:NAME`. A module that fails validation fails the start.
   */
  strategies?: readonly StrategyModule[];
  logger?: Logger;
  /**
   * Make a `shardline.fire` span per fire and carry its context to the agents. Default: when a
   * tracer provider is registered (startTracing said `enabled`); without one, tracing costs nothing.
   */
  tracing?: boolean;
  /** How failure webhooks (spec.onFailure.webhook) are retried; tests shorten the waits. */
  failureWebhooks?: FailureNotifierSettings;
  /**
   * `--token-file`: the tokens callers must present (TOKEN,NAME,ROLE per line, see
   * shared/security/token-file.ts), read again when the file changes. With it, every admin call
   * needs a token whose role allows it, an agent's stream needs an `agent` token, and /metrics a
   * viewer's. Without it, nothing is checked.
   */
  tokenFile?: string;
  /**
   * `--tls-cert`, `--tls-key`, `--tls-ca`: with cert and key, the gRPC port and the HTTP port
   * serve TLS; with ca too, every gRPC client must present a certificate signed by it (mutual
   * TLS), while the HTTP port asks for none. The files are checked at start and read again every
   * `refreshIntervalMs` (`--tls-refresh-interval`, default 60 s): renewed certificates are used
   * for new connections without a restart. Without them, both ports are plaintext.
   */
  tls?: TlsFiles & { refreshIntervalMs?: number };
  /** Limits that keep one caller or a runaway fleet from exhausting the controller; see ControllerLimits. */
  limits?: Partial<ControllerLimits>;
}

/** The controller's limits, each refused with RESOURCE_EXHAUSTED and the flag that raises it. */
export interface ControllerLimits {
  /** Admin calls per second per caller (a token's holder, else an address), with bursts of twice that; 0 for none. */
  adminCallsPerSecond: number;
  /** Jobs the controller holds; applying one more is refused. */
  maxJobs: number;
  /** Agent streams open at once; one more is refused. */
  maxAgents: number;
}

export const DEFAULT_LIMITS: ControllerLimits = { adminCallsPerSecond: 200, maxJobs: DEFAULT_MAX_JOBS, maxAgents: 10_000 };

/** A controller that is serving. */
export interface RunningController {
  grpcAddress: string;
  httpAddress: string;
  /** The term this controller leads in; 0 while it follows (etcd) and has not been elected. */
  readonly term: number;
  /** Resolves with the term once this controller leads (at once on SQLite). */
  readonly elected: Promise<number>;
  /** Resolves once the controller has stopped serving and closed its store. */
  stop(): Promise<void>;
  /** Resolves when the controller stops for a reason of its own (a store failure, a lost leadership). */
  readonly failed: Promise<Error>;
}

/** Probes read the store with a point read of an id no execution has, which costs the same on every backend. */
const PROBE_EXECUTION_ID = "";

const RETENTION_DEFAULT: RetentionPolicy = { maxPerJob: 1000, maxAgeMs: 7 * 24 * 3600 * 1000 };
const DEFAULT_LEADER_TTL_SECONDS = 2;
/** The longest a single etcd request may take. */
const ETCD_CALL_DEADLINE_MS = 5_000;

type AgentStream = MessageStream<typeof ConnectRequestSchema, typeof ConnectResponseSchema>;


/**
 * Serves gRPC and HTTP, and leads: at once on SQLite; on etcd once elected, following the leader
 * meanwhile (agents get a Redirect, admin calls an UNAVAILABLE naming the leader).
 */
export async function startController(options: ControllerOptions): Promise<RunningController> {
  const logger = options.logger ?? createLogger({ name: "controller", level: options.logLevel });
  splitHostPort(options.listen, "--listen");
  if (options.advertise !== undefined) splitHostPort(options.advertise, "--advertise");
  const location = parseStoreUrl(options.store);
  const customStrategies = await loadCustomStrategies(options.strategies ?? []);
  const config: CoreConfig = {
    ...DEFAULT_CORE_CONFIG,
    customStrategies,
    ...(options.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: options.heartbeatIntervalMs }),
    ...(options.leaseTtlMs === undefined ? {} : { leaseTtlMs: options.leaseTtlMs }),
    ...(options.disconnectGraceMs === undefined ? {} : { disconnectGraceMs: options.disconnectGraceMs }),
  };
  const retention = options.retention ?? RETENTION_DEFAULT;
  const tokens =
    options.tokenFile === undefined
      ? undefined
      : new TokenFile(options.tokenFile, (error) => logger.error({ err: error }, "the token file changed but cannot be used; the tokens read before stay in force"));
  const authorization = new Authorization(tokens, logger);
  // Checked before anything listens: a bad file fails the start, naming its flag.
  const tls = TlsCertificates.forServer({
    ...options.tls,
    onReloadError: (error) => logger.error({ err: error }, "the TLS files changed but cannot be used"),
  });
  const limits: ControllerLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const adminLimiter =
    limits.adminCallsPerSecond > 0 ? new RateLimiter({ perSecond: limits.adminCallsPerSecond, burst: 2 * limits.adminCallsPerSecond }) : undefined;

  let failWith: (error: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => (failWith = resolve));
  let electedWith: (term: number) => void = () => {};
  const elected = new Promise<number>((resolve) => (electedWith = resolve));
  let leading: Leading | undefined;
  let leadership: EtcdLeadership | undefined;
  let etcd: Etcd3 | undefined;
  /** The store's namespace in etcd, once connected. */
  let etcdNamespace: Namespace | undefined;
  let grpcServer: Server | undefined;
  let httpServer: HttpServer | undefined;
  let stopping: Promise<void> | undefined;
  /** Set once it serves: a controller refused at start (a store another one holds) says nothing of stopping. */
  let served = false;
  /** The address this controller gives as the leader's while it leads (etcd). */
  let advertised: string | undefined;

  const metricsRegistry = new MetricsRegistry({ serviceName: "shardline-controller" });
  const metrics = new ControllerMetrics(metricsRegistry, { core: () => leading?.core, sessions: () => leading?.sessions });
  const tracing = (options.tracing ?? registeredTracer("shardline-controller") !== undefined) ? new FireTracing() : NO_TRACING;

  /** Ends everything because of `error`; `failed` resolves with it. */
  const fail = (error: Error): void => {
    void stop().then(() => failWith(error));
  };

  const lead = (store: Store): Promise<Leading> =>
    startLeading(store, {
      config,
      tracing,
      logger,
      metrics,
      leadership,
      failureWebhooks: options.failureWebhooks,
      customStrategies,
      maxJobs: limits.maxJobs,
      retention,
      onFatal: fail,
    });

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const wasLeading = leading;
      leading = undefined;
      wasLeading?.halt("the controller is shutting down");
      if (grpcServer !== undefined) await shutdown(grpcServer, 1000);
      if (httpServer !== undefined) await new Promise<void>((resolve) => httpServer!.close(() => resolve()));
      const handedOver = (await wasLeading?.close()) ?? true;
      // Once nothing more is written and the next leader knows how long this one's agent leases
      // still run: resigning lets another replica lead at once instead of after the lease's TTL.
      if (handedOver) await leadership?.close().catch((error: unknown) => logger.warn({ err: error }, "resigning the leadership failed"));
      else await leadership?.abandon();
      etcd?.close();
      await metricsRegistry.shutdown();
      if (served) logger.info("controller stopped");
    })();
    return stopping;
  };


  /** What the follower routing reads of this controller. */
  const routing: ControllerStatus = {
    leading: () => leading,
    stopping: () => stopping !== undefined,
    leadership: () => leadership,
    advertised: () => advertised,
    elected,
  };

  try {
    // An explicit bound on every request, agents' messages included: a larger one is refused
    // with RESOURCE_EXHAUSTED from its length prefix, before any of it is buffered.
    grpcServer = createServer({ maxReceiveMessageBytes: DEFAULT_MAX_RECEIVE_MESSAGE_BYTES });
    const onError = (error: unknown, method: string): void => logger.error({ err: error, method }, "internal error in a call");
    addService(
      grpcServer,
      AgentService,
      {
        connect: (stream: AgentStream, context: CallContext) => {
          try {
            // A verified client certificate is the agent's credential (its Hello must then name
            // one of the certificate's names); without mutual TLS, an agent token is.
            if (context.peerIdentities === undefined) authorization.checkCall(context.metadata, "agent", "AgentService.Connect", context.peer);
          } catch (error) {
            const { code, details } = toGrpcStatus(error);
            stream.close(code, details);
            return;
          }
          if (leading !== undefined && leading.sessions.size >= limits.maxAgents) {
            logger.warn({ peer: context.peer, maxAgents: limits.maxAgents }, "refused an agent stream: the controller serves its most");
            stream.close(status.RESOURCE_EXHAUSTED, `this controller serves at most ${limits.maxAgents} agent streams (--max-agents); retry later or raise it`);
            return;
          }
          if (leading !== undefined) leading.sessions.connect(stream, context);
          else follow(routing, stream, context);
        },
      },
      { onError },
    );
    addService(grpcServer, AdminService, authorizedAdmin(followingAdmin(routing), authorization, adminLimiter), { onError });
    const port = await listen(grpcServer, options.listen, tls?.serverCredentials());
    const host = splitHostPort(options.listen, "--listen").host;
    const grpcAddress = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    const http = await startHttpServer(options.http, {
      ready: async () => {
        if (stopping !== undefined) return false;
        const led = leading;
        if (led !== undefined) {
          await led.store.getExecution(PROBE_EXECUTION_ID);
          return leadership === undefined || leadership.isLeader();
        }
        // A follower is ready when etcd answers and names a leader it can send callers to: not
        // itself, which has won but does not serve yet.
        if (etcdNamespace === undefined) return false;
        const address = await etcdNamespace.get(LEADER_KEY).string();
        return address !== null && address !== advertised;
      },
      metrics: (request, response) => metricsRegistry.handle(request, response),
      // Probes stay open (the kubelet sends no token, and they tell nothing); metrics are a viewer's.
      authorize: (path, header, peer) => {
        if (path === "/metrics") authorization.check(header, "viewer", "GET /metrics", peer);
      },
    }, tls);
    httpServer = http.server;

    if (location.kind === "sqlite") {
      leading = await lead(new SqliteStore(location.path));
      electedWith(leading.core.term);
    } else {
      etcd = new Etcd3({
        hosts: location.endpoints.map((endpoint) => `http://${endpoint}`),
        dialTimeout: 5000,
        // A call to an etcd that hangs (paused, overloaded) fails in time instead of holding a
        // commit, and with it the controller's shutdown, forever. Watches and keepalives are streams.
        defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + ETCD_CALL_DEADLINE_MS }),
      });
      const ns = etcd.namespace(location.prefix);
      etcdNamespace = ns;
      advertised = options.advertise ?? grpcAddress;
      leadership = new EtcdLeadership(ns, {
        address: advertised,
        ttlSeconds: options.leaderTtlSeconds ?? DEFAULT_LEADER_TTL_SECONDS,
        logger,
      });
      await leadership.observe();
      leadership.onLeaderChange((leader) => {
        if (leader !== advertised) logger.info({ leader }, leader === undefined ? "no controller leads" : `the leader is ${leader}`);
      });
      leadership.onLost((reason) => fail(new ShardlineError("unavailable", `lost the leadership: ${reason}`)));
      const campaign = leadership;
      void (async () => {
        const term = await campaign.campaign();
        if (stopping !== undefined) return;
        const won = await lead(new EtcdStore(ns, term));
        if (stopping !== undefined) {
          // Stopped while it opened the store: nothing was sent; close it as stop() would have.
          won.halt("the controller is shutting down");
          await won.close();
          return;
        }
        leading = won;
        electedWith(term);
        logger.info({ term, grpc: grpcAddress }, `leading (term ${term})`);
      })().catch((error: unknown) => {
        if (stopping !== undefined) return;
        logger.fatal({ err: error }, "could not take the leadership");
        fail(error instanceof Error ? error : new Error(String(error)));
      });
    }
    served = true;
    logger.info(
      {
        grpc: grpcAddress,
        http: http.address,
        store: location.kind === "etcd" ? `etcd://${location.endpoints.join(",")}/${location.prefix}` : options.store,
        term: leading?.core.term ?? 0,
        version: VERSION,
        strategies: [...customStrategies.keys()],
        tls: tls === undefined ? "off" : tls.verifiesPeers ? "mutual" : "server",
      },
      leading === undefined
        ? `controller serving on ${grpcAddress}, following until elected (leader: ${leadership?.leader ?? "none yet"})`
        : `controller serving on ${grpcAddress} (term ${leading.core.term})`,
    );
    return {
      grpcAddress,
      httpAddress: http.address,
      get term() {
        return leading?.core.term ?? 0;
      },
      elected,
      stop,
      failed,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
