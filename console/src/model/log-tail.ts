import type { GetExecutionLogsResponse } from "../../../shared/gen/shardline/v1/admin_service_pb.js";

/** The most lines the execution page keeps shown; older ones leave the page as new ones come. */
export const MAX_SHOWN_LINES = 2000;

/** Lines asked for in one call: never more than the page would show. */
export const LINES_PER_CALL = MAX_SHOWN_LINES;

/** One line of the log as the page shows it. */
export interface ShownLine {
  /** Its number in the execution's log (ExecutionLogLine.number), unique: the line's key. */
  number: number;
  /** Unix ms on the agent's clock; 0 when unknown. */
  time: number;
  /** "log", "stdout", "stderr" or "pod". */
  stream: string;
  text: string;
  /**
   * Lines the log no longer holds between the line before and this one: dropped by the
   * controller's bound while the page followed, or lost on the way. 0 for none.
   */
  missingBefore: number;
}

/** An execution's log as far as the page has read it, what it shows of it, and where to go on from. */
export interface LogTail {
  /** Lines before the first one read that the log no longer held (the agent's or the controller's bounds). */
  dropped: number;
  /** Lines read but no longer shown: more than MAX_SHOWN_LINES came. */
  hidden: number;
  /** The lines shown, oldest first, at most MAX_SHOWN_LINES. */
  lines: ShownLine[];
  /** Where the next call starts (GetExecutionLogsRequest.after_line). */
  nextLine: bigint;
  /** The last answer held every line there was then (it was not a full page). */
  caughtUp: boolean;
  /** The execution has ended and every line it wrote has been read: no call is needed any more. */
  finished: boolean;
}

/** Nothing read yet. */
export const EMPTY_LOG_TAIL: LogTail = { dropped: 0, hidden: 0, lines: [], nextLine: 0n, caughtUp: false, finished: false };

/** The answer's fields the tail is made from. */
export type LogPage = Pick<GetExecutionLogsResponse, "lines" | "nextLine" | "dropped" | "finished">;

/**
 * The tail after one more answer, asked from `tail.nextLine`: its lines appended, each marked
 * with the lines missing before it, a resent line kept once, then the oldest past `maxShown`
 * taken off the page (counted in `hidden`). `tail` is not changed.
 */
export function appendLogPage(tail: LogTail, page: LogPage, maxShown: number = MAX_SHOWN_LINES, perCall: number = LINES_PER_CALL): LogTail {
  let read = tail.lines.length + tail.hidden > 0;
  let dropped = tail.dropped;
  let last = tail.lines.at(-1)?.number ?? (read ? Number(tail.nextLine) - 1 : -1);
  const added: ShownLine[] = [];
  for (const line of page.lines) {
    const number = Number(line.number);
    if (read && number <= last) continue;
    const missingBefore = read ? number - last - 1 : 0;
    // The first line read says how many the log no longer held before it (the CLI says the same).
    if (!read) dropped = number;
    added.push({ number, time: Number(line.timeUnixMs), stream: line.stream, text: line.text, missingBefore });
    last = number;
    read = true;
  }
  // Before any line comes, the answer's own count is all there is to say.
  if (!read) dropped = Number(page.dropped);
  let lines = added.length > 0 ? [...tail.lines, ...added] : tail.lines;
  let hidden = tail.hidden;
  if (lines.length > maxShown) {
    hidden += lines.length - maxShown;
    lines = lines.slice(lines.length - maxShown);
  }
  const caughtUp = page.lines.length < perCall;
  const nextLine = page.nextLine > tail.nextLine ? page.nextLine : tail.nextLine;
  return { dropped, hidden, lines, nextLine, caughtUp, finished: page.finished && caughtUp };
}
