/** Options of a RateLimiter. */
export interface RateLimitOptions {
  /** Calls per second each client may make, on average. */
  perSecond: number;
  /** Calls a client may make at once after being idle (the bucket's size). */
  burst: number;
  /** Clients tracked at most; the one idle longest is forgotten first (it starts again with a full bucket). */
  maxClients?: number;
  /** Milliseconds, monotonic. Default performance.now. */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A token bucket per client: each call takes a token, tokens come back at `perSecond`, and a
 * client holds at most `burst`. A client is whatever key the caller chooses (a token's name, an
 * address). The clients tracked are bounded, so a flood of new addresses cannot grow it.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #perMs: number;
  readonly #burst: number;
  readonly #maxClients: number;
  readonly #now: () => number;

  constructor(options: RateLimitOptions) {
    if (!(options.perSecond > 0) || !(options.burst >= 1)) throw new RangeError("RateLimiter: perSecond > 0 and burst >= 1");
    this.#perMs = options.perSecond / 1000;
    this.#burst = options.burst;
    this.#maxClients = options.maxClients ?? 10_000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Takes a token for `client`: 0 when the call may go ahead, else how many ms until it may. */
  take(client: string): number {
    const now = this.#now();
    let bucket = this.#buckets.get(client);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.#maxClients) this.#buckets.delete(this.#buckets.keys().next().value!);
      bucket = { tokens: this.#burst, at: now };
    } else {
      // Re-inserted below, so the map's order is by last use and the first entry is the idlest.
      this.#buckets.delete(client);
      bucket.tokens = Math.min(this.#burst, bucket.tokens + (now - bucket.at) * this.#perMs);
      bucket.at = now;
    }
    this.#buckets.set(client, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - bucket.tokens) / this.#perMs);
  }

  /** Clients tracked now. */
  get size(): number {
    return this.#buckets.size;
  }
}
