import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { errorText, isCancelled, isUnauthenticated, isUnimplemented } from "../api/errors.js";
import { formatClock } from "../model/format.js";
import { appendLogPage, EMPTY_LOG_TAIL, LINES_PER_CALL, type LogTail, MAX_SHOWN_LINES, type ShownLine } from "../model/log-tail.js";
import { useSession } from "./session.js";

/** How often a running execution's log is asked for what came since: its agent ships lines every 500 ms. */
const FOLLOW_MS = 1000;
/** How long a failed call waits before the next: a controller restarting, a leader changing. */
const RETRY_MS = 5000;

/** The log as the page has read it, and how reading it goes. */
interface LogState {
  tail: LogTail;
  /** The controller serves no GetExecutionLogs (an older version). */
  unimplemented: boolean;
  /** The controller's words for the last call, when it failed. */
  error: string | undefined;
}

const READING: LogState = { tail: EMPTY_LOG_TAIL, unimplemented: false, error: undefined };

/**
 * Reads execution `id`'s log from its first line kept, then from where it stopped: at once while
 * an answer is a full page, every FOLLOW_MS while the execution may write more (not while the tab
 * is hidden), never again once it has ended and every line is read, or the page is left.
 */
function useLogTail(id: string): LogState {
  const session = useSession();
  const [state, setState] = useState<LogState>(READING);
  useEffect(() => {
    const abort = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let tail = EMPTY_LOG_TAIL;
    setState(READING);
    const later = (ms: number) => (timer = setTimeout(() => (document.visibilityState === "visible" ? void read() : later(ms)), ms));
    const read = async () => {
      try {
        const page = await session.client.getExecutionLogs({ id, afterLine: tail.nextLine, limit: LINES_PER_CALL }, { signal: abort.signal });
        if (abort.signal.aborted) return;
        tail = appendLogPage(tail, page);
        setState({ tail, unimplemented: false, error: undefined });
        if (!tail.finished) later(tail.caughtUp ? FOLLOW_MS : 0);
      } catch (error) {
        if (abort.signal.aborted || isCancelled(error)) return;
        if (isUnimplemented(error)) return setState({ ...READING, unimplemented: true });
        if (isUnauthenticated(error)) return session.refused(error);
        setState((previous) => ({ ...previous, error: errorText(error) }));
        later(RETRY_MS);
      }
    };
    void read();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
    // The session's client and `refused` are the same for its life.
  }, [id]);
  return state;
}

/** Execution `id`'s log tail, followed while the execution runs; the old words before a controller that keeps no logs. */
export function ExecutionLog({ id }: { id: string }) {
  const { tail, unimplemented, error } = useLogTail(id);
  const box = useRef<HTMLDivElement>(null);
  // Whether the reader was at the bottom before the last lines came: a tail keeps following then,
  // and leaves a reader who scrolled up where they are.
  const atBottom = useRef(true);
  useLayoutEffect(() => {
    const element = box.current;
    if (element !== null && atBottom.current) element.scrollTop = element.scrollHeight;
  }, [tail]);

  if (unimplemented) {
    return (
      <section class="card">
        <h2>Logs</h2>
        <p class="muted">logs: not recorded by this controller version</p>
      </section>
    );
  }
  const empty = tail.lines.length === 0 && tail.dropped === 0 && tail.hidden === 0;
  return (
    <section class="card">
      <div class="card-head">
        <h2>Logs</h2>
        <span class="muted" data-testid="log-status">
          {tail.finished ? "complete" : "following…"}
        </span>
      </div>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {empty ? (
        <p class="muted" data-testid="execution-log">
          {tail.finished ? "The execution wrote no log lines." : "No log lines yet."}
        </p>
      ) : (
        <div
          class="log"
          role="log"
          tabIndex={0}
          ref={box}
          data-testid="execution-log"
          onScroll={(event) => {
            const element = event.currentTarget;
            atBottom.current = element.scrollTop + element.clientHeight >= element.scrollHeight - 4;
          }}
        >
          {tail.dropped > 0 && (
            <div class="log-marker" data-testid="log-dropped">
              [{tail.dropped} earlier lines dropped]
            </div>
          )}
          {tail.hidden > 0 && (
            <div class="log-marker" data-testid="log-hidden">
              [{tail.hidden} earlier lines not shown: the page keeps the last {MAX_SHOWN_LINES.toLocaleString("en")}; shardline logs {id} prints them all]
            </div>
          )}
          {tail.lines.flatMap((line) => (line.missingBefore > 0 ? [<Missing key={`missing-${line.number}`} count={line.missingBefore} />, <Line key={line.number} line={line} />] : [<Line key={line.number} line={line} />]))}
        </div>
      )}
    </section>
  );
}

function Missing({ count }: { count: number }) {
  return (
    <div class="log-marker" data-testid="log-missing">
      [{count} lines missing]
    </div>
  );
}

function Line({ line }: { line: ShownLine }) {
  return (
    <div class="log-line" data-testid="log-line" data-stream={line.stream} data-number={line.number}>
      <span class="log-time">{formatClock(line.time)}</span>
      <span class="log-stream">{line.stream}</span>
      <span class="log-text">{line.text}</span>
    </div>
  );
}
