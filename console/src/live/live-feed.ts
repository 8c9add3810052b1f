import type { AdminClient } from "../api/admin-client.js";
import { errorText, isUnauthenticated, isUnimplemented } from "../api/errors.js";
import type { LiveState } from "./live-state.js";
import { snapshotFromLists } from "./unary-snapshot.js";

/** How the console hears of changes: a watch, polling (a controller without Watch), or neither for now. */
export type FeedMode =
  | { kind: "connecting" }
  | { kind: "live" }
  | { kind: "polling" }
  | { kind: "retrying"; error: string; inMs: number };

/** How often a controller without Watch is asked again. */
export const POLL_INTERVAL_MS = 2000;

/** Executions a watch's snapshot holds: the newest, for the pages that list recent runs. */
const EXECUTION_SNAPSHOT = 200;

/**
 * The wait before the `attempt`th reconnection (from 0): 0.5 s doubling to 10 s, each spread by
 * ±20% (`random` in [0, 1)) so that the consoles a controller restart cut off do not all call
 * back in the same instant.
 */
export function reconnectDelayMs(attempt: number, random: number): number {
  const base = Math.min(10_000, 500 * 2 ** Math.min(attempt, 10));
  return Math.round(base * (0.8 + 0.4 * random));
}

/** What the feed tells its owner. */
export interface LiveFeedEvents {
  mode(mode: FeedMode): void;
  /** The controller refused the token: the feed has stopped. */
  unauthenticated(error: unknown): void;
}

/**
 * Keeps a LiveState current: a Watch from the state's last cursor (a snapshot the first time),
 * every message applied; on a stream error, called again after a backoff from the last cursor;
 * against a controller that does not serve Watch, the unary lists every POLL_INTERVAL_MS instead.
 */
export class LiveFeed {
  readonly #abort = new AbortController();

  constructor(
    private readonly client: AdminClient,
    private readonly state: LiveState,
    private readonly events: LiveFeedEvents,
  ) {}

  start(): void {
    void this.#run();
  }

  stop(): void {
    this.#abort.abort();
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let attempt = 0;
    this.events.mode({ kind: "connecting" });
    while (!signal.aborted) {
      try {
        const stream = this.client.watch({ cursor: this.state.cursor, executionSnapshotLimit: EXECUTION_SNAPSHOT }, { signal });
        for await (const message of stream) {
          this.state.apply(message);
          if (attempt > 0 || message.synced) this.events.mode({ kind: "live" });
          attempt = 0;
        }
        // The controller ended the watch (shutting down, a leader change): call again at once.
      } catch (error) {
        if (signal.aborted) return;
        if (isUnauthenticated(error)) {
          this.events.unauthenticated(error);
          return;
        }
        if (isUnimplemented(error)) {
          await this.#poll(signal);
          return;
        }
        const inMs = reconnectDelayMs(attempt++, Math.random());
        this.events.mode({ kind: "retrying", error: errorText(error), inMs });
        await sleep(inMs, signal);
      }
    }
  }

  async #poll(signal: AbortSignal): Promise<void> {
    this.events.mode({ kind: "polling" });
    let attempt = 0;
    while (!signal.aborted) {
      try {
        const [jobs, agents, assignments, executions] = await Promise.all([
          this.client.listJobs({}, { signal }),
          this.client.listAgents({}, { signal }),
          this.client.listAssignments({}, { signal }),
          this.client.listExecutions({ limit: 1000 }, { signal }),
        ]);
        const lists = { jobs: jobs.jobs, agents: agents.agents, assignments, executions: executions.executions };
        this.state.apply(snapshotFromLists(lists, location.host, Date.now()));
        if (attempt > 0) this.events.mode({ kind: "polling" });
        attempt = 0;
        await sleep(POLL_INTERVAL_MS, signal);
      } catch (error) {
        if (signal.aborted) return;
        if (isUnauthenticated(error)) {
          this.events.unauthenticated(error);
          return;
        }
        const inMs = reconnectDelayMs(attempt++, Math.random());
        this.events.mode({ kind: "retrying", error: errorText(error), inMs });
        await sleep(inMs, signal);
      }
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
