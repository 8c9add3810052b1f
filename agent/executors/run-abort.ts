/**
 * A run's AbortSignal (HandlerContext.signal), made only when something reads it. Most short runs
 * never do, and an AbortController (an EventTarget whose prototype is set at creation) costs more
 * than the rest of a run's start, and a good share of its garbage. Aborted before anyone read it,
 * it keeps the reason: a signal read afterwards is aborted already, with that reason, as the
 * signal made at the start would be by then.
 */
export class RunAbort {
  #signal: AbortSignal | undefined;
  #controller: AbortController | undefined;
  #aborted = false;
  #reason: unknown;

  /** The signal, the same one at every read. */
  get signal(): AbortSignal {
    if (this.#signal === undefined) {
      if (this.#aborted) {
        this.#signal = AbortSignal.abort(this.#reason);
      } else {
        this.#controller = new AbortController();
        this.#signal = this.#controller.signal;
      }
    }
    return this.#signal;
  }

  /** True once abort() was called, whether or not the signal was read. */
  get aborted(): boolean {
    return this.#aborted;
  }

  /** What abort() was given; undefined before. */
  get reason(): unknown {
    return this.#reason;
  }

  /** Aborts the signal (its listeners run now), or the one made at the next read; only the first call counts. */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
  }
}
