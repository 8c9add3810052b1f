
/** What waits for its instant: a run, or the agent's check of its lease around one. */
export interface Startable {
  start(): void;
}

interface Group {
  /** Wall-clock Unix ms at which the group starts: its fire instant, or sooner on a skewed clock. */
  startAt: number;
  runs: Startable[];
}

/**
 * Starts runs that were dispatched ahead of their fire instant at that instant by this process's
 * wall clock, never before it. Runs of one instant start back to back from one timer, before any
 * of them reports or completes: with a timer per run, each run's completion (a microtask drain)
 * would come between two starts and add to the next run's fire lag. One instance serves every
 * agent of a process, so agents sharing a process (as the benchmark's do) share the timers too.
 */
export class OnTimeStarts {
  readonly #groups = new Map<number, Group>();

  constructor(private readonly wallClock: () => number = wallClockMs) {}

  /**
   * Starts `run` at `fireTime` (Unix ms), now if that has passed, and in any case no later than
   * `maxWaitMs` from now: the longest the controller dispatches ahead, so that a skewed clock
   * cannot hold work back. A run stopped meanwhile ignores its start.
   */
  add(fireTime: number, maxWaitMs: number, run: Startable): void {
    const now = this.wallClock();
    const group = this.#groups.get(fireTime);
    if (group !== undefined) {
      group.runs.push(run);
      return;
    }
    if (fireTime <= now) {
      run.start();
      return;
    }
    const created: Group = { startAt: Math.min(fireTime, now + maxWaitMs), runs: [run] };
    this.#groups.set(fireTime, created);
    this.#arm(fireTime, created);
  }

  #arm(fireTime: number, group: Group): void {
    const remaining = group.startAt - this.wallClock();
    if (remaining <= 0) {
      this.#groups.delete(fireTime);
      for (const run of group.runs) run.start();
    } else if (remaining <= POLL_WITHIN_MS) {
      // Timers count whole milliseconds by the event loop's coarser clock, so one wakes up to a
      // millisecond early or late: the last stretch is polled, once per event-loop turn.
      setImmediate(() => this.#arm(fireTime, group));
    } else {
      // Waiting work does not keep a process alive by itself: an agent's stream or reconnect
      // timer does while the agent runs, and a stopped agent's runs are stopped anyway.
      setTimeout(() => this.#arm(fireTime, group), Math.floor(remaining - POLL_WITHIN_MS)).unref();
    }
  }
}

/** How close to its instant a group stops waiting on a timer and polls instead. */
const POLL_WITHIN_MS = 1.5;

/** Wall-clock Unix milliseconds with a fraction. Fire instants are wall-clock time. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/** The instance every agent of this process uses. */
export const processStarts = new OnTimeStarts();
