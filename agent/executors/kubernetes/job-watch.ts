import type { Logger } from "pino";
import { Backoff } from "../../runtime/backoff.js";
import { KubeApiError, paths, type KubeClient, type KubeList, type KubeObject, type WatchEvent } from "./kube-client.js";

const MAX_TOMBSTONES = 1000;

/** Called with a Job each time it is seen changed, and with undefined once it is gone. */
export type JobListener = (job: KubeObject | undefined) => void;

/** What a JobWatch needs. */
export interface JobWatchOptions {
  client: KubeClient;
  namespace: string;
  /**
   * The collection watched; default the namespace's Jobs. Another kind's (the controller's
   * ShardedJobs, in one namespace or all) is watched the same way.
   */
  path?: string;
  /** An object's key for follow() and onChange; default its name (one namespace). */
  keyOf?: (object: KubeObject) => string;
  /**
   * Told of every object seen changed, and (with undefined) of every one seen gone, whoever
   * follows; with it, the watch runs from start() until close().
   */
  onChange?: (key: string, object: KubeObject | undefined) => void;
  /** Told of the keys of every list answered, after onChange heard of each: what exists now. */
  onListed?: (keys: ReadonlySet<string>) => void;
  /** The label selector of the Jobs to keep track of. */
  selector: string;
  logger: Logger;
  /** Bounds of the jittered wait before listing or watching again after a failure. Default 200 ms to 10 s. */
  retry?: { initialMs: number; maxMs: number };
  /**
   * How long the API server keeps one watch open (its timeoutSeconds), as a range: each watch
   * takes a random value in it, so many agents do not renew at once. Default 60 to 120 s. A
   * watch silent for that long plus 15 s is taken as cut (a half-open connection).
   */
  watchSeconds?: { min: number; max: number };
  random?: () => number;
}

/**
 * One list-then-watch of the Jobs an agent created, shared by all of its Kubernetes runs: level-
 * based, as Kubernetes informers are. It lists, watches from the list's resourceVersion, and
 * after the watch ends resumes from the last resourceVersion seen; after a failure (the API
 * server gone, a cut connection) it waits with backoff and resumes; when the resourceVersion is
 * too old (410 Gone/Expired, as after an API server restart) it lists again, and tells the
 * listeners of Jobs that disappeared meanwhile. It runs only while some run follows a Job.
 */
export class JobWatch {
  readonly #options: JobWatchOptions;
  readonly #log: Logger;
  readonly #backoff: Backoff;
  readonly #jobs = new Map<string, KubeObject>();
  /** uids of Jobs seen deleted: a create answer that arrives after the DELETED event must not bring one back. */
  readonly #tombstones = new Set<string>();
  readonly #listeners = new Map<string, Set<JobListener>>();
  /**
   * When each Job was last recorded, on a counter: a list sent before a Job was created (or its
   * create answered) may arrive after, without it, and must not count it deleted.
   */
  readonly #recordedAt = new Map<string, number>();
  #clock = 0;
  #resourceVersion: string | undefined;
  #abort: AbortController | undefined;
  #running = false;
  /** Counts starts: a loop of an earlier start that is still awaiting something ends when it sees a newer one. */
  #generation = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  /** Wakes the loop from a retry wait when the watch should stop. */
  #wake: (() => void) | undefined;

  constructor(options: JobWatchOptions) {
    this.#options = options;
    this.#log = options.logger;
    this.#backoff = new Backoff({ ...(options.retry ?? { initialMs: 200, maxMs: 10_000 }), ...(options.random ? { random: options.random } : {}) });
  }

  /** True while listing or watching. */
  get running(): boolean {
    return this.#running;
  }

  /**
   * Calls `listener` with the named Job whenever it is seen (right away if it is known) and with
   * undefined once it is seen gone. Starts the watch if it is not running. Returns the unfollow.
   */
  follow(name: string, listener: JobListener): () => void {
    let listeners = this.#listeners.get(name);
    if (listeners === undefined) this.#listeners.set(name, (listeners = new Set()));
    listeners.add(listener);
    const known = this.#jobs.get(name);
    if (known !== undefined) queueMicrotask(() => listeners.has(listener) && listener(known));
    if (!this.#running) this.#start();
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0) this.#listeners.delete(name);
      if (this.#listeners.size === 0 && this.#options.onChange === undefined) this.#stop();
    };
  }

