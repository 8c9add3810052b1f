import type { Lease, Namespace, Watcher } from "etcd3";
import { ShardlineError } from "../../../shared/errors.js";
import type { Logger } from "../../../shared/logging.js";

/** Keys of the election, relative to the store's namespace. */
export const LEADER_KEY = "leader";
export const TERM_KEY = "term";

/** How a controller takes part in the election. */
export interface LeadershipOptions {
  /** The gRPC address agents and clients are redirected to while this controller leads. */
  address: string;
  /** TTL of the etcd lease that holds the leader key, in whole seconds (etcd's unit); at least 2. */
  ttlSeconds: number;
  /**
   * How long before its etcd lease may have expired this controller stops acting as leader, so
   * that timers firing late do not let it act past that instant. Default 250 ms.
   */
  safetyMs?: number;
  logger: Logger;
  /** Wall clock; tests do not replace it, etcd's lease runs on real time. */
  now?: () => number;
}

/**
 * One controller's part in the leader election on etcd.
 *
 * The leader key holds the leader's address and is attached to an etcd lease kept alive by this
 * process; the term key counts leaders. Winning is one transaction: the leader key must not
 * exist and the term must be the one just read; it creates the key and writes term + 1. A new
 * leader can therefore only start after the previous leader's lease ended, and every write of
 * the store compares the term, so a deposed leader's late writes fail.
 *
 * The election itself is a few lines of compare-and-put rather than etcd3's Election, because
 * the leader must know until when etcd surely still holds its lease: it stops acting (sending
 * lease renewals to agents above all) before that instant, and the next leader waits one agent
 * lease after its own start before moving shards. etcd3's Campaign keeps its lease private.
 */
export class EtcdLeadership {
  readonly #ns: Namespace;
  readonly #options: Required<Omit<LeadershipOptions, "logger">> & { logger: Logger };
  #lease: Lease | undefined;
  #watchers: Watcher[] = [];
  #currentTerm = 0;
  #leader: string | undefined;
  #term: number | undefined;
  #validUntil = 0;
  /** When each keepalive not yet answered was sent: etcd extends the lease from no earlier than that. */
  #keepalivesSent: number[] = [];
  #lost: string | undefined;
  #closed = false;
  #checkTimer: NodeJS.Timeout | undefined;
  #refreshTimer: NodeJS.Timeout | undefined;
  readonly #leaderListeners = new Set<(address: string | undefined) => void>();
  readonly #lostListeners = new Set<(reason: string) => void>();
  readonly #renewedListeners = new Set<(actUntil: number) => void>();
  /** Wakes a campaign waiting for the leader key to go. */
  #wake: (() => void) | undefined;

  constructor(ns: Namespace, options: LeadershipOptions) {
    if (!Number.isInteger(options.ttlSeconds) || options.ttlSeconds < 2) {
      throw ShardlineError.invalid("--leader-ttl", options.ttlSeconds, "a whole number of seconds of at least 2");
    }
    this.#ns = ns;
    this.#options = { safetyMs: 250, now: Date.now, ...options };
  }

  /** The leader's address as last seen in etcd, or undefined while there is none. */
  get leader(): string | undefined {
    return this.#leader;
  }

  /** The term this controller won, once it has. */
  get term(): number | undefined {
    return this.#term;
  }

  /** Until when etcd surely holds this controller's lease (wall-clock ms): a keepalive's send time plus the TTL. */
  get validUntil(): number {
    return this.#validUntil;
  }

  /** The instant until which this controller acts as leader: validUntil less the safety margin. */
  get actUntil(): number {
    return this.#validUntil - this.#options.safetyMs;
  }

  /** Called with actUntil each time etcd confirms the lease (about three times per TTL). */
  onRenewed(listener: (actUntil: number) => void): () => void {
    this.#renewedListeners.add(listener);
    return () => this.#renewedListeners.delete(listener);
  }

  /** True while this controller won and etcd surely still holds its lease. */
  isLeader(): boolean {
    return this.#term !== undefined && this.#lost === undefined && this.#options.now() < this.actUntil;
  }

  /** Called with the leader's address whenever it changes (undefined: none right now). */
  onLeaderChange(listener: (address: string | undefined) => void): () => void {
    this.#leaderListeners.add(listener);
    return () => this.#leaderListeners.delete(listener);
  }

