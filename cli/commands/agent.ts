import { EXECUTION_LOG_LIMITS } from "../../shared/execution-log-limits.js";
import { hostname } from "node:os";
import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import { createLogger, type Logger } from "../../shared/logging.js";
import { checkPlaintextListen } from "../../shared/security/listen-policy.js";
import { TlsCertificates } from "../../shared/security/tls.js";
import type { startTracing as StartTracing } from "../../shared/telemetry/tracing.js";
import { CONTROLLER_ENV, DEFAULT_CONTROLLER_ADDRESS, parseControllerAddresses, parseHostPort, resolveControllerAddress } from "../controller-address.js";
import type { CliIo } from "../output.js";
import { clientTls, parseToken, resolveToken, tlsFiles, TOKEN_ENV } from "./admin.js";
import { importPart } from "./lifecycle.js";
import { defaultAgentId, parseAgentId, parseAllowScript, parseInteger, parseLabel, parseLabelFromNode, parseSeconds, type NodeLabelFlag } from "./options.js";

/** A handler function, as the agent SDK loads it; the CLI only passes them through. */
type HandlerFunction = (...args: never[]) => unknown;

/** A handler module's `listeners` export, as the agent SDK loads it; passed through too. */
type Listeners = Partial<Record<"beforeExecution" | "afterExecution", HandlerFunction>>;

/** What agent/index.ts's Agent takes; kept here so the CLI builds without it. */
export interface AgentStartOptions {
  controller: string;
  id: string;
  /** --wait-for-id: when another process holds the id, wait for it rather than exit. */
  waitForId?: boolean;
  handlers: Record<string, HandlerFunction>;
  listeners?: Listeners;
  allowScripts?: string[];
  allowHttp?: boolean;
  labels?: Record<string, string>;
  capacity?: number;
  maxConcurrent?: number;
  drainGraceMs?: number;
  logBounds?: { maxBytes?: number; maxLines?: number };
  logger?: unknown;
  /** The Kubernetes executor's API server access (connectKubernetes) and the agent's pod, with --kubernetes. */
  kubernetes?: { access: unknown; owner?: KubernetesOwner };
  /** Where the agent records its metrics, when it serves /metrics. */
  metrics?: AgentMetricsRegistry;
  /** The join token presented to a controller that checks them. */
  token?: string;
  /** --tls-ca, --tls-cert, --tls-key and --tls-refresh-interval: TLS to the controller (and, with a certificate, on --http). */
  tls?: { ca?: string; cert?: string; key?: string; refreshIntervalMs?: number };
}

/** What runAgent takes: the agent's options, and where to serve its HTTP endpoints. */
export type AgentRunOptions = Omit<AgentStartOptions, "handlers" | "listeners" | "metrics"> & {
  /** HOST:PORT for /healthz, /readyz and /metrics; none without --http. */
  http?: string;
};

/** The agent's metrics, as agent/index.ts's MetricsRegistry keeps them. */
export interface AgentMetricsRegistry {
  shutdown(): Promise<void>;
}

/** The part of agent/index.ts the CLI uses. */
export interface AgentModule {
  loadHandlerModule(path: string): Promise<{ handlers: Record<string, HandlerFunction>; listeners?: Listeners }>;
  Agent: new (options: AgentStartOptions) => RunningAgent;
  /** Needed only with --http; a module without HTTP endpoints (a test's fake) may leave both out. */
  MetricsRegistry?: new (options: { serviceName: string }) => AgentMetricsRegistry;
  startAgentHttpServer?(hostPort: string, agent: RunningAgent, metrics: AgentMetricsRegistry, tls?: TlsCertificates): Promise<{ address: string; close(): Promise<void> }>;
}

/** A started agent. */
export interface RunningAgent {
  start(): void;
  drain(): Promise<void>;
  stop(): Promise<void>;
  /**
   * "refused": the controller refused the agent because another process holds its id, and the
   * agent stopped; the error (code "already-exists") carries the controller's message. Absent in a
   * module whose agent is never refused (a test's fake).
   */
  once?(event: "refused", listener: (error: Error) => void): unknown;
}

