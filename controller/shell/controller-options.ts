import type { Logger } from "../../shared/logging.js";
import type { TlsFiles } from "../../shared/security/tls.js";
import type { StrategyModule } from "../core/sharding/custom-strategy.js";
import type { RetentionPolicy } from "../store/store.js";
import { DEFAULT_MAX_JOBS } from "./admin-service.js";
import { DEFAULT_AUDIT_RETENTION } from "./audit-trail.js";
import type { FailureNotifierSettings } from "./failure-notifier.js";

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
  /** Finished executions kept, default 1,000 per job and 7 days; and revisions, default 10 per job. */
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
  /**
   * `--jobs-from kubernetes`: follow ShardedJob objects of the API server (in `namespaces`, or
   * every namespace when empty), reached with `kubeconfig` (default $KUBECONFIG, else the pod's
   * service account, else ~/.kube/config). `statusEveryMs` and `timesEveryMs`: see
   * KubeJobsOptions (defaults 2 s and 60 s).
   */
  jobsFrom?: { kind: "kubernetes"; namespaces: readonly string[]; kubeconfig?: string; context?: string; statusEveryMs?: number; timesEveryMs?: number };
  /** `--trace-url-template`: a link to a trace with {traceId} in it, which the console builds per execution. */
  traceUrlTemplate?: string;
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

/** The limits a controller applies unless told otherwise. */
export const DEFAULT_LIMITS: ControllerLimits = { adminCallsPerSecond: 200, maxJobs: DEFAULT_MAX_JOBS, maxAgents: 10_000 };

/**
 * What is kept unless `retention` says otherwise: 1,000 finished executions per job, for 7 days,
 * each job's 10 newest revisions (and those still in use), and the audit trail's newest 100,000
 * records, for 90 days.
 */
export const DEFAULT_RETENTION: RetentionPolicy = { maxPerJob: 1000, maxAgeMs: 7 * 24 * 3600 * 1000, revisionsPerJob: 10, audit: DEFAULT_AUDIT_RETENTION };

/** The TTL of the leader's etcd lease unless `leaderTtlSeconds` says otherwise. */
export const DEFAULT_LEADER_TTL_SECONDS = 2;
