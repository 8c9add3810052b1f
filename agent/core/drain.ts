import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { AssignmentRef, AssignmentTable } from "./assignment-table.js";
import type { AgentEffect, AgentMessage, StopState } from "./events.js";
import type { ReportBook } from "./report-book.js";
import type { RunBook } from "./run-book.js";

/** How long a drained agent waits for the controller to close the stream after its half-close. */
export const HALF_CLOSE_WAIT_MS = 2_000;

/** What a drain needs of the agent core: its books, what it knows of the stream, and its steps. */
export interface DrainPort {
  readonly table: AssignmentTable;
  readonly runs: RunBook;
  readonly reports: ReportBook;
  readonly welcomed: boolean;
  /** A stream is open and its Hello sent, the Welcome not come yet. */
  readonly awaitingWelcome: boolean;
  readonly stopped: boolean;
  /** The sequence number of the last heartbeat sent on this stream. */
  readonly seqSent: bigint;
  /** The highest heartbeat sequence number acked on this stream. */
  readonly seqAcked: bigint;
  /** The last `now` stepped: a run's end, which ends the drain, carries no time of its own. */
  readonly lastStepAt: number;
  emit(effect: AgentEffect): void;
  log(level: "debug" | "info" | "warn", fields: Record<string, unknown>, message: string): void;
  /** Sends the reports waiting, so that the controller sees runs finish before their shards go. */
  flush(): void;
  send(message: AgentMessage): void;
  /** Sends a heartbeat now, off the cadence. */
  heartbeat(now: number): void;
  /** Sends a Release for shards nothing runs on any more (only within a session). */
  release(refs: AssignmentRef[]): void;
  stopAll(state: StopState, reason: string): void;
  /** The stream is half-closed: no heartbeat is due on it any more. */
  stopHeartbeats(): void;
  /** The drain is over: the agent stops. */
  stop(): void;
}

/**
 * A graceful leave (docs/protocol.md, step 10, "Goodbye: leaving"): every shard is revoked at
 * once and a Goodbye tells the controller. Until the controller has read it (a heartbeat sent
 * after the Goodbye is acked, so whatever it sent before has arrived) the agent releases nothing
 * and takes a Dispatch for a shard at the pair it holds, as it would have before the Goodbye: a
 * shard released at once would leave a run dispatched just before it to be refused and lost.
 * Then each shard is released as its last run ends, and once nothing runs the agent half-closes
 * and waits for the controller to end the stream. Runs still going when the grace ends are
 * aborted LOST; an agent that has no controller to tell leaves without a word, since its lease
 * moves its shards without it. Pure: the caller passes every time in.
 */
export class Drain {
  readonly #port: DrainPort;
  readonly #reason: string;
  readonly #graceMs: number;
  #graceEndsAt: number | undefined;
  /** The stream was half-closed: the drain ends when it closes, or at endAt. */
  #ending = false;
  #endAt: number | undefined;
  /**
   * The last heartbeat sent before the Goodbye on this stream: the ack of a later one says the
   * controller has read the Goodbye, and everything it sent before reading it has arrived.
   */
  #goodbyeAfterSeq: bigint | undefined;

  constructor(reason: string, graceMs: number, port: DrainPort) {
    this.#reason = reason;
    this.#graceMs = graceMs;
    this.#port = port;
  }

  /** The half-close went out: the stream takes nothing more. */
  get ending(): boolean {
    return this.#ending;
  }

  /** When the grace ends (monotonic ms); undefined once the drain is ending. */
  get graceEndsAt(): number | undefined {
    return this.#graceEndsAt;
  }