/** The flags of `shardline agent`, parsed. */
export interface AgentOptions {
  controller?: string;
  id?: string;
  waitForId?: boolean;
  handlers?: string;
  allowScript?: string[];
  allowHttp?: boolean;
  label?: Record<string, string>;
  capacity?: number;
  maxConcurrent?: number;
  drainGrace?: number;
  logMaxBytes?: number;
  logMaxLines?: number;
  http?: string;
  kubernetes?: boolean;
  kubernetesNamespace?: string;
  kubernetesOwner?: KubernetesOwner;
  node?: string;
  labelFromNode?: NodeLabelFlag[];
  token?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsRefreshInterval?: number;
  insecure?: boolean;
}

/** The agent's own pod, which owns the Kubernetes Jobs it creates. */
export interface KubernetesOwner {
  namespace: string;
  name: string;
  uid: string;
}

/** agent/executors/kubernetes/index.js's entry points, loaded only with --kubernetes or --label-from-node. */
interface KubernetesModule {
  connectKubernetes(options: { namespace?: string; env?: Readonly<Record<string, string | undefined>> }): Promise<KubernetesAccess>;
  readNodeLabels(options: { client: KubernetesAccess["client"]; node: string; copies: readonly NodeLabelFlag[]; logger: Logger }): Promise<Record<string, string>>;
}

interface KubernetesAccess {
  namespace: string;
  source: string;
  client: { close(): void };
}

