/** Options of a Backoff. */
export interface BackoffOptions {
  /** Upper bound of the first wait, in milliseconds. */
  initialMs: number;
  /** Upper bound of every wait, in milliseconds. */
  maxMs: number;
  /** A number in [0, 1); injectable so tests can pin the jitter. Default Math.random. */
  random?: () => number;
}

/**
 * Exponential backoff with full jitter: attempt n waits a uniformly random time in
 * [0, min(maxMs, initialMs * 2^n)). Full jitter spreads the reconnects of many agents after a
 * controller restart instead of having them all knock at the same instant.
 */
export class Backoff {
  #attempt = 0;
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;

  constructor(options: BackoffOptions) {
    this.#initialMs = Math.max(0, options.initialMs);
    this.#maxMs = Math.max(this.#initialMs, options.maxMs);
    this.#random = options.random ?? Math.random;
  }

  /** How many waits were handed out since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The ceiling of the next wait, without consuming it. */
  get ceilingMs(): number {
    // Capped exponent: 2^31 already exceeds any sane maxMs, and avoids Infinity.
    return Math.min(this.#maxMs, this.#initialMs * 2 ** Math.min(this.#attempt, 31));
  }

  /** The next wait, in whole milliseconds; below `capMs` too, when given (still with full jitter). */
  next(capMs = Number.POSITIVE_INFINITY): number {
    const ceiling = Math.min(this.ceilingMs, capMs);
    this.#attempt++;
    return Math.floor(this.#random() * ceiling);
  }

  /** Starts over from initialMs, after a success. */
  reset(): void {
    this.#attempt = 0;
  }
}
