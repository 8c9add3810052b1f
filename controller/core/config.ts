import type { ShardingStrategy } from "./sharding/strategy.js";

/** Timing and bounds of the controller's decisions. */
export interface CoreConfig {
  /** How often agents heartbeat (default 500 ms). */
  heartbeatIntervalMs: number;
  /**
   * How long an ack keeps an agent's lease alive (default 2 s). A lost agent's shards move, and
   * its in-flight executions re-run, only once this has passed since its last ack.
   */
  leaseTtlMs: number;
  /**
   * How much longer than the lease the controller waits before it treats an agent's lease as
   * expired. The agent's lease runs from when it sent the acked heartbeat, by its own clock;
   * this covers that clock running slow (the simulator allows 1,000 ppm) and the agent's fence
   * timer waking late, so a lost agent has fenced itself before its shards move.
   */
  leaseMarginMs: number;
  /**
   * Missed fires recorded one by one after controller downtime, per job; older ones are counted
   * in a single event instead, so a long outage cannot flood the history.
   */
  maxMissedFiresRecorded: number;
  /**
   * How long before a scheduled fire instant the controller makes the fire and dispatches it.
   * The agent starts each execution at its fire instant by its own clock, so the work of
   * recording and sending a burst of fires happens ahead of time instead of as fire lag. The
   * agent is told this in Welcome and never waits longer. 0: make each fire at its instant.
   */
  dispatchAheadMs: number;
  /**
   * How long an agent whose lease lapsed lets a started run go on, waiting to reach a controller
   * again, for jobs that do not set spec.disconnectGraceSeconds (default 15 s). The controller
   * counts such a run as unknown until then, plus leaseMarginMs, and runs its fire elsewhere
   * only after. 0: a lapse aborts runs at once, and they re-run right after the lease.
   */
  disconnectGraceMs: number;
  /**
   * The most executions scheduled fires make in one batch (the steps of one event-loop turn);
   * fires due beyond it wait for the next batch, so that a controller behind its schedule still
   * reads heartbeats and reports between them. A fire is never split: one larger than this goes
   * alone. Other timers (leases, retries, grace) are never held back.
   */
  maxFireExecutionsPerBatch: number;
  /** Strategies loaded from user modules, by the NAME in `spec.strategy: custom:NAME`. */
  customStrategies?: ReadonlyMap<string, ShardingStrategy>;
}

export const DEFAULT_CORE_CONFIG: CoreConfig = {
  heartbeatIntervalMs: 500,
  leaseTtlMs: 2000,
  leaseMarginMs: 50,
  maxMissedFiresRecorded: 100,
  dispatchAheadMs: 250,
  disconnectGraceMs: 15_000,
  maxFireExecutionsPerBatch: 2000,
};