export function registerAgent(program: Command, io: CliIo): void {
  program
    .command("agent")
    .summary("run an agent that executes shards")
    .description(
      [
        "Run an agent: connect to the controller, receive shards and execute them with the handlers exported by --handlers, " +
          "the commands allowed by --allow-script, and (with --allow-http) HTTP calls. It needs at least one of the three.",
        "The first SIGTERM or SIGINT drains (running executions finish or are handed back, shards move at once) and exits 0; a second one exits at once with 1.",
        "One process holds an agent id at a time: while another process holds --id, the controller refuses this one, and the command exits with 4 and the controller's message " +
          "(which names the holder); with --wait-for-id it waits instead, and takes the id over once the other process has stopped (its shards at once after its drain, after its lease if it was killed).",
        "Traces: configured by the standard OTEL_* variables, off unless OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT); " +
          "each execution gets a span, a child of its fire's span on the controller.",
      ].join("\n\n"),
    )
    .option("--controller <HOST:PORT>", `the controller's gRPC address, or several replicas' separated by commas (default: $${CONTROLLER_ENV}, else ${DEFAULT_CONTROLLER_ADDRESS})`, (value: string) =>
      parseControllerAddresses(value, "--controller"),
    )
    .option("--id <ID>", "the agent's id, unique among connected agents (default: the hostname, lowercased)", parseAgentId)
    .option(
      "--wait-for-id",
      "when another process holds --id, wait (retrying with backoff) and take the id over once it stops, rather than exit with 4; for a replacement started before the old process is gone",
    )
    .option(
      "--handlers <MODULE>",
      "a JavaScript module whose default export maps handler names to functions; its named export `listeners` ({beforeExecution, afterExecution}) runs around every execution",
    )
    .option(
      "--allow-script <COMMAND>",
      "run jobs with spec.script whose command is exactly COMMAND (a name on PATH or an absolute path); repeatable",
      parseAllowScript,
    )
    .option("--allow-http", "run jobs with spec.http: make their HTTP requests from this agent")
    .option("--label <KEY=VALUE>", "a label for placement, e.g. zone=eu-1; repeatable", parseLabel)
    .option("--capacity <N>", "relative weight for sharding, 1 to 1000 (default: 1)", (value: string) => parseInteger(value, "--capacity", 1, 1000))
    .option("--max-concurrent <N>", "executions run at once; past it they wait on the controller, highest priority first (default: 0, no limit)", (value: string) =>
      parseInteger(value, "--max-concurrent", 0, 100_000),
    )
    .option("--drain-grace <SECONDS>", "how long a drain waits for running executions before handing them back", (value: string) =>
      parseSeconds(value, "--drain-grace", 0, 86_400),
    )
    .option("--log-max-bytes <BYTES>", "each execution's log kept and sent (ctx.log, a script's stdout and stderr), in bytes; past it the oldest lines are dropped (default: 65536)", (value: string) =>
      parseInteger(value, "--log-max-bytes", 1, EXECUTION_LOG_LIMITS.maxChars),
    )
    .option("--log-max-lines <N>", "each execution's log kept and sent, in lines; past it the oldest are dropped (default: 1000)", (value: string) =>
      parseInteger(value, "--log-max-lines", 1, EXECUTION_LOG_LIMITS.maxLines),
    )
    .option("--http <HOST:PORT>", "serve /healthz, /readyz (welcomed and holding a valid lease; else 503 saying why) and /metrics (Prometheus) here (port 0: any free port; default: none)", (value: string) =>
      parseHostPort(value, "--http", { listen: true }),
    )
    .option("--kubernetes", "run jobs with spec.kubernetes as Kubernetes Jobs, with the pod's service account (or KUBECONFIG outside a cluster)")
    .option("--kubernetes-namespace <NAMESPACE>", "where those Jobs go (default: the pod's namespace in a cluster, else the kubeconfig context's)", parseNamespace)
    .option(
      "--kubernetes-owner <NAMESPACE/POD/UID>",
      "the agent's own pod, e.g. $(POD_NAMESPACE)/$(POD_NAME)/$(POD_UID) from the downward API: it owns the Jobs, which go when it goes",
      parseKubernetesOwner,
    )
    .option("--token <TOKEN>", `the join token, for a controller started with --token-file: one of its tokens with role agent (default: $${TOKEN_ENV}; prefer it, a flag shows in the process list)`, parseToken)
    .option("--tls-ca <FILE>", "connect over TLS, verifying the controller's certificate against this CA (PEM); without it, plaintext")
    .option(
      "--tls-cert <FILE>",
      "present this client certificate (PEM; its CN or a SAN names the agent), for a controller that requires them (mutual TLS); --http then serves HTTPS with it; needs --tls-key and --tls-ca",
    )
    .option("--tls-key <FILE>", "the private key of --tls-cert (PEM)")
    .option("--insecure", "serve --http in plaintext on an address other machines can reach; without it, such an address needs --tls-cert")
    .option("--tls-refresh-interval <SECONDS>", "how often the TLS files are read again, so that renewed ones are used without a restart (default: 60)", (value: string) =>
      parseSeconds(value, "--tls-refresh-interval", 0.1, 86_400),
    )
    .option("--node <NAME>", "the Node the agent's pod runs on, e.g. $(NODE_NAME) from the downward API's spec.nodeName; needed by --label-from-node", parseNodeName)
    .option(
      "--label-from-node <NODE_LABEL[=AGENT_LABEL]>",
      "copy a label of the agent's Node (--node) to the agent at start, e.g. topology.kubernetes.io/zone=zone, for placement.spreadBy; needs get on nodes; repeatable",
      parseLabelFromNode,
    )
    .action(async (options: AgentOptions, command: Command) => {
      if (options.handlers === undefined && options.allowScript === undefined && !options.allowHttp && !options.kubernetes) {
        command.error("the agent has nothing to run: give --handlers MODULE, --allow-script COMMAND (repeatable), --allow-http or --kubernetes");
      }
      if (options.labelFromNode !== undefined && options.node === undefined) {
        command.error("--label-from-node needs --node NAME: the Node whose labels are copied, e.g. --node=$(NODE_NAME) from the downward API");
      }
      for (const { to } of options.labelFromNode ?? []) {
        if (options.label !== undefined && Object.hasOwn(options.label, to)) {
          command.error(`--label-from-node: the agent label "${to}" is given by --label too; give each label one way`);
        }
      }
      const logger = createLogger({ name: "agent", level: command.optsWithGlobals<{ logLevel?: string }>().logLevel });
      const runOptions = agentStartOptions(options, io, hostname());
      if (options.kubernetes || options.labelFromNode !== undefined) {
        const kubernetes = await importPart<KubernetesModule>(new URL("../../agent/executors/kubernetes/index.js", import.meta.url), "the Kubernetes executor");
        const access = await kubernetes.connectKubernetes({ ...(options.kubernetesNamespace === undefined ? {} : { namespace: options.kubernetesNamespace }), env: io.env });
        if (options.labelFromNode !== undefined) {
          const copied = await kubernetes.readNodeLabels({ client: access.client, node: options.node!, copies: options.labelFromNode, logger });
          logger.info({ node: options.node, labels: copied }, "labels copied from the agent's Node");
          runOptions.labels = { ...runOptions.labels, ...copied };
        }
        if (options.kubernetes) {
          logger.info({ namespace: access.namespace, configuration: access.source }, "running spec.kubernetes jobs as Kubernetes Jobs");
          runOptions.kubernetes = { access, ...(options.kubernetesOwner === undefined ? {} : { owner: options.kubernetesOwner }) };
        } else {
          access.client.close();
        }
      }
      const module = await importPart<AgentModule>(new URL("../../agent/index.js", import.meta.url), "the agent");
      // Loaded here rather than at the top: every other command would pay for OpenTelemetry's modules.
      const { startTracing } = await importPart<{ startTracing: typeof StartTracing }>(new URL("../../shared/telemetry/tracing.js", import.meta.url), "tracing");
      const tracing = await startTracing({ serviceName: "shardline-agent", serviceInstanceId: runOptions.id, env: io.env });
      if (tracing.enabled) logger.info("tracing executions: OTEL_* configures the exporter");
      let drained = false;
      try {
        await runAgent(runOptions, options.handlers, module, io, logger);
        drained = true;
      } finally {
        // After a drain the buffered spans are exported (bounded by OTEL_BSP_EXPORT_TIMEOUT); a
        // second signal means "exit at once", so they are not waited for.
        if (drained) await tracing.shutdown();
        else void tracing.shutdown().catch(() => {});
      }
    });
}

