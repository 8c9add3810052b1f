import { ShardlineError } from "../../shared/errors.js";

const ALLOWED = "sqlite:PATH (e.g. sqlite:./shardline.db) or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]";

/** Keys go under this prefix in etcd unless the URL names another. */
export const DEFAULT_ETCD_PREFIX = "shardline/";

/**
 * Where `--store` points: an SQLite file (or `:memory:`), or the endpoints of an etcd cluster and
 * the key prefix this installation uses there (several installations may share one etcd).
 */
export type StoreLocation =
  | { kind: "sqlite"; path: string }
  | { kind: "etcd"; endpoints: string[]; prefix: string };

/** Reads a `--store` value; a malformed one is an `invalid-argument` error naming `--store`. */
export function parseStoreUrl(value: string): StoreLocation {
  if (value.startsWith("sqlite:")) {
    const path = value.slice("sqlite:".length);
    if (path === "") throw ShardlineError.invalid("--store", value, ALLOWED);
    return { kind: "sqlite", path };
  }
  if (value.startsWith("etcd://")) {
    const rest = value.slice("etcd://".length);
    const slash = rest.indexOf("/");
    const hosts = slash === -1 ? rest : rest.slice(0, slash);
    const path = slash === -1 ? "" : rest.slice(slash + 1);
    const endpoints = hosts.split(",");
    if (!endpoints.every(isHostPort)) throw ShardlineError.invalid("--store", value, ALLOWED);
    if (path !== "" && !/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*\/?$/.test(path)) {
      throw ShardlineError.invalid("--store", value, `${ALLOWED}, with a PREFIX of letters, digits, '.', '_', '-' and '/'`);
    }
    const prefix = path === "" ? DEFAULT_ETCD_PREFIX : path.endsWith("/") ? path : `${path}/`;
    return { kind: "etcd", endpoints, prefix };
  }
  throw ShardlineError.invalid("--store", value, ALLOWED);
}

/** `host:port` with a non-empty host (a name, IPv4, or bracketed IPv6) and a port 1..65535. */
function isHostPort(endpoint: string): boolean {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(endpoint);
  if (match === null) return false;
  const port = Number(match[2]);
  return port >= 1 && port <= 65535;
}
