import type { ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";

/**
 * The sequence number that stands for the Hello. The Welcome answers it the way an ack answers
 * a heartbeat: the controller grants a lease when it accepts a Hello, and processes the Hello's
 * execution reports before it welcomes, so the Welcome both starts the lease (from the Hello's
 * send time) and confirms those reports. Heartbeats count from 1.
 */
export const HELLO_SEQ = 0n;

/** Reports sent in one message (or listed in the Hello): confirmed by the ack of `seq`. */
interface SentBatch {
  seq: bigint;
  updates: readonly ExecutionUpdate[];
}

/**
 * The agent's execution reports on their way (docs/protocol.md step 7): those of this turn, not
 * sent yet (the outbox), and the terminal ones sent and not yet confirmed. The stream is ordered
 * and the controller acks a heartbeat only once everything before it is durable, so a report sent
 * before heartbeat N is confirmed by the ack of N, and one listed in a Hello by its Welcome.
 * Unconfirmed reports go into the next Hello. Pure bookkeeping.
 */
export class ReportBook {
  /** The latest terminal report of each execution, until confirmed. */
  readonly #unconfirmed = new Map<string, ExecutionUpdate>();
  /**
   * What was sent on the current stream, by the seq whose ack confirms it, in the order sent (so
   * seqs never decrease): an ack confirms a prefix. A report counts as confirmed only while it is
   * still its execution's latest.
   */
  #sent: SentBatch[] = [];
  #outbox: ExecutionUpdate[] = [];

  /** Takes a report; returns true when the outbox was empty (a flush is due at the turn's end). */
  add(update: ExecutionUpdate): boolean {
    if (update.state !== ExecutionState.RUNNING) this.#unconfirmed.set(update.executionId, update);
    this.#outbox.push(update);
    return this.#outbox.length === 1;
  }

  /** Terminal reports not yet confirmed. */
  get unconfirmedCount(): number {
    return this.#unconfirmed.size;
  }

  /** True when the outbox holds something. */
  get pending(): boolean {
    return this.#outbox.length > 0;
  }

  /**
   * Empties the outbox into one batch to send before heartbeat `nextSeq`, which confirms it. A
   * run that started and ended within the batch needs only its terminal report, which carries
   * its start time too.
   */
  takeBatch(nextSeq: bigint): ExecutionUpdate[] {
    const ended = new Set<string>();
    for (const update of this.#outbox) if (update.state !== ExecutionState.RUNNING) ended.add(update.executionId);
    // A RUNNING that carries log lines stays: its lines are not in the terminal update.
    const updates =
      ended.size === 0 ? this.#outbox : this.#outbox.filter((u) => u.state !== ExecutionState.RUNNING || !ended.has(u.executionId) || u.log !== undefined);
    this.#outbox = [];
    if (ended.size > 0) this.#sent.push({ seq: nextSeq, updates });
    return updates;
  }

  /** Drops the outbox: without a stream, the next Hello lists what it held. */
  dropOutbox(): void {
    this.#outbox = [];
  }

  /** The unconfirmed reports for a Hello, each then confirmed by its Welcome; the outbox is dropped, the Hello covers it. */
  forHello(): ExecutionUpdate[] {
    this.#outbox = [];
    const updates = [...this.#unconfirmed.values()];
    this.#sent = [{ seq: HELLO_SEQ, updates }];
    return updates;
  }

  /** The ack of `seq` (or the Welcome, for HELLO_SEQ) arrived: what was sent before it is confirmed. */
  confirm(seq: bigint): void {
    let confirmed = 0;
    for (; confirmed < this.#sent.length && this.#sent[confirmed]!.seq <= seq; confirmed++) {
      for (const update of this.#sent[confirmed]!.updates) {
        if (this.#unconfirmed.get(update.executionId) === update) this.#unconfirmed.delete(update.executionId);
      }
    }
    if (confirmed > 0) this.#sent.splice(0, confirmed);
  }

  /** The stream ended: nothing sent on it will be confirmed; the next Hello lists it all again. */
  streamEnded(): void {
    this.#outbox = [];
    this.#sent = [];
  }
}