/** The agent's options from the flags, without its handlers and listeners. */
export function agentStartOptions(options: AgentOptions, io: CliIo, host: string): AgentRunOptions {
  if (options.http !== undefined) checkPlaintextListen("--http", options.http, options.tlsCert !== undefined, options.insecure === true);
  return {
    controller: resolveControllerAddress(options.controller, io.env),
    id: options.id ?? defaultAgentId(host),
    ...(options.waitForId ? { waitForId: true } : {}),
    labels: options.label ?? {},
    ...(options.allowScript === undefined ? {} : { allowScripts: options.allowScript }),
    ...(options.allowHttp ? { allowHttp: true } : {}),
    ...(options.capacity === undefined ? {} : { capacity: options.capacity }),
    ...(options.maxConcurrent === undefined ? {} : { maxConcurrent: options.maxConcurrent }),
    ...(options.drainGrace === undefined ? {} : { drainGraceMs: Math.round(options.drainGrace * 1000) }),
    ...(options.logMaxBytes === undefined && options.logMaxLines === undefined
      ? {}
      : { logBounds: { ...(options.logMaxBytes === undefined ? {} : { maxBytes: options.logMaxBytes }), ...(options.logMaxLines === undefined ? {} : { maxLines: options.logMaxLines }) } }),
    ...(options.http === undefined ? {} : { http: options.http }),
    ...tokenOption(options.token, io.env),
    ...tlsOption(options),
  };
}

/** The TLS files, checked now so that a bad one fails naming its flag before anything connects. */
function tlsOption(options: AgentOptions): Pick<AgentRunOptions, "tls"> {
  if (clientTls(options) === undefined) return {};
  return { tls: tlsFiles(options)! };
}

/** --token, else SHARDLINE_TOKEN, as the agent's join token. */
function tokenOption(flag: string | undefined, env: CliIo["env"]): { token?: string } {
  const token = resolveToken(flag, env);
  return token === undefined ? {} : { token };
}

/**
 * Loads the handlers and listeners (none without a module: a script- or HTTP-only agent), starts
 * the agent (and, with `http`, its HTTP endpoints), and on the first SIGINT or SIGTERM drains it.
 * A second signal during the drain gives up on it: the command fails at once, and the controller
 * treats the agent as lost, so its shards move once its lease expires.
 */
export async function runAgent(options: AgentRunOptions, handlersModule: string | undefined, module: AgentModule, io: CliIo, logger?: Logger): Promise<void> {
  const { http: hostPort, ...agentOptions } = options;
  const http = hostPort === undefined ? undefined : agentHttp(module, hostPort, httpTls(options.tls, logger));
  const { handlers, listeners } = handlersModule === undefined ? { handlers: {}, listeners: undefined } : await module.loadHandlerModule(handlersModule);
  const agent = new module.Agent({
    ...agentOptions,
    handlers,
    ...(listeners === undefined ? {} : { listeners }),
    ...(logger === undefined ? {} : { logger }),
    ...(http === undefined ? {} : { metrics: http.metrics }),
  });
  let server: { address: string; close(): Promise<void> } | undefined;
  try {
    // Listening before connecting: a taken port fails the command before the agent takes any work.
    server = await http?.listen(agent);
    if (server !== undefined) io.stdout(`agent ${options.id} serving /healthz, /readyz and /metrics on ${server.address} (HTTP)\n`);
    await runStarted(agent, io, logger);
  } finally {
    await server?.close();
    await http?.metrics.shutdown();
  }
}

