/**
 * What a controller keeps of one execution's log at most, whatever its agent sends
 * (controller/core/execution-log.ts holds to it); an agent's own bounds may not exceed it.
 */
export const EXECUTION_LOG_LIMITS = {
  /** Lines kept per execution; the oldest go first. */
  maxLines: 10_000,
  /** Characters of text kept per execution (1 MiB of ASCII); the oldest lines go first. */
  maxChars: 1 << 20,
  /** Lines one ExecutionLog may carry (more is INVALID_ARGUMENT). */
  maxLinesPerChunk: 10_000,
  /** A line's text is cut to this many characters. */
  maxLineChars: 16_384,
  /** A line's stream name is cut to this many characters. */
  maxStreamChars: 16,
} as const;
