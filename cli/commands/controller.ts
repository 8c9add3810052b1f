import { hostname } from "node:os";
import type { Command } from "commander";
import { parseStrategyFlag } from "../../controller/core/sharding/custom-strategy.js";
import type { ControllerOptions as ControllerModuleOptions } from "../../controller/shell/controller.js";
import { ShardlineError } from "../../shared/errors.js";
import type { startTracing as StartTracing } from "../../shared/telemetry/tracing.js";
import { DEFAULT_CONTROLLER_ADDRESS, DEFAULT_HTTP_ADDRESS, parseHostPort } from "../controller-address.js";
import type { CliIo } from "../output.js";
import { importPart, nextSignal } from "./lifecycle.js";
import { parseInteger, parseSeconds, parseStore, parseTraceUrlTemplate } from "./options.js";
import { checkPlaintextListen } from "../../shared/security/listen-policy.js";
import { tlsFiles } from "./admin.js";

/** What the CLI passes to startController: its options less what only code (tests) sets. */
export type ControllerStartOptions = Omit<ControllerModuleOptions, "logger" | "failureWebhooks">;

/** A started controller, as startController resolves it. */
export interface RunningController {
  grpcAddress: string;
  httpAddress: string;
  stop(): Promise<void>;
  /** Resolves when the controller stopped for a reason of its own (a store failure, a lost leadership). */
  readonly failed: Promise<Error>;
}

/** controller/shell/controller.ts's entry point. */
export type StartController = (options: ControllerStartOptions) => Promise<RunningController>;

/** The flags of `shardline controller`, parsed. */
export interface ControllerOptions {
  listen: string;
  http: string;
  store: string;
  heartbeatInterval?: number;
  leaseTtl?: number;
  disconnectGrace?: number;
  advertise?: string;
  leaderTtl?: number;
  historyPerJob: number;
  historyDays: number;
  revisionHistory: number;
  auditRetentionDays: number;
  auditMaxRecords: number;
  strategy?: { name: string; modulePath: string }[];
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsRefreshInterval?: number;
  insecure?: boolean;
  adminRateLimit?: number;
  maxJobs?: number;
  maxAgents?: number;
  traceUrlTemplate?: string;
  jobsFrom?: "kubernetes";
  jobsNamespace?: string[];
  kubeconfig?: string;
}

export const DEFAULT_STORE = "sqlite:./shardline.db";
/** The lease defaults the controller applies when the flags are absent (docs/protocol.md, "Heartbeats and the lease"). */
const DEFAULT_HEARTBEAT_INTERVAL_MS = 500;
const DEFAULT_LEASE_TTL_MS = 2_000;

