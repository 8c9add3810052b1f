/** How much of a script's stdout and stderr, or of an HTTP response body, a run keeps: the last 4 KiB. */
export const OUTPUT_TAIL_BYTES = 4096;

/**
 * The last `limit` bytes of a stream, kept while it flows: older chunks are dropped as new ones
 * arrive, so a chatty process costs at most `limit` plus one chunk of memory.
 */
export class OutputTail {
  readonly #limit: number;
  #chunks: Buffer[] = [];
  #bytes = 0;

  constructor(limit = OUTPUT_TAIL_BYTES) {
    this.#limit = limit;
  }

  /** Adds the next chunk of the stream. */
  push(chunk: Buffer | string): void {
    const buffer = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    if (buffer.length === 0) return;
    this.#chunks.push(buffer);
    this.#bytes += buffer.length;
    // Drop whole chunks while what remains still covers the limit.
    while (this.#chunks.length > 1 && this.#bytes - this.#chunks[0]!.length >= this.#limit) {
      this.#bytes -= this.#chunks.shift()!.length;
    }
  }

  /** The last `maxBytes` (at most the limit) bytes as text, never starting inside a character. */
  text(maxBytes = this.#limit): string {
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
    if (this.#chunks.length > 1) this.#chunks = [all];
    return tailOfBytes(all, Math.min(maxBytes, this.#limit));
  }
}

/** The longest prefix of `text` that fits in `maxBytes` of UTF-8, never cutting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  // A UTF-16 unit never takes more than 3 UTF-8 bytes, so short strings need no encoding.
  if (text.length * 3 <= maxBytes) return text;
  const { read } = encoder.encodeInto(text, new Uint8Array(maxBytes));
  return text.slice(0, read);
}

/** The longest suffix of `text` that fits in `maxBytes` of UTF-8, never cutting a character. */
export function tailUtf8(text: string, maxBytes: number): string {
  if (text.length * 3 <= maxBytes) return text;
  return tailOfBytes(Buffer.from(text), maxBytes);
}

/**
 * `prefix: tail`, cut to `maxBytes` by dropping the start of the tail rather than its end: the
 * last lines of a process's stderr or of an error page say what went wrong. Trailing line
 * breaks of the tail are dropped; an empty tail leaves the prefix alone.
 */
export function withTail(prefix: string, tail: string, maxBytes: number): string {
  const trimmed = trimLineBreaks(tail);
  if (trimmed === "") return truncateUtf8(prefix, maxBytes);
  const head = `${prefix}: `;
  const room = maxBytes - Buffer.byteLength(head);
  if (room <= 0) return truncateUtf8(prefix, maxBytes);
  return head + tailUtf8(trimmed, room);
}

/** Text without its trailing line breaks: `echo done` reports "done", not "done\n". */
export function trimLineBreaks(text: string): string {
  return text.replace(/[\r\n]+$/, "");
}

const encoder = new TextEncoder();

function tailOfBytes(bytes: Buffer, maxBytes: number): string {
  let start = Math.max(0, bytes.length - maxBytes);
  // Skip UTF-8 continuation bytes (0b10xxxxxx): the tail starts at a character boundary.
  while (start < bytes.length && (bytes[start]! & 0xc0) === 0x80) start++;
  return bytes.toString("utf8", start);
}