  /**
   * The controller has read the Goodbye on this stream, and everything it sent before reading it
   * has arrived: a heartbeat sent after the Goodbye was acked. From then on it sends no new work,
   * and a shard nothing runs on may be released.
   */
  get #goodbyeRead(): boolean {
    const port = this.#port;
    return port.welcomed && this.#goodbyeAfterSeq !== undefined && port.seqAcked > this.#goodbyeAfterSeq;
  }

  /**
   * A Dispatch the controller sent before it read the Goodbye may still come, and runs if it
   * names a shard at the pair held: until the Goodbye is read, the grace ends, or the drain ends.
   */
  get takesCrossedDispatch(): boolean {
    return !this.#ending && this.#graceEndsAt !== undefined && !this.#goodbyeRead;
  }

  /** When to stop waiting for the controller to end the half-closed stream. */
  get endAt(): number | undefined {
    return this.#endAt;
  }

  /** Starts the drain at `now`: every shard is revoked, and the controller told if one listens. */
  begin(now: number): void {
    const port = this.#port;
    this.#graceEndsAt = now + this.#graceMs;
    port.log("info", { reason: this.#reason, graceMs: this.#graceMs, running: port.runs.size }, "draining");
    port.table.revokeAll();
    port.emit({ kind: "assignments-changed" });
    if (port.welcomed) this.#sayGoodbye(now);
    else if (this.#nothingToHandBack()) this.#finish();
    this.maybeEnd(now);
  }

  /** A Welcome came during the drain: the new session hears the Goodbye too. */
  welcomed(now: number): void {
    this.#sayGoodbye(now);
    this.maybeEnd(now);
  }

  /** The stream ended: after the half-close that ends the drain, and so it does with nothing to hand back. */
  streamClosed(): void {
    // The next stream's controller is told again, and read again.
    this.#goodbyeAfterSeq = undefined;
    if (this.#ending || this.#nothingToHandBack()) this.#finish();
  }

  /** Steps the drain's deadlines at `now`. */
  tick(now: number): void {
    if (this.#graceEndsAt !== undefined && now >= this.#graceEndsAt) this.#graceOver(now);
    if (this.#endAt !== undefined && now >= this.#endAt) this.#finish();
  }

  /**
   * Once the controller has read the Goodbye, releases each shard nothing runs on, and once
   * nothing runs at all, half-closes. `now` is undefined when a report or an assignment change,
   * which carry no time, brought this about.
   */
  maybeEnd(now: number | undefined): void {
    const port = this.#port;
    // Before that, an add or a dispatch the controller sent before it read the Goodbye may still
    // be on its way: it must find its shard held and a stream that takes what it calls for.
    if (this.#ending || port.stopped || !this.#goodbyeRead) return;
    this.#releaseIdle();
    if (port.runs.size > 0) return;
    port.flush();
    this.#ending = true;
    this.#graceEndsAt = undefined;
    port.stopHeartbeats();
    port.log("info", {}, "drained; closing the stream");
    port.emit({ kind: "half-close" });
    this.#endAt = (now ?? port.lastStepAt) + HALF_CLOSE_WAIT_MS;
  }

  #sayGoodbye(now: number): void {
    this.#port.flush();
    this.#port.send({ kind: "goodbye", reason: this.#reason });
    this.#goodbyeAfterSeq = this.#port.seqSent;
    // Its ack, one round trip away, is the one the releases and the half-close wait for.
    this.#port.heartbeat(now);
  }

  /** Releases every revoking shard with nothing running, if any. */
  #releaseIdle(): void {
    const port = this.#port;
    const releases: AssignmentRef[] = [];
    for (const held of port.table.list()) {
      if (held.revoking && port.runs.countOn(held) === 0) {
        port.table.remove(held.job, held.shard);
        releases.push(held);
      }
    }
    if (releases.length === 0) return;
    port.release(releases);
    port.emit({ kind: "assignments-changed" });
  }

  /**
   * A draining agent with no controller to talk to, nothing running and no report to deliver
   * has nothing to wait for: its lease moves its shards without it. One whose Hello is out waits
   * for the Welcome (or the Welcome timeout): a controller that reads the Hello grants it shards
   * and runs, which only a Goodbye hands back at once.
   */
  #nothingToHandBack(): boolean {
    const port = this.#port;
    return !port.welcomed && !port.awaitingWelcome && port.runs.size === 0 && port.reports.unconfirmedCount === 0;
  }

  #graceOver(now: number): void {
    const port = this.#port;
    if (this.#ending || port.stopped) return;
    this.#graceEndsAt = undefined;
    port.log("warn", { running: port.runs.size }, "drain grace over: aborting what still runs");
    port.stopAll(ExecutionState.LOST, `the agent is shutting down; the drain grace of ${this.#graceMs} ms passed`);
    if (port.welcomed) {
      this.maybeEnd(now);
    } else {
      port.log("warn", {}, "no controller reachable within the drain grace; leaving without a goodbye");
      this.#finish();
    }
  }

  #finish(): void {
    if (this.#port.stopped) return;
    this.#port.stop();
    this.#graceEndsAt = undefined;
    this.#endAt = undefined;
    this.#port.emit({ kind: "drained" });
  }
}