export function registerController(program: Command, io: CliIo): void {
  program
    .command("controller")
    .summary("run the controller")
    .description(
      [
        "Run the controller: the AdminService and AgentService on --listen, health, readiness and metrics on --http. Stops cleanly on SIGTERM or SIGINT.",
        "Traces: configured by the standard OTEL_* variables, off unless OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT); " +
          "each fire gets a span, the parent of its executions' spans on the agents.",
      ].join("\n\n"),
    )
    .option("--listen <HOST:PORT>", "gRPC address to listen on (port 0: any free port)", (value: string) => parseHostPort(value, "--listen", { listen: true }), DEFAULT_CONTROLLER_ADDRESS)
    .option("--http <HOST:PORT>", "HTTP address for /healthz, /readyz, /metrics and the web page", (value: string) => parseHostPort(value, "--http", { listen: true }), DEFAULT_HTTP_ADDRESS)
    .option("--store <STORE>", "sqlite:PATH, or etcd://HOST:PORT[,HOST:PORT...][/PREFIX] for several replicas with one leader", parseStore, DEFAULT_STORE)
    .option("--advertise <HOST:PORT>", "with etcd: the gRPC address other replicas send agents and clients to while this one leads (default: the --listen address)", (value: string) =>
      parseHostPort(value, "--advertise"),
    )
    .option("--leader-ttl <SECONDS>", "with etcd: TTL of the leader's etcd lease; a dead leader is replaced after at most this long (default: 2)", (value: string) =>
      parseInteger(value, "--leader-ttl", 2, 60),
    )
    .option("--heartbeat-interval <MS>", `how often agents heartbeat, in ms (default: ${DEFAULT_HEARTBEAT_INTERVAL_MS})`, (value: string) =>
      parseInteger(value, "--heartbeat-interval", 10, 60_000),
    )
    .option("--history-per-job <N>", "finished executions kept per job", (value: string) => parseInteger(value, "--history-per-job", 1, 10_000_000), 1000)
    .option("--history-days <DAYS>", "finished executions older than this are deleted", (value: string) => parseSeconds(value, "--history-days", 0.001, 3650), 7)
    .option(
      "--revision-history <N>",
      "revisions kept per job, newest first, for rollout history and undo; the current one, a rollout's stable one and those still running are kept beyond it",
      (value: string) => parseInteger(value, "--revision-history", 1, 1000),
      10,
    )
    .option("--audit-retention-days <DAYS>", "audit records (every mutating admin call, every refused one) older than this are deleted", (value: string) =>
      parseSeconds(value, "--audit-retention-days", 0.001, 36500),
    90)
    .option("--audit-max-records <N>", "audit records kept at most, the oldest deleted first", (value: string) => parseInteger(value, "--audit-max-records", 1, 100_000_000), 100_000)
    .option("--lease-ttl <MS>", `how long an agent's lease lasts after an ack, in ms; more than the heartbeat interval (default: ${DEFAULT_LEASE_TTL_MS})`, (value: string) =>
      parseInteger(value, "--lease-ttl", 20, 600_000),
    )
    .option(
      "--disconnect-grace <SECONDS>",
      "how long a running execution goes on when its agent loses touch with every controller, before the agent aborts it and the fire runs elsewhere, " +
        "for jobs without spec.disconnectGraceSeconds; 0: abort when the lease lapses (default: 15)",
      (value: string) => parseSeconds(value, "--disconnect-grace", 0, 86_400),
    )
    .option(
      "--strategy <NAME=MODULE>",
      "load a custom sharding strategy from an ES module (its default export), for jobs with spec.strategy: custom:NAME; repeatable",
      collectStrategy,
    )
    .option("--admin-rate-limit <N>", "admin calls per second per caller (a token's holder, else an address), in bursts of up to 2N; 0: no limit (default: 200)", (value: string) =>
      parseInteger(value, "--admin-rate-limit", 0, 1_000_000),
    )
    .option("--max-jobs <N>", "jobs held at most; applying one more is refused (default: 10000)", (value: string) => parseInteger(value, "--max-jobs", 1, 1_000_000))
    .option("--max-agents <N>", "agent streams open at once; one more is refused (default: 10000)", (value: string) => parseInteger(value, "--max-agents", 1, 1_000_000))
    .option(
      "--token-file <PATH>",
      "callers must present a token of this file (TOKEN,NAME,ROLE per line; roles viewer, operator, admin, agent), read again when it changes; see docs/security.md",
    )
    .option("--tls-cert <FILE>", "serve TLS on the gRPC and HTTP ports with this certificate (PEM, leaf first); needs --tls-key; see docs/security.md")
    .option("--tls-key <FILE>", "the private key of --tls-cert (PEM)")
    .option(
      "--tls-ca <FILE>",
      "mutual TLS: every gRPC client (agents, the CLI) must present a certificate signed by this CA (PEM); the HTTP port asks for none; needs --tls-cert and --tls-key",
    )
    .option("--insecure", "serve plaintext on --listen and --http addresses other machines can reach (a service mesh that encrypts, a private network); without it, such an address needs --tls-cert")
    .option("--jobs-from <SOURCE>", "kubernetes: also follow ShardedJob objects of the API server (apply, change, delete with kubectl or GitOps; status written back); see docs/kubernetes.md", (value: string) => {
      if (value !== "kubernetes") throw ShardlineError.invalid("--jobs-from", value, "kubernetes");
      return value;
    })
    .option("--jobs-namespace <NAMESPACE>", "with --jobs-from kubernetes: a namespace whose ShardedJobs are followed; repeatable (default: every namespace)", (value: string, previous: string[] = []) => [...previous, value])
    .option("--kubeconfig <FILE>", "with --jobs-from kubernetes: the kubeconfig to reach the API server with (default: $KUBECONFIG, else the pod's service account)")
    .option(
      "--trace-url-template <URL>",
      "a link to a trace in your tracing UI, {traceId} standing for an execution's trace id (e.g. http://jaeger:16686/trace/{traceId}); the web console links each execution to it",
      parseTraceUrlTemplate,
    )
    .option("--tls-refresh-interval <SECONDS>", "how often the TLS files are read again, so that renewed ones are used without a restart (default: 60)", (value: string) =>
      parseSeconds(value, "--tls-refresh-interval", 0.1, 86_400),
    )
    .action(async (options: ControllerOptions, command: Command) => {
      const start = async (startOptions: ControllerStartOptions): Promise<RunningController> => {
        const module = await importPart<{ startController: StartController }>(new URL("../../controller/shell/controller.js", import.meta.url), "the controller");
        return module.startController(startOptions);
      };
      const startOptions = controllerStartOptions(options, command.optsWithGlobals<{ logLevel?: string }>().logLevel);
      // Loaded here rather than at the top: every other command would pay for OpenTelemetry's modules.
      const { startTracing } = await importPart<{ startTracing: typeof StartTracing }>(new URL("../../shared/telemetry/tracing.js", import.meta.url), "tracing");
      const tracing = await startTracing({ serviceName: "shardline-controller", serviceInstanceId: controllerInstanceId(startOptions), env: io.env });
      try {
        await runController({ ...startOptions, tracing: tracing.enabled }, io, start);
      } finally {
        // Exports the spans still buffered, also when the controller stopped on a failure.
        await tracing.shutdown();
      }
    });
}

