import { ShardlineError } from "../errors.js";

/**
 * How a job's shards are spread over agents as agents come and go (docs/architecture.md, "Sharding"):
 * sticky moves the fewest shards; the others are ElasticJob's layouts, made from the agent list alone.
 */
export type StrategyName = "sticky" | "balanced" | "odd-even" | "round-robin";
export const STRATEGIES: readonly StrategyName[] = ["sticky", "balanced", "odd-even", "round-robin"];

/** A strategy from a module the controller loaded with --strategy NAME=MODULE. */
export type CustomStrategyName = `custom:${string}`;

/**
 * What happens to a lost agent's work. `fenced` waits for its lease to expire, then moves its
 * shards and re-runs its in-flight executions; `fast` does so as soon as the stream closes
 * (at-least-once); `off` moves the shards after the lease but never re-runs.
 */
export type FailoverMode = "fenced" | "fast" | "off";
export const FAILOVER_MODES: readonly FailoverMode[] = ["fenced", "fast", "off"];

/**
 * What to do with fires that could not start on time: the shard was busy, no agent held it, or the
 * controller was down (docs/architecture.md, "Firing, misfire, overlap").
 */
export type MisfirePolicy = "fire-once" | "skip" | "catch-up";
export const MISFIRE_POLICIES: readonly MisfirePolicy[] = ["fire-once", "skip", "catch-up"];

/** What a fire does when the previous run of the same shard is still going. */
export type OverlapPolicy = "forbid" | "allow" | "replace";
export const OVERLAP_POLICIES: readonly OverlapPolicy[] = ["forbid", "allow", "replace"];

/** spec.script: run a command as a child process (agents must allow-list the command). */
export interface ScriptSpec {
  /** A program name on the agent's PATH, or an absolute path. */
  command: string;
  /** Its arguments; default []. */
  args: string[];
  /** Extra environment variables; default {}. */
  env: Record<string, string>;
  /** After a timeout or cancel: SIGTERM, then SIGKILL after this many seconds; 0..3600, default 10. */
  killGraceSeconds: number;
}

/** HTTP methods the http executor sends. */
export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
export const HTTP_METHODS: readonly HttpMethod[] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/** spec.http: make an HTTP request; a non-2xx status fails the execution. */
export interface HttpSpec {
  /** Default POST. */
  method: HttpMethod;
  /** An absolute http:// or https:// URL. */
  url: string;
  /** Request headers; default {}. */
  headers: Record<string, string>;
  /** The body; "" (default) sends the execution context as JSON. */
  body: string;
  /** 1..300, default 10. */
  connectTimeoutSeconds: number;
  /** 1..86400, default 60. */
  readTimeoutSeconds: number;
}

/** The restart policies a Job's pods may have: Kubernetes refuses Always for a Job. */
export type KubernetesRestartPolicy = "Never" | "OnFailure";
export const KUBERNETES_RESTART_POLICIES: readonly KubernetesRestartPolicy[] = ["Never", "OnFailure"];

/**
 * A Kubernetes core/v1 PodTemplateSpec, as the job's manifest gives it. Shardline checks the
 * parts it relies on (metadata, containers' names and images, restartPolicy); the rest of the pod
 * spec is Kubernetes' own, checked by the API server when an execution creates its Job.
 */
export interface KubernetesPodTemplate {
  /** Labels and annotations every pod of the job gets, beside the shardline.dev/* labels the agent adds. */
  metadata: { labels: Record<string, string>; annotations: Record<string, string> };
  /** A core/v1 PodSpec with at least one container; restartPolicy filled in (default Never). */
  spec: Record<string, unknown> & { restartPolicy: KubernetesRestartPolicy; containers: Record<string, unknown>[] };
}

/**
 * spec.kubernetes: each execution becomes a Kubernetes batch/v1 Job made from this pod template,
 * in the agent's namespace; the agent watches it to its end and reports the pod's log tail.
 */
