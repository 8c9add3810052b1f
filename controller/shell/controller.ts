import { splitHostPort } from "../../shared/http-server.js";
import { createLogger } from "../../shared/logging.js";
import { RateLimiter } from "../../shared/security/rate-limit.js";
import { TlsCertificates } from "../../shared/security/tls.js";
import { TokenFile } from "../../shared/security/token-file.js";
import { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import { registeredTracer } from "../../shared/telemetry/tracing.js";
import { VERSION } from "../../shared/version.js";
import { type CoreConfig, DEFAULT_CORE_CONFIG } from "../core/config.js";
import { NO_TRACING } from "../core/execution-tracing.js";
import { loadCustomStrategies } from "../core/sharding/custom-strategy.js";
import { parseStoreUrl } from "../store/store-url.js";
import { Authorization } from "./authorization.js";
import { type ControllerLimits, type ControllerOptions, DEFAULT_LEADER_TTL_SECONDS, DEFAULT_LIMITS, DEFAULT_RETENTION } from "./controller-options.js";
import { ControllerMetrics } from "./controller-metrics.js";
import { FireTracing } from "./fire-tracing.js";
import type { KubeJobsOptions } from "./kube-jobs.js";
import { DriverPart } from "./leading.js";
import { EtcdElection, type Leadership, SingleWriter } from "./leadership.js";
import { Servers } from "./servers.js";
import { EtcdConnection, storeConnection } from "./store-connection.js";
import { type Part, Supervisor } from "./supervisor.js";

export { type ControllerLimits, type ControllerOptions, DEFAULT_LIMITS } from "./controller-options.js";

/** A controller that is serving. */
export interface RunningController {
  grpcAddress: string;
  httpAddress: string;
  /** The term this controller leads in; 0 while it follows (etcd) and has not been elected. */
  readonly term: number;
  /** Resolves with the term once this controller leads (at once on SQLite). */
  readonly elected: Promise<number>;
  /**
   * Resolves once the controller has stopped serving and closed its store; every call answers the
   * same. Rejects with a PartError naming a part that failed to stop or overran its bound (the
   * others are stopped all the same).
   */
  stop(): Promise<void>;
  /** Resolves when the controller stops for a reason of its own (a store failure, a lost leadership). */
  readonly failed: Promise<Error>;
}

/** The API server access --jobs-from kubernetes needs, from its kubeconfig (or the pod's service account). */
async function kubeJobsOptions(jobsFrom: NonNullable<ControllerOptions["jobsFrom"]>): Promise<KubeJobsOptions> {
  const { connectKubernetes } = await import("../../agent/executors/kubernetes/kube-config.js");
  const access = await connectKubernetes({ ...(jobsFrom.kubeconfig === undefined ? {} : { kubeconfig: jobsFrom.kubeconfig }), ...(jobsFrom.context === undefined ? {} : { context: jobsFrom.context }) });
  return {
    client: access.client,
    namespaces: jobsFrom.namespaces,
    ...(jobsFrom.statusEveryMs === undefined ? {} : { statusEveryMs: jobsFrom.statusEveryMs }),
    ...(jobsFrom.timesEveryMs === undefined ? {} : { timesEveryMs: jobsFrom.timesEveryMs }),
  };
}

/** Probes read the store with a point read of an id no execution has, which costs the same on every backend. */
const PROBE_EXECUTION_ID = "";

/**
 * Serves gRPC and HTTP, and leads: at once on SQLite; on etcd once elected, following the leader
 * meanwhile (agents get a Redirect, admin calls an UNAVAILABLE naming the leader).
 *
 * The controller is five parts run by a Supervisor, started in this order and stopped in reverse
 * (halted first, newest first, then stopped): metrics, servers, store, leadership, driver.
 * Everything that can be checked before any of them starts (addresses, the store URL, custom
 * strategies, the token and TLS files) is checked here first, so that a bad flag fails the start
 * before anything listens.
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
  const tokens =
    options.tokenFile === undefined
      ? undefined
      : new TokenFile(options.tokenFile, (error) => logger.error({ err: error }, "the token file changed but cannot be used; the tokens read before stay in force"));
  const authorization = new Authorization(tokens, logger);
  const tls = TlsCertificates.forServer({
    ...options.tls,
    onReloadError: (error) => logger.error({ err: error }, "the TLS files changed but cannot be used"),
  });
  const limits: ControllerLimits = { ...DEFAULT_LIMITS, ...options.limits };
  // Checked before anything starts: a controller told to follow the API server that cannot reach its configuration fails at once.
  const kubeJobs = options.jobsFrom === undefined ? undefined : await kubeJobsOptions(options.jobsFrom);
  const adminLimiter =
    limits.adminCallsPerSecond > 0 ? new RateLimiter({ perSecond: limits.adminCallsPerSecond, burst: 2 * limits.adminCallsPerSecond }) : undefined;

  let failWith: (error: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => (failWith = resolve));
  /** Ends everything because of `error`; `failed` resolves with it (a stop that fails as well rejects stop()). */
  const fail = (error: Error): void => {
    const settle = (): void => failWith(error);
    void stop().then(settle, settle);
  };

  const metricsRegistry = new MetricsRegistry({ serviceName: "shardline-controller" });
  const metrics: ControllerMetrics = new ControllerMetrics(metricsRegistry, { core: () => driver.leading?.core, sessions: () => driver.leading?.sessions });
  const tracing = (options.tracing ?? registeredTracer("shardline-controller") !== undefined) ? new FireTracing() : NO_TRACING;

  const store = storeConnection(location);
  const leadership: Leadership =
    store instanceof EtcdConnection
      ? new EtcdElection({
          store,
          advertise: options.advertise,
          grpcAddress: () => servers.grpcAddress,
          ttlSeconds: options.leaderTtlSeconds ?? DEFAULT_LEADER_TTL_SECONDS,
          stopping: () => supervisor.stopping,
          handedOver: () => driver.handedOver,
          onFatal: fail,
          logger,
        })
      : new SingleWriter();
  const driver: DriverPart = new DriverPart({
    store,
    leadership,
    config,
    tracing,
    logger,
    metrics,
    failureWebhooks: options.failureWebhooks,
    customStrategies,
    maxJobs: limits.maxJobs,
    retention: options.retention ?? DEFAULT_RETENTION,
    onFatal: fail,
    address: () => leadership.advertised ?? servers.grpcAddress,
    traceUrlTemplate: options.traceUrlTemplate ?? "",
    ...(kubeJobs === undefined ? {} : { kubeJobs }),
  });
  const servers: Servers = new Servers({
    listen: options.listen,
    http: options.http,
    tls,
    authorization,
    adminLimiter,
    maxAgents: limits.maxAgents,
    routing: {
      leading: () => driver.leading,
      stopping: (): boolean => supervisor.stopping,
      leadership: () => leadership.election,
      advertised: () => leadership.advertised,
      elected: driver.elected,
    },
    ready: async () => {
      if (supervisor.stopping) return false;
      const led = driver.leading;
      if (led !== undefined) await led.store.getExecution(PROBE_EXECUTION_ID);
      return leadership.ready(led !== undefined);
    },
    metrics: metricsRegistry,
    logger,
  });
  // First, so it is shut down last: the servers answer /metrics from it until they halt.
  const telemetry: Part = { name: "metrics", start: async () => {}, stop: () => metricsRegistry.shutdown() };
  const supervisor: Supervisor = new Supervisor([telemetry, servers, store, leadership, driver]);

  /** Set once it serves: a controller refused at start (a store another one holds) says nothing of stopping. */
  let served = false;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= supervisor.stop().then(() => {
      if (served) logger.info("controller stopped");
    }));

  await supervisor.start();
  served = true;
  const grpcAddress = servers.grpcAddress;
  const term = driver.leading?.core.term;
  logger.info(
    {
      grpc: grpcAddress,
      http: servers.httpAddress,
      store: store.description,
      term: term ?? 0,
      version: VERSION,
      strategies: [...customStrategies.keys()],
      tls: tls === undefined ? "off" : tls.verifiesPeers ? "mutual" : "server",
    },
    term === undefined
      ? `controller serving on ${grpcAddress}, following until elected (leader: ${leadership.election?.leader ?? "none yet"})`
      : `controller serving on ${grpcAddress} (term ${term})`,
  );
  return {
    grpcAddress,
    httpAddress: servers.httpAddress,
    get term() {
      return driver.leading?.core.term ?? 0;
    },
    elected: driver.elected,
    stop,
    failed,
  };
}
