/**
 * What starts the runs that waited for their instant: each is named by an id, so that a process
 * with tens of thousands of runs a second makes no object per run to wait.
 */
export interface Starter {
  /** The instant of run `id` came; a run stopped meanwhile ignores its start. */
  start(id: string): void;
}

interface Group {
  /** Wall-clock Unix ms at which the group starts: its fire instant, or sooner on a skewed clock. */
  startAt: number;
  /** Who starts each run of the group, beside its id, in the order added. */
  starters: Starter[];
  ids: string[];
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
   * Has `starter` start run `id` at `fireTime` (Unix ms), now if that has passed, and in any case
   * no later than `maxWaitMs` from now: the longest the controller dispatches ahead, so that a
   * skewed clock cannot hold work back.
   */
  add(fireTime: number, maxWaitMs: number, starter: Starter, id: string): void {
    const group = this.#groups.get(fireTime);
    if (group !== undefined) {
      group.starters.push(starter);
      group.ids.push(id);
      return;
    }
    const now = this.wallClock();
    if (fireTime <= now) {
      starter.start(id);
      return;
    }
    const created: Group = { startAt: Math.min(fireTime, now + maxWaitMs), starters: [starter], ids: [id] };
    this.#groups.set(fireTime, created);
    this.#arm(fireTime, created);
  }

  #arm(fireTime: number, group: Group): void {
    const remaining = group.startAt - this.wallClock();
    if (remaining <= 0) {
      this.#groups.delete(fireTime);
      for (let i = 0; i < group.ids.length; i++) group.starters[i]!.start(group.ids[i]!);
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