export interface KubernetesSpec {
  /** The Job's pod template. */
  template: KubernetesPodTemplate;
  /**
   * The Job's spec.backoffLimit: failed pods Kubernetes replaces within one execution, 0..100,
   * default 0 (spec.retries is how Shardline retries a failed execution).
   */
  backoffLimit: number;
  /** The Job's spec.ttlSecondsAfterFinished: how long a finished Job stays for inspection, 0..2592000, default 3600. */
  ttlSecondsAfterFinished: number;
  /** The container whose log tail is the execution's result (or its error's tail); default the first container. */
  logContainer: string;
  /**
   * How long the Job's pod may take to start a container (scheduling, image pull) before the
   * execution fails with the reason, 0 (no limit) .. 86400, default DEFAULT_START_TIMEOUT_SECONDS.
   * Absent in specs stored before it existed: read it as the default.
   */
  startTimeoutSeconds?: number;
}

/** spec.kubernetes.startTimeoutSeconds when none is given: long enough for a cluster autoscaler to add a node. */
export const DEFAULT_START_TIMEOUT_SECONDS = 600;

/**
 * What a job runs, as the manifest says it with exactly one of four fields: spec.handler (an
 * in-process handler agents declare), spec.script, spec.http or spec.kubernetes. Each kind is
 * run by the agent executor of the same name (agent/executors/<kind>/). A switch over `kind`
 * ends in `unknownExecutor(runs)`, so a fifth kind does not compile until every switch has it.
 */
export type ExecutorSpec =
  | { kind: "handler"; handler: string }
  | { kind: "script"; script: ScriptSpec }
  | { kind: "http"; http: HttpSpec }
  | { kind: "kubernetes"; kubernetes: KubernetesSpec };

/** The kinds of ExecutorSpec; each is also the name of its manifest field. */
export type ExecutorKind = ExecutorSpec["kind"];

/**
 * The default branch of an exhaustive switch over ExecutorSpec's kinds: it does not compile while
 * a kind lacks its case. Reached at run time only by a spec a newer version stored.
 */
export function unknownExecutor(runs: never): never {
  const kind = (runs as { kind?: unknown }).kind;
  throw new ShardlineError("internal", `a job runs an executor of kind ${JSON.stringify(kind)}, which this version of Shardline does not know`);
}

/** spec.onFailure: what to do when an execution fails, times out or is lost. */
export interface FailureSpec {
  /** POST the execution as JSON to this http(s) URL, retrying with backoff; absent: only log. */
  webhook?: { url: string; headers: Record<string, string> };
}

/**
 * spec.onFireComplete: once every shard of a fire has finished (succeeded, failed, timed out,
 * cancelled or lost, after its retries and failover runs), one agent that declares `handler`
 * runs it once, with each shard's outcome. ElasticJob's distributed-once listener, fenced by
 * the lease so it never runs twice.
 */
export interface FireCompleteSpec {
  /** An in-process handler name, as in spec.handler. */
  handler: string;
}

