import { Etcd3, type Namespace } from "etcd3";
import { ShardlineError } from "../../shared/errors.js";
import { EtcdStore } from "../store/etcd/etcd-store.js";
import { SqliteStore } from "../store/sqlite/sqlite-store.js";
import type { StoreLocation } from "../store/store-url.js";
import type { Store } from "../store/store.js";
import type { Part } from "./supervisor.js";

/** The longest a single etcd request may take. */
const ETCD_CALL_DEADLINE_MS = 5_000;

/**
 * The store part: where the durable state lives, and how a leader opens it. The Store itself is
 * opened by the driver each time this controller leads, and closed by it; this part holds what
 * outlives one leadership (on etcd, the client and the installation's namespace).
 */
export interface StoreConnection extends Part {
  /** `--store` as the serving log shows it. */
  readonly description: string;
  /** A store to lead from: under `term`, the one won in etcd; on SQLite the file's next term is read as it opens (`term` is undefined). */
  open(term: number | undefined): Store;
}

/** The store part for `--store`. */
export function storeConnection(location: StoreLocation): StoreConnection {
  return location.kind === "sqlite" ? new SqliteFile(location.path) : new EtcdConnection(location.endpoints, location.prefix);
}

/** One SQLite file: nothing to connect; the store takes the file's lock as it opens (one writer). */
export class SqliteFile implements StoreConnection {
  readonly name = "store";
  readonly description: string;

  constructor(readonly path: string) {
    this.description = `sqlite:${path}`;
  }

  async start(): Promise<void> {}

  open(): Store {
    return new SqliteStore(this.path);
  }

  async stop(): Promise<void> {}
}

/** An etcd cluster: the client, and the namespace of this installation's keys (the store's and the election's). */
export class EtcdConnection implements StoreConnection {
  readonly name = "store";
  readonly description: string;
  #client: Etcd3 | undefined;
  #namespace: Namespace | undefined;

  constructor(
    readonly endpoints: readonly string[],
    readonly prefix: string,
  ) {
    this.description = `etcd://${endpoints.join(",")}/${prefix}`;
  }

  /** The installation's keys; once started. */
  get namespace(): Namespace {
    if (this.#namespace === undefined) throw new ShardlineError("internal", "the etcd store has not started");
    return this.#namespace;
  }

  /** True once started: the client exists (it connects on its first call). */
  get started(): boolean {
    return this.#namespace !== undefined;
  }

  async start(): Promise<void> {
    this.#client = new Etcd3({
      hosts: this.endpoints.map((endpoint) => `http://${endpoint}`),
      dialTimeout: 5000,
      // A call to an etcd that hangs (paused, overloaded) fails in time instead of holding a
      // commit, and with it the controller's shutdown, forever. Watches and keepalives are streams.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + ETCD_CALL_DEADLINE_MS }),
    });
    this.#namespace = this.#client.namespace(this.prefix);
  }

  open(term: number | undefined): Store {
    if (term === undefined) throw new ShardlineError("internal", "an etcd store opens under the term the election won");
    return new EtcdStore(this.namespace, term);
  }

  async stop(): Promise<void> {
    this.#client?.close();
  }
}