/** The controller's options from the flags; rejects a lease no longer than the heartbeat interval. */
export function controllerStartOptions(options: ControllerOptions, logLevel: string | undefined): ControllerStartOptions {
  const heartbeat = options.heartbeatInterval ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
  const lease = options.leaseTtl ?? DEFAULT_LEASE_TTL_MS;
  // An agent whose lease lapses between two heartbeats would fence itself while healthy.
  if (lease <= heartbeat) {
    throw new ShardlineError(
      "invalid-argument",
      `--lease-ttl ${lease} is not more than --heartbeat-interval ${heartbeat}; expected a lease longer than the heartbeat interval, ideally 3 or 4 times it`,
      { field: "--lease-ttl", value: String(lease) },
    );
  }
  const tls = options.tlsCert !== undefined;
  checkPlaintextListen("--listen", options.listen, tls, options.insecure === true);
  checkPlaintextListen("--http", options.http, tls, options.insecure === true);
  return {
    listen: options.listen,
    http: options.http,
    store: options.store,
    ...(options.advertise === undefined ? {} : { advertise: options.advertise }),
    ...(options.leaderTtl === undefined ? {} : { leaderTtlSeconds: options.leaderTtl }),
    ...(options.heartbeatInterval === undefined ? {} : { heartbeatIntervalMs: options.heartbeatInterval }),
    ...(options.leaseTtl === undefined ? {} : { leaseTtlMs: options.leaseTtl }),
    ...(options.disconnectGrace === undefined ? {} : { disconnectGraceMs: Math.round(options.disconnectGrace * 1000) }),
    ...(logLevel === undefined ? {} : { logLevel }),
    retention: {
      maxPerJob: options.historyPerJob,
      maxAgeMs: Math.round(options.historyDays * 86_400_000),
      revisionsPerJob: options.revisionHistory,
      audit: { maxAgeMs: Math.round(options.auditRetentionDays * 86_400_000), maxRecords: options.auditMaxRecords },
    },
    ...(options.strategy === undefined ? {} : { strategies: options.strategy }),
    ...(options.tokenFile === undefined ? {} : { tokenFile: options.tokenFile }),
    ...(options.traceUrlTemplate === undefined ? {} : { traceUrlTemplate: options.traceUrlTemplate }),
    ...jobsFromOptions(options),
    ...limitOptions(options),
    ...tlsOptions(options),
  };
}

