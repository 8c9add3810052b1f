/** How big each scenario is in each mode of `npm run bench`. */
export type BenchMode = "full" | "quick" | "smoke";

export interface BenchSizes {
  /** [shards, agents] pairs for the movement figures. */
  movement: [number, number][];
  fireLag: { rates: number[]; agents: number; processes: number; seconds: number; warmupSeconds: number };
  repeat: { schedules: number; workers: number; seconds: number; warmupSeconds: number };
  /** A long run at a steady rate, for memory: RSS sampled every `sampleEverySeconds`. */
  soak: { firesPerSecond: number; agents: number; processes: number; seconds: number; warmupSeconds: number; sampleEverySeconds: number };
  /**
   * Executions per second and CPU per execution at each agent count, beside the transport's floor
   * at the same counts, and BullMQ at its best over a grid of worker processes x concurrency.
   */
  throughput: { agents: number[]; executions: number; shardsPerTrigger: number; peerProcesses: number[]; peerConcurrency: number[] };
  /** Throughput with the controller on an etcd cluster of `members`, beside etcd's own key write rate. */
  etcd: { agents: number; executions: number; shardsPerTrigger: number; members: number };
  failover: { rounds: number; agents: number; shards: number };
  /** Leaders SIGKILLed in turn among three controller replicas on etcd, with agents each in `processes` load processes. */
  leaderFailover: { rounds: number; agents: number; processes: number; shards: number };
  /** BullMQ's stall detection; undefined fields keep BullMQ's defaults (lock 30 s, check every 30 s). */
  stall: { lockDurationMs?: number; stalledIntervalMs?: number };
  drain: { agents: number; shards: number; seconds: number };
  scale: { agents: number; processes: number; jobs: number; shardsPerJob: number; heartbeatIntervalMs: number; leaseTtlMs: number };
}

export const BENCH_SIZES: Record<BenchMode, BenchSizes> = {
  full: {
    movement: [[9, 4], [100, 10], [1000, 30]],
    fireLag: { rates: [100, 1000, 5000, 10000, 20000], agents: 10, processes: 2, seconds: 20, warmupSeconds: 3 },
    repeat: { schedules: 10, workers: 10, seconds: 20, warmupSeconds: 3 },
    soak: { firesPerSecond: 1000, agents: 10, processes: 2, seconds: 600, warmupSeconds: 10, sampleEverySeconds: 30 },
    throughput: { agents: [1, 10, 100], executions: 50_000, shardsPerTrigger: 1000, peerProcesses: [1, 2, 4], peerConcurrency: [10, 100, 500] },
    etcd: { agents: 1, executions: 20_000, shardsPerTrigger: 1000, members: 3 },
    failover: { rounds: 6, agents: 4, shards: 12 },
    leaderFailover: { rounds: 5, agents: 3, processes: 3, shards: 6 },
    stall: {},
    drain: { agents: 4, shards: 8, seconds: 8 },
    scale: { agents: 5000, processes: 5, jobs: 100, shardsPerJob: 1000, heartbeatIntervalMs: 2000, leaseTtlMs: 8000 },
  },
  quick: {
    movement: [[9, 4], [100, 10]],
    fireLag: { rates: [100, 1000, 5000, 10000], agents: 10, processes: 2, seconds: 5, warmupSeconds: 2 },
    repeat: { schedules: 10, workers: 10, seconds: 6, warmupSeconds: 2 },
    soak: { firesPerSecond: 1000, agents: 10, processes: 2, seconds: 15, warmupSeconds: 2, sampleEverySeconds: 5 },
    throughput: { agents: [1, 10, 100], executions: 10_000, shardsPerTrigger: 1000, peerProcesses: [1, 2], peerConcurrency: [50, 200] },
    etcd: { agents: 1, executions: 5_000, shardsPerTrigger: 1000, members: 3 },
    failover: { rounds: 2, agents: 4, shards: 12 },
    leaderFailover: { rounds: 2, agents: 3, processes: 3, shards: 6 },
    stall: {},
    drain: { agents: 4, shards: 8, seconds: 4 },
    scale: { agents: 1000, processes: 2, jobs: 20, shardsPerJob: 1000, heartbeatIntervalMs: 2000, leaseTtlMs: 8000 },
  },
  smoke: {
    movement: [[9, 4]],
    fireLag: { rates: [20], agents: 2, processes: 1, seconds: 2, warmupSeconds: 1 },
    repeat: { schedules: 2, workers: 2, seconds: 2, warmupSeconds: 1 },
    soak: { firesPerSecond: 20, agents: 2, processes: 1, seconds: 2, warmupSeconds: 1, sampleEverySeconds: 1 },
    throughput: { agents: [1], executions: 2000, shardsPerTrigger: 1000, peerProcesses: [1], peerConcurrency: [100] },
    etcd: { agents: 1, executions: 1000, shardsPerTrigger: 500, members: 3 },
    failover: { rounds: 1, agents: 2, shards: 4 },
    leaderFailover: { rounds: 1, agents: 2, processes: 2, shards: 4 },
    stall: { lockDurationMs: 1000, stalledIntervalMs: 500 },
    drain: { agents: 2, shards: 2, seconds: 2 },
    scale: { agents: 10, processes: 2, jobs: 2, shardsPerJob: 50, heartbeatIntervalMs: 500, leaseTtlMs: 2000 },
  },
};

/** Executions of the run the test suite's guard compares with the committed figure: the same in every mode. */
export const GUARD_EXECUTIONS = 10_000;
/** That run's row, by which test/bench.test.ts finds it in both results. */
export const GUARD_ROW = `CPU per execution, 1 agent, a fresh run of ${GUARD_EXECUTIONS.toLocaleString("en-US")} (the test suite's guard)`;