  /** Called once if this controller, having won, can no longer be sure it leads. */
  onLost(listener: (reason: string) => void): () => void {
    this.#lostListeners.add(listener);
    return () => this.#lostListeners.delete(listener);
  }

  /** The highest term seen in etcd (the current leader's, once elected); 0 before any. */
  get currentTerm(): number {
    return this.#currentTerm;
  }

  /** Starts following the leader and term keys, so `leader` and `currentTerm` are known without winning. */
  async observe(): Promise<void> {
    const [leader, term] = await Promise.all([this.#ns.get(LEADER_KEY).exec(), this.#ns.get(TERM_KEY).exec()]);
    this.#setLeader(leader.kvs[0]?.value.toString());
    this.#setTerm(term.kvs[0]?.value.toString());
    const from = String(Math.min(Number(leader.header.revision), Number(term.header.revision)) + 1);
    const watchers = await Promise.all([
      this.#ns.watch().key(LEADER_KEY).startRevision(from).create(),
      this.#ns.watch().key(TERM_KEY).startRevision(from).create(),
    ]);
    this.#watchers = watchers;
    if (this.#closed) {
      await Promise.all(watchers.map((watcher) => watcher.cancel()));
      return;
    }
    const [leaderWatcher, termWatcher] = watchers;
    leaderWatcher.on("put", (kv) => this.#setLeader(kv.value.toString()));
    leaderWatcher.on("delete", () => this.#setLeader(undefined));
    termWatcher.on("put", (kv) => this.#setTerm(kv.value.toString()));
    for (const watcher of watchers) {
      watcher.on("error", (error) => this.#options.logger.warn({ err: error }, "watching the etcd election keys failed; retrying"));
    }
    // The watch says at once who leads; a read every second makes sure a lost watch event cannot
    // leave a follower sending agents to a leader that is gone, or to none.
    this.#refreshTimer = setInterval(() => {
      if (this.#term === undefined && !this.#closed) {
        this.#readElection().catch((error: unknown) => this.#options.logger.debug({ err: error }, "reading the etcd election keys failed"));
      }
    }, 1000);
    this.#refreshTimer.unref();
  }

  /**
   * Campaigns until this controller is the leader, and resolves its term. Call observe() first.
   * Rides out etcd being unreachable (retrying with a new lease); rejects only if close() is
   * called meanwhile.
   */
  async campaign(): Promise<number> {
    for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
      try {
        return await this.#campaignOnce();
      } catch (error) {
        if (this.#closed) throw new ShardlineError("unavailable", "the election was stopped");
        this.#options.logger.warn({ err: error }, "campaigning for the leadership failed; retrying");
        const lease = this.#lease;
        this.#lease = undefined;
        lease?.release();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.#wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
  }

  /** One candidacy on one lease: resolves the term won, or throws when etcd failed or the lease was lost. */
  async #campaignOnce(): Promise<number> {
    const lease = this.#ns.lease(this.#options.ttlSeconds, { autoKeepAlive: true });
    this.#lease = lease;
    let candidacyLost: Error | undefined;
    lease.on("keepaliveEstablished", () => (this.#keepalivesSent = []));
    lease.on("keepaliveFired", () => this.#keepalivesSent.push(this.#options.now()));
    lease.on("keepaliveSucceeded", () => {
      const sent = this.#keepalivesSent.shift();
      if (sent === undefined) return;
      this.#validUntil = Math.max(this.#validUntil, sent + this.#options.ttlSeconds * 1000);
      if (this.#term !== undefined) for (const listener of [...this.#renewedListeners]) listener(this.actUntil);
    });
    lease.on("lost", (error) => {
      if (this.#term !== undefined) {
        this.#lose(`the etcd lease was lost (${error.message})`);
      } else {
        candidacyLost = error;
        this.#wake?.();
      }
    });
    const grantSent = this.#options.now();
    const leaseId = await lease.grant();
    this.#validUntil = grantSent + this.#options.ttlSeconds * 1000;
    for (;;) {
      if (this.#closed) throw new ShardlineError("unavailable", "the election was stopped");
      if (candidacyLost !== undefined) throw candidacyLost;
      const read = await this.#ns.get(TERM_KEY).exec();
      const termKv = read.kvs[0];
      const previous = termKv === undefined ? 0 : Number(termKv.value.toString());
      const term = previous + 1;
      const won = await this.#ns
        .if(LEADER_KEY, "Create", "==", 0)
        .and(TERM_KEY, "Mod", "==", termKv === undefined ? 0 : Number(termKv.mod_revision))
        .then(this.#ns.put(LEADER_KEY).value(this.#options.address).lease(leaseId), this.#ns.put(TERM_KEY).value(String(term)))
        .commit();
      if (won.succeeded) {
        // The lease may have lapsed between the last keepalive and this write: etcd would have
        // refused a put on a dead lease, so the win stands; validUntil says how long it lasts.
        this.#term = term;
        this.#setTerm(String(term));
        this.#setLeader(this.#options.address);
        this.#checkTimer = setInterval(() => this.#check(), 50);
        this.#checkTimer.unref();
        this.#options.logger.info({ term, address: this.#options.address }, `elected leader (term ${term})`);
        return term;
      }
      await this.#leaderGone();
    }
  }

  /** Gives up the leadership (or the candidacy) at once: the next candidate wins without waiting for the lease. */
  async resign(): Promise<void> {
    const lease = this.#lease;
    this.#lease = undefined;
    this.#term = undefined;
    clearInterval(this.#checkTimer);
    if (lease !== undefined) await lease.revoke().catch(() => lease.release());
  }

  /** Stops observing and campaigning without revoking the lease: etcd expires it after its TTL. */
  async abandon(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#refreshTimer);
    clearInterval(this.#checkTimer);
    this.#wake?.();
    this.#lease?.release();
    this.#lease = undefined;
    await Promise.all(this.#watchers.map((watcher) => watcher.cancel()));
  }

  /** Stops observing and campaigning; the lease, if any, is revoked. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#refreshTimer);
    this.#wake?.();
    await this.resign();
    await Promise.all(this.#watchers.map((watcher) => watcher.cancel()));
  }

  /** Resolves once the leader key is absent (watched by observe()), or close() is called. */
  /**
   * Resolves once the leader key is absent (as the watch reports it), close() is called, or a
   * TTL has passed; the campaign then tries again. The key is read first: a lost transaction
   * means someone holds it even if the watch has not said so.
   */
  async #leaderGone(): Promise<void> {
    await this.#readElection();
    if (this.#leader === undefined || this.#closed) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.#wake = undefined;
        clearTimeout(timer);
        unsubscribe();
        resolve();
      };
      const timer = setTimeout(done, this.#options.ttlSeconds * 1000);
      const unsubscribe = this.onLeaderChange((address) => {
        if (address === undefined) done();
      });
      this.#wake = done;
    });
  }

  /** Reads the leader and term keys: what the watch says, without relying on it alone. */
  async #readElection(): Promise<void> {
    const [leader, term] = await Promise.all([this.#ns.get(LEADER_KEY).string(), this.#ns.get(TERM_KEY).string()]);
    this.#setLeader(leader ?? undefined);
    this.#setTerm(term ?? undefined);
  }

  #setLeader(address: string | undefined): void {
    if (address === this.#leader) return;
    this.#leader = address;
    if (this.#term !== undefined && address !== this.#options.address) {
      this.#lose(address === undefined ? "the leader key was deleted" : `another controller (${address}) holds the leader key`);
    }
    for (const listener of [...this.#leaderListeners]) listener(address);
  }

  #setTerm(value: string | undefined): void {
    const term = Number(value ?? 0);
    if (term <= this.#currentTerm) return;
    this.#currentTerm = term;
    if (this.#term !== undefined && term !== this.#term) this.#lose(`another controller took term ${term}`);
  }

  #check(): void {
    if (this.#term !== undefined && this.#lost === undefined && !this.isLeader()) {
      this.#lose(`etcd has not confirmed the leadership lease for ${this.#options.ttlSeconds * 1000 - this.#options.safetyMs} ms`);
    }
  }

  #lose(reason: string): void {
    if (this.#lost !== undefined) return;
    this.#lost = reason;
    clearInterval(this.#checkTimer);
    if (this.#term === undefined) return;
    this.#options.logger.error({ term: this.#term, reason }, `lost the leadership: ${reason}`);
    for (const listener of [...this.#lostListeners]) listener(reason);
  }
}
