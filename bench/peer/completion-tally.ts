/**
 * The parent's count of one throughput run's completions, from the cumulative counts its worker
 * processes report over IPC. Nothing here polls Redis: each worker counts its own `completed`
 * events.
 *
 * A worker reports once every `reportEvery` completions, which keeps IPC off BullMQ's hot path but
 * leaves up to `reportEvery - 1` completions per worker unreported. Once those could finish the
 * run (`nearEnd`), the parent asks every worker to report each completion as it happens
 * ("eager"), so the last one is seen when it happens and not at some later batch that never comes.
 */
export class CompletionTally {
  private readonly counts: number[];
  private lastAt: number | undefined;

  constructor(
    readonly jobs: number,
    readonly processes: number,
    readonly reportEvery: number,
  ) {
    this.counts = Array.from({ length: processes }, () => 0);
  }

  /**
   * Worker `worker` (0-based) has completed `completed` jobs in all, the last at `lastCompletedAt`
   * (wall-clock ms). Counts are cumulative, so a report that arrives late changes nothing.
   */
  record(worker: number, completed: number, lastCompletedAt: number): void {
    if (!Number.isInteger(worker) || worker < 0 || worker >= this.processes) {
      throw new Error(`benchmark: a completion report names worker ${worker}; workers are 0-${this.processes - 1}`);
    }
    this.counts[worker] = Math.max(this.counts[worker]!, completed);
    if (completed > 0) this.lastAt = Math.max(this.lastAt ?? lastCompletedAt, lastCompletedAt);
  }

  /** Completions reported so far, over every worker. */
  get completed(): number {
    return this.counts.reduce((sum, count) => sum + count, 0);
  }

  get done(): boolean {
    return this.completed >= this.jobs;
  }

  /** Whether the completions workers may still hold unreported could be all that is left. */
  get nearEnd(): boolean {
    return this.jobs - this.completed <= this.processes * (this.reportEvery - 1);
  }

  /** When the latest reported completion happened (wall-clock ms); undefined before any. */
  get lastCompletedAt(): number | undefined {
    return this.lastAt;
  }
}
