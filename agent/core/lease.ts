/** How many unanswered heartbeats a Lease remembers; older send times are forgotten. */
export const DEFAULT_MAX_PENDING = 1024;

/**
 * The agent's own view of its lease, in monotonic milliseconds.
 *
 * The lease runs from the moment the agent *sent* the heartbeat that an ack answers, never from
 * the moment the ack arrived: the controller renewed its own view when it received that
 * heartbeat, which is later, so the agent's lease always ends first and the shard's next owner
 * can never overlap with it. Pure arithmetic: the caller passes every time in.
 */
export class Lease {
  readonly #sentAt = new Map<bigint, number>();
  readonly #maxPending: number;
  #expiresAt = Number.NEGATIVE_INFINITY;

  constructor(maxPending = DEFAULT_MAX_PENDING) {
    this.#maxPending = Math.max(1, maxPending);
  }

  /** When the lease ends (monotonic ms); -Infinity before the first ack. */
  get expiresAt(): number {
    return this.#expiresAt;
  }

  /** Records that heartbeat `seq` left at `at`. */
  sent(seq: bigint, at: number): void {
    this.#sentAt.set(seq, at);
    // Maps iterate in insertion order, so the first key is the oldest heartbeat.
    while (this.#sentAt.size > this.#maxPending) {
      const oldest = this.#sentAt.keys().next().value as bigint;
      this.#sentAt.delete(oldest);
    }
  }

  /**
   * Applies the ack of heartbeat `seq`: the lease then lasts until its send time plus `ttlMs`,
   * unless it already lasts longer (acks may answer heartbeats out of order after a forget).
   * Returns false, changing nothing, for a seq never sent or already forgotten.
   */
  ack(seq: bigint, ttlMs: number): boolean {
    const sentAt = this.#sentAt.get(seq);
    if (sentAt === undefined) return false;
    for (const key of this.#sentAt.keys()) {
      if (key <= seq) this.#sentAt.delete(key);
    }
    this.#expiresAt = Math.max(this.#expiresAt, sentAt + ttlMs);
    return true;
  }

  /** True while the lease holds at `now`. */
  valid(now: number): boolean {
    return now < this.#expiresAt;
  }

  /**
   * Forgets the send times of unanswered heartbeats (their stream is gone and sequence numbers
   * start over on the next one) but keeps the expiry: a lease earned on an old stream still
   * stands until it runs out.
   */
  forgetPending(): void {
    this.#sentAt.clear();
  }

  /** Heartbeats sent and not yet answered. */
  get pending(): number {
    return this.#sentAt.size;
  }
}
