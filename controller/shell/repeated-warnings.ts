import type { Logger } from "../../shared/logging.js";

/** Default of RepeatedWarnings' window. */
export const REPEAT_WINDOW_MS = 60_000;

interface Window {
  /** Lines folded since the one logged. */
  count: number;
  fields: Record<string, unknown>;
  summary: (count: number) => string;
  timer: NodeJS.Timeout;
}

/**
 * Warn lines that one cause repeats: the first is logged at once, the repeats within the window
 * after it are folded into one line with their count when the window ends. A job that no agent
 * can run misfires on every fire, and one line per fire would bury the line that says why.
 */
export class RepeatedWarnings {
  readonly #open = new Map<string, Window>();

  constructor(
    private readonly log: Logger,
    private readonly windowMs = REPEAT_WINDOW_MS,
  ) {}

  /**
   * Logs `message` unless a line of the same `key` was logged within the window; then counts it,
   * and `summary(count)` is logged (with `fields` and `repeated: count`) when the window ends.
   */
  warn(key: string, fields: Record<string, unknown>, message: string, summary: (count: number) => string): void {
    const open = this.#open.get(key);
    if (open !== undefined) {
      open.count++;
      return;
    }
    this.log.warn(fields, message);
    const timer = setTimeout(() => this.#close(key), this.windowMs);
    timer.unref();
    this.#open.set(key, { count: 0, fields, summary, timer });
  }

  /** Logs what is still folded, at once (the controller is stopping). */
  flush(): void {
    for (const key of [...this.#open.keys()]) this.#close(key);
  }

  #close(key: string): void {
    const open = this.#open.get(key);
    if (open === undefined) return;
    this.#open.delete(key);
    clearTimeout(open.timer);
    if (open.count > 0) this.log.warn({ ...open.fields, repeated: open.count }, open.summary(open.count));
  }
}
