import { Backoff } from "./backoff.js";

/** Settings of a ReconnectPlan. */
export interface ReconnectOptions {
  /** The controller replicas, tried in turn while none answers; at least one. */
  addresses: readonly string[];
  /** The backoff: full jitter from initialMs, doubling up to maxMs. */
  initialMs: number;
  maxMs: number;
  /** A number in [0, 1), for the jitter. */
  random: () => number;
}

/**
 * When the agent opens its next stream, and to which controller (docs/protocol.md,
 * "Reconnecting"): after a backoff with full jitter that a Welcome or a Redirect resets; to the
 * next replica after a stream that never got a Welcome or that this side closed because the
 * controller stopped answering; to the leader a Redirect names. A welcomed stream that the
 * controller ended keeps the address: that controller may just be restarting. Pure: the caller
 * passes every time in.
 */
export class ReconnectPlan {
  readonly #addresses: readonly string[];
  readonly #backoff: Backoff;
  #address: string;
  /** The next of the addresses to try after the current one fails. */
  #next = 1;
  /** Set by a Redirect: the stream it closes is not a failure of the leader's address. */
  #redirected = false;
  /** Set when this side closed a stream because the controller stopped answering. */
  #unresponsive = false;
  #connectAt: number | undefined;

  constructor(options: ReconnectOptions) {
    this.#addresses = options.addresses;
    this.#address = options.addresses[0]!;
    this.#backoff = new Backoff(options);
  }

  /** The controller address in use. */
  get address(): string {
    return this.#address;
  }

  /** A Redirect closes the open stream: its end is not a failure of the leader's address. */
  get redirecting(): boolean {
    return this.#redirected;
  }

  /** When to open the next stream; undefined while one is open, or before start. */
  get connectAt(): number | undefined {
    return this.#connectAt;
  }

  /** Connect at `now`, unless a connect is already planned. */
  start(now: number): void {
    this.#connectAt ??= now;
  }

  /** A stream was opened: nothing is planned until it ends. */
  opened(): void {
    this.#connectAt = undefined;
  }

  /** Progress: a Welcome came. */
  welcomed(): void {
    this.#backoff.reset();
  }

  /** This side gives up on the stream because the controller stopped answering: try another next. */
  unresponsive(): void {
    this.#unresponsive = true;
  }

  /** A Redirect names the leader: it is tried next, without waiting out a grown backoff. */
  redirect(leader: string): void {
    this.#redirected = true;
    this.#backoff.reset();
    this.#address = leader;
  }

  /**
   * The stream ended at `now`: picks the address and the time of the next attempt. `capMs`
   * bounds the wait while the agent has something to lose by waiting (see AgentCore).
   */
  ended(welcomed: boolean, now: number, capMs?: number): void {
    const redirected = this.#redirected;
    const unresponsive = this.#unresponsive;
    this.#redirected = false;
    this.#unresponsive = false;
    this.#connectAt = now + this.#backoff.next(capMs);
    if (redirected || (welcomed && !unresponsive)) return;
    if (this.#addresses.length === 1 && this.#address === this.#addresses[0]) return;
    this.#address = this.#addresses[this.#next % this.#addresses.length]!;
    this.#next++;
  }
}
