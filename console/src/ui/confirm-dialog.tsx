import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";

/** What a destructive action asks before it runs. */
export interface Confirmation {
  title: string;
  body: ComponentChildren;
  /** The confirming button's words, e.g. "Drain w-1". */
  yes: string;
}

/**
 * A modal question (the browser's own `<dialog>`, so the page behind is inert): focus starts on
 * "Cancel" (the safe answer), Tab and Shift+Tab stay within the dialog, Escape cancels, and focus
 * returns to what had it before.
 */
export function ConfirmDialog({ confirmation, onAnswer }: { confirmation: Confirmation; onAnswer(yes: boolean): void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const no = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    const element = dialog.current;
    if (element === null) return;
    const before = document.activeElement as HTMLElement | null;
    if (!element.open) element.showModal();
    no.current?.focus();
    return () => before?.focus();
  }, []);

  const trap = (event: KeyboardEvent): void => {
    if (event.key !== "Tab" || dialog.current === null) return;
    const focusable = [...dialog.current.querySelectorAll<HTMLElement>("button:not([disabled]), [href], input, [tabindex]:not([tabindex='-1'])")];
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    if (first === undefined || last === undefined) return;
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  };

  return (
    <dialog
      ref={dialog}
      class="dialog"
      data-testid="confirm-dialog"
      aria-labelledby="confirm-title"
      onKeyDown={trap}
      onCancel={(event) => {
        // Escape: answered here, so that the dialog closes through the same path as "Cancel".
        event.preventDefault();
        onAnswer(false);
      }}
    >
      <h2 id="confirm-title">{confirmation.title}</h2>
      <div class="dialog-body">{confirmation.body}</div>
      <div class="dialog-buttons">
        <button type="button" ref={no} data-testid="confirm-no" onClick={() => onAnswer(false)}>
          Cancel
        </button>
        <button type="button" class="danger" data-testid="confirm-yes" onClick={() => onAnswer(true)}>
          {confirmation.yes}
        </button>
      </div>
    </dialog>
  );
}
