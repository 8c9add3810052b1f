import { ShardlineError } from "../../shared/errors.js";
import { SqliteStore } from "./sqlite/sqlite-store.js";
import type { Store } from "./store.js";

const ALLOWED = "sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...]";

/** Where `--store` points: an SQLite file (or `:memory:`), or the endpoints of an etcd cluster. */
export type StoreLocation =
  | { kind: "sqlite"; path: string }
  | { kind: "etcd"; endpoints: string[] };

/** Reads a `--store` value; a malformed one is an `invalid-argument` error naming `--store`. */
export function parseStoreUrl(value: string): StoreLocation {
  if (value.startsWith("sqlite:")) {
    const path = value.slice("sqlite:".length);
    if (path === "") throw ShardlineError.invalid("--store", value, ALLOWED);
    return { kind: "sqlite", path };
  }
  if (value.startsWith("etcd://")) {
    const endpoints = value.slice("etcd://".length).split(",");
    if (!endpoints.every(isHostPort)) throw ShardlineError.invalid("--store", value, ALLOWED);
    return { kind: "etcd", endpoints };
  }
  throw ShardlineError.invalid("--store", value, ALLOWED);
}

/**
 * Builds the store a `--store` value names, not yet opened: the caller's `open()` takes the term
 * and loads the snapshot. `sqlite::memory:` gives a private in-memory store for tests.
 */
export function openStore(value: string): Store {
  const location = parseStoreUrl(value);
  switch (location.kind) {
    case "sqlite":
      return new SqliteStore(location.path);
    case "etcd":
      throw new ShardlineError("invalid-argument", "--store: etcd store not available yet; use sqlite:PATH", {
        field: "--store",
        value,
        allowed: "sqlite:PATH",
      });
  }
}

/** `host:port` with a non-empty host (a name, IPv4, or bracketed IPv6) and a port 1..65535. */
function isHostPort(endpoint: string): boolean {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(endpoint);
  if (match === null) return false;
  const port = Number(match[2]);
  return port >= 1 && port <= 65535;
}
