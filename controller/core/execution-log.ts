/**
 * Execution logs: what a run wrote, as its agent ships it with the run's updates
 * (ExecutionUpdate.log), merged into what the store keeps for the execution. Pure: each store
 * calls `mergeExecutionLog` inside its commit, so a log costs nothing where a run writes none.
 */
import { EXECUTION_LOG_LIMITS } from "../../shared/execution-log-limits.js";
import type { ExecutionLogChunk, ExecutionLogRecord } from "./store-port.js";

export { EXECUTION_LOG_LIMITS };

/**
 * The log after `chunk`: lines before its `keptFrom` dropped (its agent dropped them), lines
 * already held kept once (a resend changes nothing), new ones appended in number order, then the
 * oldest dropped past the controller's own bounds. `stored` is not changed.
 */
export function mergeExecutionLog(stored: ExecutionLogRecord | undefined, chunk: ExecutionLogChunk): ExecutionLogRecord {
  const base = stored ?? { executionId: chunk.executionId, keptFrom: 0, nextLine: 0, chars: 0, lines: [] };
  const keptFrom = Math.max(base.keptFrom, chunk.keptFrom);
  let lines = base.lines;
  let chars = base.chars;
  if (lines.length > 0 && lines[0]!.number < keptFrom) {
    const from = lines.findIndex((l) => l.number >= keptFrom);
    const cut = from === -1 ? lines.length : from;
    for (let i = 0; i < cut; i++) chars -= lines[i]!.text.length;
    lines = lines.slice(cut);
  }
  let nextLine = Math.max(base.nextLine, keptFrom);
  const added = [];
  for (let i = 0; i < chunk.lines.length; i++) {
    const number = chunk.firstLine + i;
    if (number < nextLine) continue;
    const line = chunk.lines[i]!;
    added.push({ ...line, number });
    chars += line.text.length;
    nextLine = number + 1;
  }
  if (added.length > 0) lines = [...lines, ...added];
  let first = 0;
  while (lines.length - first > EXECUTION_LOG_LIMITS.maxLines || (chars > EXECUTION_LOG_LIMITS.maxChars && lines.length - first > 0)) {
    chars -= lines[first]!.text.length;
    first++;
  }
  if (first > 0) lines = lines.slice(first);
  const oldest = lines.length > 0 ? lines[0]!.number : nextLine;
  return { executionId: base.executionId, keptFrom: Math.max(keptFrom, oldest), nextLine, chars, lines };
}

/** The lines of `log` numbered `afterLine` or more, at most `limit`, and where to go on from. */
export function readExecutionLog(
  log: ExecutionLogRecord | undefined,
  afterLine: number,
  limit: number,
): { lines: ExecutionLogRecord["lines"]; nextLine: number; dropped: number } {
  if (log === undefined) return { lines: [], nextLine: afterLine, dropped: 0 };
  const from = log.lines.findIndex((l) => l.number >= afterLine);
  const lines = from === -1 ? [] : log.lines.slice(from, from + limit);
  const nextLine = lines.length > 0 ? lines[lines.length - 1]!.number + 1 : Math.max(afterLine, from === -1 ? log.nextLine : afterLine);
  return { lines, nextLine, dropped: log.keptFrom };
}