/** A job's manifest after validation, with every default filled in. */
export interface JobSpec {
  /** metadata.name: a DNS-1123 label (lowercase letters, digits, '-', at most 63). */
  name: string;
  /** metadata.labels. */
  labels: Record<string, string>;
  /** spec.description, free text. */
  description: string;
  /** spec.schedule: cron with 5 fields, or 6 with seconds first. Absent for manual-only jobs. */
  schedule?: string;
  /** spec.timeZone: an IANA zone the schedule is read in; default "UTC". */
  timeZone: string;
  /** spec.shards: 1..10000, default 1. */
  shards: number;
  /** spec.shardParameters: shard number -> parameter, keys within 0..shards-1. */
  shardParameters: Record<number, string>;
  /** spec.parameter: passed to every shard; default "". */
  parameter: string;
  /**
   * What each execution runs: the one of spec.handler, spec.script, spec.http and
   * spec.kubernetes the manifest gives (see ExecutorSpec).
   */
  runs: ExecutorSpec;
  /** spec.strategy, default "sticky"; `custom:NAME` names a strategy the controller loaded. */
  strategy: StrategyName | CustomStrategyName;
  /** spec.failover, default "fenced". */
  failover: FailoverMode;
  /** spec.misfire, default "fire-once". */
  misfire: MisfirePolicy;
  /** spec.maxCatchUp: the most missed fires `catch-up` runs, 1..1000, default 10. */
  maxCatchUp: number;
  /** spec.overlap, default "forbid". */
  overlap: OverlapPolicy;
  /** spec.timeoutSeconds: 0 (none) .. 604800, default 0. */
  timeoutSeconds: number;
  /**
   * spec.disconnectGraceSeconds: 0..86400; absent: the controller's --disconnect-grace. How long
   * a run goes on on an agent that lost its lease (out of reach of every controller), waiting
   * for a controller to come back, before the agent aborts it; the controller runs the fire
   * elsewhere only after that. Ignored with failover: fast and for daemon runs (always 0).
   */
  disconnectGraceSeconds?: number;
  /** spec.retries: limit 0..100 (default 0), backoffSeconds 0..86400 (default 10). */
  retries: { limit: number; backoffSeconds: number };
  /**
   * spec.placement.selector: agent labels that must all match; default {}.
   * spec.placement.spreadBy: agent label keys, outermost first (e.g. zone, then node): the
   * shards are shared evenly between the label's values before agents; agents without every
   * one of these labels take none. Absent (or empty) means no spreading; only with sticky.
   */
  placement: { selector: Record<string, string>; spreadBy?: string[] };
  /** spec.suspend: when true, the job makes no scheduled fires; default false. */
  suspend: boolean;
  /**
   * spec.daemon: each shard runs for as long as an agent owns it (a consumer per partition);
   * excludes spec.schedule. Absent in specs stored before it existed: read it as false.
   */
  daemon?: boolean;
  /** spec.onFailure; absent means log only. */
  onFailure?: FailureSpec;
  /** spec.onFireComplete; absent means no completion hook. */
  onFireComplete?: FireCompleteSpec;
  /**
   * spec.priority: -1000..1000, default 0. When agents' slots are short, waiting executions of
   * higher-priority jobs start first, and their shards are placed first. Absent in specs stored
   * before it existed: read it with `priorityOf`.
   */
  priority?: number;
  /**
   * spec.rollout: the steps a change of what the job runs takes from the stable revision to the
   * new one (docs/rollouts.md); absent, a change applies to every shard from its next fire.
   */
  rollout?: RolloutSpec;
}

/** The operators of a label selector's matchExpressions, as Kubernetes names them. */
export type SelectorOperator = "In" | "NotIn" | "Exists" | "DoesNotExist";
export const SELECTOR_OPERATORS: readonly SelectorOperator[] = ["In", "NotIn", "Exists", "DoesNotExist"];

/**
 * Which agents a wave reaches, as a Kubernetes label selector (every part must match);
 * `clusters` is short for the expression {key: cluster, operator: In, values: clusters}.
 */
export interface WaveSelector {
  clusters?: string[];
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: SelectorOperator; values?: string[] }[];
}

/** A pause: until promoted (neither field), for a duration (`30m`, or seconds), or for a number of fires. */
export interface PauseStep {
  duration?: string | number;
  fires?: number;
}

/**
 * A gate on the new revision's own runs since the last wave began: it waits for minExecutions
 * finished runs, then passes, or aborts the rollout when a limit is broken (maxFailures at once).
 */
export interface AnalysisGate {
  minExecutions: number;
  maxFailures?: number;
  maxFailureRate?: number;
  noWorseThanStable?: boolean;
  maxP95DurationSeconds?: number;
}

/** One step of spec.rollout.steps: exactly one of its four kinds, as the manifest writes it. */
export type RolloutStep = { wave: WaveSelector } | { weight: number } | { pause: PauseStep } | { analysis: AnalysisGate };

export interface RolloutSpec {
  steps: RolloutStep[];
}

/** A job's priority, 0 when its spec predates the field. */
export function priorityOf(spec: JobSpec): number {
  return spec.priority ?? 0;
}