/** The agent's certificate for --http, when it has one: the port then serves HTTPS. */
function httpTls(tls: AgentRunOptions["tls"], logger: Logger | undefined): TlsCertificates | undefined {
  if (tls?.cert === undefined) return undefined;
  return TlsCertificates.forServer({
    cert: tls.cert,
    key: tls.key,
    ...(tls.refreshIntervalMs === undefined ? {} : { refreshIntervalMs: tls.refreshIntervalMs }),
    onReloadError: (error) => logger?.error({ err: error }, "the TLS files changed but cannot be used"),
  });
}

/** What --http needs from the agent module: the agent's metrics, and its HTTP port. */
function agentHttp(module: AgentModule, hostPort: string, tls: TlsCertificates | undefined) {
  const { MetricsRegistry, startAgentHttpServer } = module;
  if (MetricsRegistry === undefined || startAgentHttpServer === undefined) {
    throw new ShardlineError("internal", '--http: this build\'s agent serves no HTTP endpoints; rebuild with "npm run build"');
  }
  const metrics = new MetricsRegistry({ serviceName: "shardline-agent" });
  return { metrics, listen: (agent: RunningAgent) => startAgentHttpServer(hostPort, agent, metrics, tls) };
}

/**
 * Starts the agent, and drains it on the first signal. Fails with the agent's refusal when the
 * controller refuses it because another process holds its id: retrying would never end, so the
 * command exits (4) with the controller's message instead.
 */
async function runStarted(agent: RunningAgent, io: CliIo, logger: Logger | undefined): Promise<void> {
  let stopWatching = (): void => {};
  const first = new Promise<NodeJS.Signals>((resolve, reject) => {
    const unsubscribe = io.onSignal((signal) => {
      unsubscribe();
      resolve(signal);
    });
    agent.once?.("refused", reject);
    stopWatching = unsubscribe;
  });
  agent.start();
  let signal: NodeJS.Signals;
  try {
    signal = await first;
  } catch (refusal) {
    stopWatching();
    await agent.stop();
    logger?.flush();
    throw refusal;
  }
  logger?.info({ signal }, "draining before exit; send the signal again to exit at once");
  let unsubscribe = (): void => {};
  const second = new Promise<never>((_, reject) => {
    unsubscribe = io.onSignal((again) => reject(new ShardlineError("internal", `${again} during the drain; exited without finishing it`)));
  });
  const draining = agent.drain();
  // When a second signal wins the race, the drain is abandoned; its outcome no longer matters.
  draining.catch(() => {});
  try {
    await Promise.race([draining, second]);
  } finally {
    unsubscribe();
    logger?.flush();
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** `--kubernetes-namespace`: a DNS-1123 label. */
function parseNamespace(value: string): string {
  if (!DNS_LABEL.test(value)) throw ShardlineError.invalid("--kubernetes-namespace", value, "a Kubernetes namespace: 1 to 63 lowercase letters, digits and '-'");
  return value;
}

/** `--node`: a Node name, a DNS-1123 subdomain. */
function parseNodeName(value: string): string {
  if (!DNS_SUBDOMAIN.test(value)) throw ShardlineError.invalid("--node", value, "a Kubernetes Node name: 1 to 253 lowercase letters, digits, '-' and '.'");
  return value;
}

/** `--kubernetes-owner NAMESPACE/POD/UID`. */
function parseKubernetesOwner(value: string): KubernetesOwner {
  const [namespace = "", name = "", uid = "", ...rest] = value.split("/");
  if (rest.length > 0 || !DNS_LABEL.test(namespace) || !DNS_SUBDOMAIN.test(name) || !/^[0-9a-f-]{1,64}$/.test(uid)) {
    throw ShardlineError.invalid("--kubernetes-owner", value, "NAMESPACE/POD/UID, e.g. $(POD_NAMESPACE)/$(POD_NAME)/$(POD_UID) from the downward API");
  }
  return { namespace, name, uid };
}
