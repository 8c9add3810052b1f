import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { errorText, isCancelled, isUnauthenticated } from "../api/errors.js";
import { useSession } from "./session.js";

/** A call's answer as a page shows it. */
export interface CallResult<T> {
  data: T | undefined;
  /** The controller's text when the last call failed. */
  error: string | undefined;
  loading: boolean;
  /** Calls again now. */
  reload(): void;
}

/**
 * Calls `call` when `key` changes (and every `refreshMs`, when given, while the page is shown),
 * cancelling a call still under way. The last answer stays shown while the next is awaited; a
 * refused token goes back to sign-in.
 */
export function useCall<T>(call: (signal: AbortSignal) => Promise<T>, key: string, refreshMs?: number): CallResult<T> {
  const session = useSession();
  const [state, setState] = useState<{ data: T | undefined; error: string | undefined; loading: boolean; key: string }>({ data: undefined, error: undefined, loading: true, key });
  const [round, setRound] = useState(0);
  const latest = useRef(call);
  latest.current = call;
  const reload = useCallback(() => setRound((n) => n + 1), []);

  useEffect(() => {
    const abort = new AbortController();
    setState((previous) => ({ ...previous, loading: true, ...(previous.key === key ? {} : { data: undefined, error: undefined, key }) }));
    latest.current(abort.signal).then(
      (data) => {
        if (!abort.signal.aborted) setState({ data, error: undefined, loading: false, key });
      },
      (error: unknown) => {
        if (abort.signal.aborted || isCancelled(error)) return;
        if (isUnauthenticated(error)) session.refused(error);
        setState((previous) => ({ ...previous, error: errorText(error), loading: false, key }));
      },
    );
    return () => abort.abort();
    // Only the key and a reload call again; `session.refused` is the same for the session's life.
  }, [key, round]);

  useEffect(() => {
    if (refreshMs === undefined) return;
    const timer = setInterval(() => {
      if (document.visibilityState === "visible") reload();
    }, refreshMs);
    return () => clearInterval(timer);
  }, [refreshMs, reload, key]);

  return { data: state.key === key ? state.data : undefined, error: state.key === key ? state.error : undefined, loading: state.loading, reload };
}
