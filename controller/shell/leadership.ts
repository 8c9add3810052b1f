import { ShardlineError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logging.js";
import { EtcdLeadership, LEADER_KEY } from "../store/etcd/etcd-leadership.js";
import type { EtcdConnection } from "./store-connection.js";
import type { Part } from "./supervisor.js";

/** Starts leading under `term` (undefined on SQLite, where the store's open says it). */
export type Lead = (term: number | undefined) => Promise<void>;

/**
 * The leadership part: when this controller may lead. On SQLite at once, since one file takes
 * one writer (the store's OS lock, taken as it opens, refuses a second controller); on etcd once
 * this replica wins the election, following the leader meanwhile.
 */
export interface Leadership extends Part {
  /** The etcd election, for the leader's lease bound and for routing; undefined on SQLite. */
  readonly election: EtcdLeadership | undefined;
  /** The address given as the leader's while this controller leads (etcd); once started. */
  readonly advertised: string | undefined;
  /**
   * Calls `lead` once this controller may lead: at once, and resolves once it leads (SQLite);
   * or once elected, in the background, and resolves at once (etcd).
   */
  lead(lead: Lead): Promise<void>;
  /**
   * What /readyz adds to the store's answer: while leading, whether it still may act; while
   * following, whether it knows a leader to send callers to.
   */
  ready(leading: boolean): Promise<boolean>;
}

/** SQLite: one controller per file, leading from the start. */
export class SingleWriter implements Leadership {
  readonly name = "leadership";
  readonly election = undefined;
  readonly advertised = undefined;

  async start(): Promise<void> {}

  lead(lead: Lead): Promise<void> {
    return lead(undefined);
  }

  async ready(leading: boolean): Promise<boolean> {
    return leading;
  }

  async stop(): Promise<void> {}
}

/** How an etcd replica takes part in the election. */
export interface EtcdElectionOptions {
  /** The etcd store part: the election's keys sit in its namespace. */
  store: EtcdConnection;
  /** `--advertise`, else `grpcAddress()`. */
  advertise: string | undefined;
  /** The gRPC address the servers listen on (resolved once they started). */
  grpcAddress: () => string;
  /** `--leader-ttl`, in whole seconds. */
  ttlSeconds: number;
  /** True once the controller is stopping: a term won or a failure then is no longer acted on. */
  stopping: () => boolean;
  /**
   * Read when stopping: whether the next leader knows how long this one's agent leases still run.
   * Only then is the leadership resigned (the next leader starts at once); otherwise it runs out.
   */
  handedOver: () => boolean;
  /** The controller must stop: the leadership was lost, or could not be taken. */
  onFatal: (error: Error) => void;
  logger: Logger;
}

/** etcd: several replicas, one leader elected (EtcdLeadership); the others follow it. */
export class EtcdElection implements Leadership {
  readonly name = "leadership";
  readonly #options: EtcdElectionOptions;
  #election: EtcdLeadership | undefined;
  #advertised: string | undefined;

  constructor(options: EtcdElectionOptions) {
    this.#options = options;
  }

  get election(): EtcdLeadership | undefined {
    return this.#election;
  }

  get advertised(): string | undefined {
    return this.#advertised;
  }

  /** Follows the leader and term keys (so followers know where to send callers), logging leader changes. */
  async start(): Promise<void> {
    const { store, logger, onFatal } = this.#options;
    const advertised = this.#options.advertise ?? this.#options.grpcAddress();
    this.#advertised = advertised;
    const election = new EtcdLeadership(store.namespace, { address: advertised, ttlSeconds: this.#options.ttlSeconds, logger });
    this.#election = election;
    try {
      await election.observe();
    } catch (error) {
      await this.#resign();
      throw error;
    }
    election.onLeaderChange((leader) => {
      if (leader !== advertised) logger.info({ leader }, leader === undefined ? "no controller leads" : `the leader is ${leader}`);
    });
    election.onLost((reason) => onFatal(new ShardlineError("unavailable", `lost the leadership: ${reason}`)));
  }

  /** Campaigns in the background; once elected, leads. A failure to do either ends the controller. */
  async lead(lead: Lead): Promise<void> {
    const { stopping, logger, onFatal, grpcAddress } = this.#options;
    const election = this.#election;
    if (election === undefined) throw new ShardlineError("internal", "the election has not started");
    void (async () => {
      const term = await election.campaign();
      if (stopping()) return;
      await lead(term);
      if (stopping()) return;
      logger.info({ term, grpc: grpcAddress() }, `leading (term ${term})`);
    })().catch((error: unknown) => {
      if (stopping()) return;
      logger.fatal({ err: error }, "could not take the leadership");
      onFatal(error instanceof Error ? error : new Error(String(error)));
    });
  }

  async ready(leading: boolean): Promise<boolean> {
    if (leading) return this.#election?.isLeader() ?? false;
    // A follower is ready when etcd answers and names a leader it can send callers to: not
    // itself, which has won but does not serve yet.
    if (!this.#options.store.started) return false;
    const address = await this.#options.store.namespace.get(LEADER_KEY).string();
    return address !== null && address !== this.#advertised;
  }

  /** Resigns, so that another replica leads at once, if the driver handed over; else lets the lease run out. */
  async stop(): Promise<void> {
    if (this.#options.handedOver()) await this.#resign();
    else await this.#election?.abandon();
  }

  async #resign(): Promise<void> {
    await this.#election?.close().catch((error: unknown) => this.#options.logger.warn({ err: error }, "resigning the leadership failed"));
  }
}
