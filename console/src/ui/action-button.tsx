import { useState } from "preact/hooks";
import { errorText, isUnauthenticated } from "../api/errors.js";
import { type Confirmation, ConfirmDialog } from "./confirm-dialog.js";
import { notify } from "./notices.js";
import { useSession } from "./session.js";

/** An action the console offers: one AdminService call. */
export interface ActionProps {
  /** The AdminService method it calls (its proto name): the button shows only when the caller's role allows it. */
  method: string;
  /** The test hook, e.g. "action-drain". */
  testid: string;
  label: string;
  /** Asked first for destructive actions (drain, cancel, abort, undo, pause). */
  confirm?: Confirmation;
  /** Makes the call; what it resolves to is the "done" notice. */
  run(): Promise<string>;
  /** A smaller button, in a table's row. */
  small?: boolean;
  danger?: boolean;
}

/**
 * A button for one action, absent when the caller's role does not allow it. It asks first when
 * it has a confirmation, is disabled while its call is under way, and tells the outcome: the
 * controller's own text when it refused.
 */
export function ActionButton({ method, testid, label, confirm, run, small = false, danger = false }: ActionProps) {
  const session = useSession();
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!session.allows(method)) return null;

  const go = async (): Promise<void> => {
    setBusy(true);
    try {
      notify("done", await run());
    } catch (error) {
      if (isUnauthenticated(error)) session.refused(error);
      notify("error", `${label} failed: ${errorText(error)}`);
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <button
        type="button"
        class={`${small ? "small" : ""} ${danger ? "danger" : ""}`.trim()}
        data-testid={testid}
        disabled={busy}
        aria-busy={busy}
        onClick={() => (confirm === undefined ? void go() : setAsking(true))}
      >
        {label}
      </button>
      {asking && confirm !== undefined && (
        <ConfirmDialog
          confirmation={confirm}
          onAnswer={(yes) => {
            setAsking(false);
            if (yes) void go();
          }}
        />
      )}
    </>
  );
}
