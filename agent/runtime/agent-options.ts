import { DEFAULT_LOG_BOUNDS, type ExecutionLogBounds } from "../executors/execution-log-buffer.js";
import { EXECUTION_LOG_LIMITS } from "../../shared/execution-log-limits.js";
import { pino, type Logger } from "pino";
import { ShardlineError } from "../../shared/errors.js";
import { TlsCertificates, type TlsFiles } from "../../shared/security/tls.js";
import type { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import { VERSION } from "../../shared/version.js";
import type { KubernetesAccess } from "../executors/kubernetes/kube-config.js";
import type { OwnerPod } from "../executors/kubernetes/job-manifest.js";
import type { ExecutionListeners, HandlerMap } from "../sdk.js";
import { checkInstanceId, newInstanceId } from "./agent-identity.js";

/** A monotonic clock in milliseconds; only differences between readings mean anything. */
export interface Clock {
  now(): number;
}

/** How an Agent is configured. Only `controller` and `id` are required. */
export interface AgentOptions {
  /**
   * The controller's gRPC address, `host:port`, or several replicas' separated by commas: while
   * one cannot be reached the next is tried, and a Redirect from a follower leads to the leader.
   */
  controller: string;
  /** This agent's id, unique among connected agents (the controller checks its spelling). */
  id: string;
  /**
   * This process's instance (Hello.instance_id): 16-64 letters, digits, '-' and '_'. Default a
   * random UUID made once per Agent, which is what it is for; tests inject one to play two
   * processes, or the same process again.
   */
  instanceId?: string;
  /**
   * What to do when the controller refuses the Hello because another process holds this id
   * (ALREADY_EXISTS). False (the default): log the controller's message as an error, stop, and
   * emit "refused": two processes cannot share an id, and retrying would never end. True: log
   * that the agent waits for the id and keep reconnecting with the backoff, so that a
   * replacement started before the old process is gone takes the id over once it is free.
   */
  waitForId?: boolean;
  /** The handlers this agent runs; their names are declared in Hello. Default none (a script- or HTTP-only agent). */
  handlers?: HandlerMap;
  /**
   * Hooks run around every execution this agent starts (handler, script and HTTP alike): see
   * ExecutionListeners. Default none.
   */
  listeners?: ExecutionListeners;
  /**
   * The commands this agent runs for jobs with spec.script, compared exactly with
   * spec.script.command. Empty or absent: the script executor is off, and Hello does not list it.
   */
  allowScripts?: string[];
  /** Whether this agent makes the requests of jobs with spec.http. Default false. */
  allowHttp?: boolean;
  /**
   * Runs jobs with spec.kubernetes as Kubernetes Jobs through this API server access (see
   * connectKubernetes), owned by `owner`, the agent's own pod. Default none: the agent does not
   * declare the executor and gets no such jobs.
   */
  kubernetes?: { access: KubernetesAccess; owner?: OwnerPod };
  /** Labels for placement (zone, cluster, node...). Default none. */
  labels?: Record<string, string>;
  /** Relative sharding weight, 1-1000. Default 1. */
  capacity?: number;
  /**
   * How many executions run at once, 0..100000; 0 (the default) is no limit. Past it the
   * controller holds executions back, highest job priority first.
   */
  maxConcurrent?: number;
  /** Software version reported in Hello. Default Shardline's own. */
  version?: string;
  /** How long drain() lets running executions finish before aborting them. Default 30 s. */
  drainGraceMs?: number;
  /**
   * Bounds of the jittered exponential wait between reconnects (default 100 ms to 5 s), and how
   * long a connection waits for the controller's Welcome before the next controller is tried
   * (default 5 s: a frozen controller accepts connections and answers nothing).
   */
  reconnect?: { initialMs?: number; maxMs?: number; welcomeTimeoutMs?: number };
  /** Longest result text reported, in UTF-8 bytes. Default 4096, the contract's limit. */
  maxResultBytes?: number;
  /**
   * How much of each execution's log (ctx.log, a script's stdout and stderr, a pod's log tail)
   * the agent keeps and ships; past either bound the oldest lines are dropped, and the log says
   * how many. Default 64 KiB and 1,000 lines (DEFAULT_LOG_BOUNDS); maxBytes at most 1 MiB and
   * maxLines at most 10,000, the controller's own bounds.
   */
  logBounds?: Partial<ExecutionLogBounds>;
  /**
   * How often a running execution's new log lines are shipped, in ms (default 500): batched
   * with a RUNNING update, never one message per line. The terminal update carries the rest.
   */
  logFlushIntervalMs?: number;
  /** Where the agent logs. Default a silent logger. */
  logger?: Logger;
  /**
   * Where the agent records its metrics (shardline_agent_*: executions by job and outcome,
   * durations, fire lag, running executions, assignments, reconnects, lease lapses; see
   * AgentMetrics), to be served by startAgentHttpServer. Default none: nothing is recorded.
   */
  metrics?: MetricsRegistry;
  /** The monotonic clock leases are measured on. Default performance.now. */
  clock?: Clock;
  /** A number in [0, 1) for the reconnect jitter. Default Math.random. */
  random?: () => number;
  /**
   * The join token the agent presents (`authorization: Bearer`), for a controller started with
   * --token-file: one of its tokens with role `agent`. Default none.
   */
  token?: string;
  /**
   * TLS to the controller, from PEM files: `ca` verifies the controller's certificate (without
   * it the agent connects in plaintext); `cert` and `key` present a client certificate, for a
   * controller that requires them (mutual TLS). The files are checked here and read again every
   * `refreshIntervalMs` (default 60 s), so a renewed certificate is used from the next
   * connection on. Default none: plaintext.
   */
  tls?: TlsFiles & { refreshIntervalMs?: number };
}

/** AgentOptions with every default filled in. */
export interface ResolvedAgentOptions {
  controller: string;
  id: string;
  instanceId: string;
  waitForId: boolean;
  handlers: HandlerMap;
  listeners: ExecutionListeners | undefined;
  allowScripts: string[];
  allowHttp: boolean;
  kubernetes: { access: KubernetesAccess; owner?: OwnerPod } | undefined;
  labels: Record<string, string>;
  capacity: number;
  maxConcurrent: number;
  version: string;
  drainGraceMs: number;
  reconnect: { initialMs: number; maxMs: number; welcomeTimeoutMs: number };
  maxResultBytes: number;
  logBounds: ExecutionLogBounds;
  logFlushIntervalMs: number;
  logger: Logger;
  metrics: MetricsRegistry | undefined;
  clock: Clock;
  random: () => number;
  token: string | undefined;
  /** The certificates of `tls`, checked; undefined for plaintext. */
  tls: TlsCertificates | undefined;
}

/** How errors name AgentOptions.tls's fields. */
const TLS_OPTION_NAMES = { cert: "tls.cert", key: "tls.key", ca: "tls.ca", refreshIntervalMs: "tls.refreshIntervalMs" };

/** The contract's limit on a result's size (ExecutionUpdate.result). */
export const MAX_RESULT_BYTES = 4096;

/**
 * Fills in defaults and rejects values no controller would accept. Spelling rules of ids and
 * handler names belong to the controller, which answers INVALID_ARGUMENT naming the field.
 */
export function resolveAgentOptions(options: AgentOptions): ResolvedAgentOptions {
  if (!options.controller) throw ShardlineError.invalid("controller", options.controller, "a host:port address");
  if (!options.id) throw ShardlineError.invalid("id", options.id, "a non-empty agent id");
  const maxConcurrent = options.maxConcurrent ?? 0;
  if (!Number.isInteger(maxConcurrent) || maxConcurrent < 0 || maxConcurrent > 100_000) {
    throw ShardlineError.invalid("maxConcurrent", maxConcurrent, "an integer from 0 (no limit) to 100000");
  }
  const capacity = options.capacity ?? 1;
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1000) {
    throw ShardlineError.invalid("capacity", capacity, "an integer from 1 to 1000");
  }
  const drainGraceMs = options.drainGraceMs ?? 30_000;
  if (!(drainGraceMs >= 0)) throw ShardlineError.invalid("drainGraceMs", drainGraceMs, "a number of milliseconds >= 0");
  const maxResultBytes = options.maxResultBytes ?? MAX_RESULT_BYTES;
  if (!Number.isInteger(maxResultBytes) || maxResultBytes < 0 || maxResultBytes > MAX_RESULT_BYTES) {
    throw ShardlineError.invalid("maxResultBytes", maxResultBytes, `an integer from 0 to ${MAX_RESULT_BYTES}`);
  }
  const logBounds = { ...DEFAULT_LOG_BOUNDS, ...options.logBounds };
  if (!Number.isInteger(logBounds.maxBytes) || logBounds.maxBytes < 1 || logBounds.maxBytes > EXECUTION_LOG_LIMITS.maxChars) {
    throw ShardlineError.invalid("logBounds.maxBytes", logBounds.maxBytes, `an integer from 1 to ${EXECUTION_LOG_LIMITS.maxChars}`);
  }
  if (!Number.isInteger(logBounds.maxLines) || logBounds.maxLines < 1 || logBounds.maxLines > EXECUTION_LOG_LIMITS.maxLines) {
    throw ShardlineError.invalid("logBounds.maxLines", logBounds.maxLines, `an integer from 1 to ${EXECUTION_LOG_LIMITS.maxLines}`);
  }
  const logFlushIntervalMs = options.logFlushIntervalMs ?? 500;
  if (!Number.isInteger(logFlushIntervalMs) || logFlushIntervalMs < 10 || logFlushIntervalMs > 60_000) {
    throw ShardlineError.invalid("logFlushIntervalMs", logFlushIntervalMs, "an integer number of milliseconds from 10 to 60000");
  }
  const initialMs = options.reconnect?.initialMs ?? 100;
  const maxMs = options.reconnect?.maxMs ?? 5_000;
  const welcomeTimeoutMs = options.reconnect?.welcomeTimeoutMs ?? 5_000;
  if (!(initialMs > 0) || !(maxMs >= initialMs) || !(welcomeTimeoutMs > 0)) {
    throw ShardlineError.invalid("reconnect", options.reconnect, "initialMs > 0, maxMs >= initialMs and welcomeTimeoutMs > 0");
  }
  const allowScripts = [...new Set(options.allowScripts ?? [])];
  for (const command of allowScripts) {
    if (typeof command !== "string" || command === "" || command.includes("\0")) {
      throw ShardlineError.invalid("allowScripts", command, "command names or paths, each non-empty and without NUL");
    }
  }
  for (const hook of ["beforeExecution", "afterExecution"] as const) {
    const given: unknown = options.listeners?.[hook];
    if (given !== undefined && typeof given !== "function") throw ShardlineError.invalid(`listeners.${hook}`, given, "a function, or nothing");
  }
  const logger = options.logger ?? pino({ level: "silent" });
  const tls = TlsCertificates.forClient(
    { ...options.tls, onReloadError: (error) => logger.error({ err: error }, "the TLS files changed but cannot be used") },
    TLS_OPTION_NAMES,
  );
  return {
    controller: options.controller,
    id: options.id,
    instanceId: options.instanceId === undefined ? newInstanceId() : checkInstanceId(options.instanceId),
    waitForId: options.waitForId ?? false,
    handlers: options.handlers ?? {},
    listeners: options.listeners,
    allowScripts,
    allowHttp: options.allowHttp ?? false,
    kubernetes: options.kubernetes,
    labels: { ...(options.labels ?? {}) },
    capacity,
    maxConcurrent,
    version: options.version ?? VERSION,
    drainGraceMs,
    reconnect: { initialMs, maxMs, welcomeTimeoutMs },
    maxResultBytes,
    logBounds,
    logFlushIntervalMs,
    logger,
    metrics: options.metrics,
    clock: options.clock ?? { now: () => performance.now() },
    random: options.random ?? Math.random,
    token: options.token,
    tls,
  };
}
