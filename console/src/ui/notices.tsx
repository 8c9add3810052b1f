import { useEffect, useState } from "preact/hooks";

/** A line the console tells the user after an action: done, or the controller's refusal. */
export interface Notice {
  id: number;
  kind: "done" | "error";
  text: string;
}

/** How long a "done" notice stays; an error stays until dismissed. */
const DONE_MS = 6000;

let notices: Notice[] = [];
let nextId = 1;
const listeners = new Set<() => void>();

function changed(next: Notice[]): void {
  notices = next;
  for (const listener of listeners) listener();
}

/** Shows a notice; a "done" one goes by itself. */
export function notify(kind: Notice["kind"], text: string): void {
  const notice = { id: nextId++, kind, text };
  changed([...notices.slice(-4), notice]);
  if (kind === "done") setTimeout(() => dismiss(notice.id), DONE_MS);
}

export function dismiss(id: number): void {
  changed(notices.filter((notice) => notice.id !== id));
}

/** The notices, in a live region that screen readers announce. */
export function Notices() {
  const [shown, setShown] = useState(notices);
  useEffect(() => {
    const update = (): void => setShown(notices);
    listeners.add(update);
    return () => void listeners.delete(update);
  }, []);
  return (
    <div class="notices" role="status" aria-live="polite">
      {shown.map((notice) => (
        <div key={notice.id} class={`notice notice-${notice.kind}`}>
          <span data-testid={notice.kind === "done" ? "action-done" : "action-error"}>{notice.text}</span>
          <button type="button" class="link-button" aria-label="Dismiss" onClick={() => dismiss(notice.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