/** --jobs-from, --jobs-namespace and --kubeconfig; the latter two need the first. */
function jobsFromOptions(options: ControllerOptions): Pick<ControllerStartOptions, "jobsFrom"> {
  if (options.jobsFrom === undefined) {
    const stray = options.jobsNamespace !== undefined ? "--jobs-namespace" : options.kubeconfig !== undefined ? "--kubeconfig" : undefined;
    if (stray !== undefined) throw new ShardlineError("invalid-argument", `${stray} applies with --jobs-from kubernetes only; add it, or leave ${stray} out`, { field: stray });
    return {};
  }
  return { jobsFrom: { kind: "kubernetes", namespaces: options.jobsNamespace ?? [], ...(options.kubeconfig === undefined ? {} : { kubeconfig: options.kubeconfig }) } };
}

/** --tls-cert, --tls-key, --tls-ca and --tls-refresh-interval (checked by the controller before it listens). */
function tlsOptions(options: ControllerOptions): Pick<ControllerStartOptions, "tls"> {
  const tls = tlsFiles(options);
  return tls === undefined ? {} : { tls };
}

/** --admin-rate-limit, --max-jobs and --max-agents, as the controller's limits (absent: its defaults). */
function limitOptions(options: ControllerOptions): Pick<ControllerStartOptions, "limits"> {
  const limits = {
    ...(options.adminRateLimit === undefined ? {} : { adminCallsPerSecond: options.adminRateLimit }),
    ...(options.maxJobs === undefined ? {} : { maxJobs: options.maxJobs }),
    ...(options.maxAgents === undefined ? {} : { maxAgents: options.maxAgents }),
  };
  return Object.keys(limits).length === 0 ? {} : { limits };
}

/**
 * The controller's service.instance.id in traces: the address it advertises to other replicas,
 * else this host and the port it listens on.
 */
export function controllerInstanceId(options: Pick<ControllerStartOptions, "advertise" | "listen">): string {
  return options.advertise ?? `${hostname()}:${options.listen.slice(options.listen.lastIndexOf(":") + 1)}`;
}

/** One `--strategy NAME=MODULE`, added to the earlier ones (a repeated NAME is an error). */
export function collectStrategy(value: string, previous: { name: string; modulePath: string }[] = []): { name: string; modulePath: string }[] {
  const strategy = parseStrategyFlag(value);
  if (previous.some((earlier) => earlier.name === strategy.name)) {
    throw ShardlineError.invalid("--strategy", value, `each NAME once; "${strategy.name}" was already given`);
  }
  return [...previous, strategy];
}

/** Starts the controller, prints where it listens, and stops it on the first SIGINT or SIGTERM. */
export async function runController(options: ControllerStartOptions, io: CliIo, start: StartController): Promise<void> {
  const stopping = nextSignal(io);
  const controller = await start(options);
  io.stdout(`controller listening on ${controller.grpcAddress} (gRPC) and ${controller.httpAddress} (HTTP)\n`);
  const failure = await Promise.race([stopping.then(() => undefined), controller.failed]);
  await controller.stop();
  // It stopped by itself (its store failed, or it lost the leadership): exit non-zero, so that a
  // supervisor (Kubernetes) restarts it.
  if (failure !== undefined) throw failure;
}
