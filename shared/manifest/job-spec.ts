/** How a job's shards are spread over agents (DESIGN.md "Sharding"). */
export type StrategyName = "sticky" | "balanced" | "odd-even" | "round-robin";
export const STRATEGIES: readonly StrategyName[] = ["sticky", "balanced", "odd-even", "round-robin"];

/**
 * What happens to a lost agent's work. `fenced` waits for its lease to expire, then moves its
 * shards and re-runs its in-flight executions; `fast` does so as soon as the stream closes
 * (at-least-once); `off` moves the shards after the lease but never re-runs.
 */
export type FailoverMode = "fenced" | "fast" | "off";
export const FAILOVER_MODES: readonly FailoverMode[] = ["fenced", "fast", "off"];

/** What to do with fires that could not start on time (DESIGN.md "Firing, misfire, overlap"). */
export type MisfirePolicy = "fire-once" | "skip" | "catch-up";
export const MISFIRE_POLICIES: readonly MisfirePolicy[] = ["fire-once", "skip", "catch-up"];

/** What a fire does when the previous run of the same shard is still going. */
export type OverlapPolicy = "forbid" | "allow" | "replace";
export const OVERLAP_POLICIES: readonly OverlapPolicy[] = ["forbid", "allow", "replace"];

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
  /** spec.handler: the handler name agents declare. */
  handler: string;
  /** spec.strategy, default "sticky". */
  strategy: StrategyName;
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
  /** spec.retries: limit 0..100 (default 0), backoffSeconds 0..86400 (default 10). */
  retries: { limit: number; backoffSeconds: number };
  /** spec.placement.selector: agent labels that must all match; default {}. */
  placement: { selector: Record<string, string> };
  /** spec.suspend: when true, the job makes no scheduled fires; default false. */
  suspend: boolean;
}
