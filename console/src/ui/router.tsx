import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";

/** Where the console is: its path and query (`/executions`, `job=x&state=failed`). */
export interface Location {
  path: string;
  query: URLSearchParams;
}

const listeners = new Set<() => void>();

function current(): Location {
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

/** Goes to `href` (a path and query on this origin) without loading the page again. */
export function navigate(href: string, options: { replace?: boolean } = {}): void {
  if (href === location.pathname + location.search) return;
  if (options.replace === true) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  for (const listener of listeners) listener();
  // A new page starts at its top, as a loaded one would.
  if (options.replace !== true) window.scrollTo(0, 0);
}

/** The current location, redrawn on navigate() and on the browser's back and forward. */
export function useLocation(): Location {
  const [where, setWhere] = useState(current);
  useEffect(() => {
    const update = (): void => setWhere(current());
    listeners.add(update);
    addEventListener("popstate", update);
    return () => {
      listeners.delete(update);
      removeEventListener("popstate", update);
    };
  }, []);
  return where;
}

interface LinkProps {
  href: string;
  children?: ComponentChildren;
  class?: string | undefined;
  title?: string | undefined;
  "data-testid"?: string;
  "aria-current"?: "page" | undefined;
}

/**
 * A link within the console: a real `<a href>` (opens in a new tab, copies, reads out as a link),
 * followed without reloading on a plain click.
 */
export function Link({ href, children, ...rest }: LinkProps) {
  const follow = (event: MouseEvent): void => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(href);
  };
  return (
    <a href={href} onClick={follow} {...rest}>
      {children}
    </a>
  );
}

/** The console's path of a job's page. */
export function jobHref(name: string): string {
  return `/jobs/${encodeURIComponent(name)}`;
}

/** The console's path of an execution's page; an id's slashes stay (`/executions/rollup/1767225600000/3/1`). */
export function executionHref(id: string): string {
  return `/executions/${id.split("/").map(encodeURIComponent).join("/")}`;
}
