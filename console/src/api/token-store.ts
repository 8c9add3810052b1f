/**
 * Where the console keeps the caller's token: this tab's sessionStorage only (gone when the tab
 * closes, never shared with other tabs, never in a cookie), and in memory when storage is refused
 * (a private window with storage disabled).
 */
const KEY = "shardline.token";

let memory: string | undefined;

/** The token signed in with, or undefined. */
export function readToken(): string | undefined {
  try {
    return sessionStorage.getItem(KEY) ?? memory;
  } catch {
    // Storage refused by the browser: the in-memory copy is all there is.
    return memory;
  }
}

/** Keeps `token` for this tab; undefined forgets it (sign out, or a token the controller refused). */
export function writeToken(token: string | undefined): void {
  memory = token;
  try {
    if (token === undefined) sessionStorage.removeItem(KEY);
    else sessionStorage.setItem(KEY, token);
  } catch {
    // Storage refused: kept in memory only, for this page's life.
  }
}
