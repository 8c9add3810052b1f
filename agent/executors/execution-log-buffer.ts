/**
 * What one execution writes (ctx.log, a script's stdout and stderr, a Kubernetes Job's pod log
 * tail), kept by the agent within its bounds and shipped with the run's updates
 * (ExecutionUpdate.log, docs/protocol.md "Execution logs"). Lines are numbered from 0 in the
 * order written; past a bound the oldest are dropped, and `kept_from` tells the controller so.
 */
import type { ExecutionLog, LogLine } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { truncateUtf8 } from "./output-tail.js";

/** How much of an execution's log the agent keeps: `--log-max-bytes` and `--log-max-lines`. */
export interface ExecutionLogBounds {
  /** UTF-8 bytes of text kept per execution; the oldest lines go first. */
  maxBytes: number;
  /** Lines kept per execution; the oldest go first. */
  maxLines: number;
}

/** The agent's defaults: 64 KiB and 1,000 lines per execution. */
export const DEFAULT_LOG_BOUNDS: ExecutionLogBounds = { maxBytes: 64 * 1024, maxLines: 1000 };

/** The controller cuts longer lines; the agent cuts them first, so it never ships what is cut. */
const MAX_LINE_BYTES = 16_384;

interface Kept {
  time: number;
  stream: string;
  text: string;
  bytes: number;
}

export class ExecutionLogBuffer {
  readonly #bounds: ExecutionLogBounds;
  readonly #clock: () => number;
  /** The lines kept, oldest first: numbered `#first` on. */
  #lines: Kept[] = [];
  #first = 0;
  #bytes = 0;
  /** The number of the first line not yet shipped. */
  #unsent = 0;
  /** The kept_from last shipped: a drop since is news even without new lines. */
  #sentKeptFrom = 0;
  /** A partial last line per stream, waiting for its line break. */
  readonly #partial = new Map<string, string>();

  constructor(bounds: ExecutionLogBounds = DEFAULT_LOG_BOUNDS, clock: () => number = Date.now) {
    this.#bounds = bounds;
    this.#clock = clock;
  }

  /** Adds whole lines of `text` (a trailing partial line waits for the rest, or for flush). */
  write(stream: string, text: string): void {
    const pending = (this.#partial.get(stream) ?? "") + text;
    const parts = pending.split(/\r?\n/);
    const rest = parts.pop()!;
    for (const line of parts) this.line(stream, line);
    if (rest === "") this.#partial.delete(stream);
    else if (Buffer.byteLength(rest) > MAX_LINE_BYTES) {
      this.#partial.delete(stream);
      this.line(stream, rest);
    } else this.#partial.set(stream, rest);
  }

  /** Adds one line as it is. */
  line(stream: string, text: string): void {
    const cut = truncateUtf8(text, Math.min(MAX_LINE_BYTES, this.#bounds.maxBytes));
    const bytes = Buffer.byteLength(cut);
    this.#lines.push({ time: this.#clock(), stream, text: cut, bytes });
    this.#bytes += bytes;
    let drop = 0;
    while (this.#lines.length - drop > this.#bounds.maxLines || (this.#bytes > this.#bounds.maxBytes && this.#lines.length - drop > 1)) {
      this.#bytes -= this.#lines[drop]!.bytes;
      drop++;
    }
    if (drop > 0) {
      this.#lines = this.#lines.slice(drop);
      this.#first += drop;
    }
  }

  /** True when lines wait to be shipped. */
  get pending(): boolean {
    return this.#partial.size > 0 || this.#first + this.#lines.length > this.#unsent;
  }

  /**
   * The lines not shipped yet, as an ExecutionLog, now counted as shipped; undefined when there
   * is nothing new. `final`: partial lines count as whole (the run is over).
   */
  takeUnsent(final = false): ExecutionLog | undefined {
    if (final) {
      for (const [stream, rest] of this.#partial) this.line(stream, rest);
      this.#partial.clear();
    }
    const end = this.#first + this.#lines.length;
    const from = Math.max(this.#unsent, this.#first);
    if (from >= end && this.#first === this.#sentKeptFrom) return undefined;
    this.#unsent = end;
    this.#sentKeptFrom = this.#first;
    const lines: LogLine[] = this.#lines.slice(from - this.#first).map((l) => ({
      $typeName: "shardline.v1.LogLine",
      timeUnixMs: BigInt(Math.trunc(l.time)),
      stream: l.stream,
      text: l.text,
    }));
    return { $typeName: "shardline.v1.ExecutionLog", firstLine: BigInt(from), lines, keptFrom: BigInt(this.#first) };
  }

  /** Every line kept, as text (a test's and a listener's view). */
  text(): string {
    return this.#lines.map((l) => l.text).join("\n");
  }
}