  /**
   * Records a Job read or created outside the watch (a create's answer, a get after a 409), so
   * that a later list without it counts as its deletion. A Job the watch saw deleted stays gone.
   */
  observe(job: KubeObject): void {
    const uid = job.metadata.uid;
    if (uid !== undefined && this.#tombstones.has(uid)) return;
    const key = this.#keyOf(job);
    if (!this.#jobs.has(key)) {
      this.#jobs.set(key, job);
      this.#recordedAt.set(key, ++this.#clock);
    }
  }

  /** The named Job as last seen, or undefined. */
  get(name: string): KubeObject | undefined {
    return this.#jobs.get(name);
  }

  /** Starts listing and watching (for onChange) if it is not running. */
  start(): void {
    if (!this.#running) this.#start();
  }

  /** Stops watching, whoever still follows. */
  close(): void {
    this.#listeners.clear();
    this.#stop();
  }

  #start(): void {
    this.#running = true;
    this.#resourceVersion = undefined;
    void this.#loop(++this.#generation);
  }

  #stop(): void {
    this.#running = false;
    this.#abort?.abort();
    clearTimeout(this.#retryTimer);
    this.#wake?.();
    this.#jobs.clear();
    this.#recordedAt.clear();
    this.#tombstones.clear();
  }

  async #loop(generation: number): Promise<void> {
    const current = (): boolean => this.#running && generation === this.#generation;
    while (current()) {
      try {
        if (this.#resourceVersion === undefined) await this.#list(current);
        if (!current()) break;
        await this.#watchOnce(current);
        // A clean end is the server's timeout: resume at once.
        this.#backoff.reset();
      } catch (error) {
        if (!current()) break;
        const expired = error instanceof KubeApiError && error.code === 410;
        if (expired) {
          // The history was compacted (or the API server restarted): list again.
          this.#log.info({ resourceVersion: this.#resourceVersion }, "the Jobs' resourceVersion expired; listing them again");
          this.#resourceVersion = undefined;
          continue;
        }
        const waitMs = this.#backoff.next();
        this.#log.warn({ err: error, waitMs }, "watching the agent's Kubernetes Jobs failed; retrying");
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          this.#retryTimer = setTimeout(resolve, waitMs);
        });
        this.#wake = undefined;
      }
    }
  }

  async #list(current: () => boolean): Promise<void> {
    const { client, namespace, selector } = this.#options;
    const sentAt = ++this.#clock;
    const list = await client.json<KubeList>({ method: "GET", path: this.#options.path ?? paths.jobs(namespace), query: { labelSelector: selector } });
    if (!current()) return;
    this.#backoff.reset();
    const seen = new Set<string>();
    for (const job of list.items) {
      seen.add(this.#keyOf(job));
      this.#set(job);
    }
    // Gone while nobody watched: deleted, or (for this selector) reported. Not one recorded after
    // the list was sent: the list may predate it.
    for (const [name, job] of [...this.#jobs]) {
      if (!seen.has(name) && (this.#recordedAt.get(name) ?? 0) < sentAt) this.#delete(job);
    }
    this.#resourceVersion = list.metadata.resourceVersion;
    this.#options.onListed?.(seen);
  }

  async #watchOnce(current: () => boolean): Promise<void> {
    const { client, namespace, selector } = this.#options;
    const { min, max } = this.#options.watchSeconds ?? { min: 60, max: 120 };
    const timeoutSeconds = Math.round(min + (this.#options.random ?? Math.random)() * Math.max(0, max - min));
    const abort = new AbortController();
    this.#abort = abort;
    await client.watch(
      this.#options.path ?? paths.jobs(namespace),
      { labelSelector: selector, resourceVersion: this.#resourceVersion, timeoutSeconds, allowWatchBookmarks: true },
      (timeoutSeconds + 15) * 1000,
      abort.signal,
      (event) => current() && this.#onEvent(event),
    );
  }

  #onEvent(event: WatchEvent): void {
    const version = event.object.metadata?.resourceVersion;
    if (event.type === "DELETED") this.#delete(event.object);
    else if (event.type !== "BOOKMARK") this.#set(event.object);
    if (version) this.#resourceVersion = version;
  }

  #keyOf(job: KubeObject): string {
    return this.#options.keyOf?.(job) ?? job.metadata.name;
  }

  #set(job: KubeObject): void {
    const name = this.#keyOf(job);
    this.#jobs.set(name, job);
    this.#recordedAt.set(name, ++this.#clock);
    for (const listener of [...(this.#listeners.get(name) ?? [])]) listener(job);
    this.#options.onChange?.(name, job);
  }

  #delete(job: KubeObject): void {
    const name = this.#keyOf(job);
    const known = this.#jobs.get(name);
    // A DELETED for an older Job of the same name (another uid) says nothing about this one.
    if (known !== undefined && job.metadata.uid !== undefined && known.metadata.uid !== undefined && known.metadata.uid !== job.metadata.uid) return;
    this.#jobs.delete(name);
    this.#recordedAt.delete(name);
    if (job.metadata.uid !== undefined) {
      this.#tombstones.add(job.metadata.uid);
      // Only the latest deletions matter (a create answer in flight): keep the set small.
      if (this.#tombstones.size > MAX_TOMBSTONES) this.#tombstones.delete(this.#tombstones.values().next().value!);
    }
    for (const listener of [...(this.#listeners.get(name) ?? [])]) listener(undefined);
    this.#options.onChange?.(name, undefined);
  }
}
