import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { JobWatch } from "../../agent/executors/kubernetes/job-watch.js";
import type { KubeClient, KubeObject } from "../../agent/executors/kubernetes/kube-client.js";
import { ShardlineError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logging.js";
import { MANIFEST_API_VERSION, MANIFEST_KIND, parseManifest } from "../../shared/manifest/index.js";
import type { ControllerCore } from "../core/controller-core.js";
import type { CoreEvent } from "../core/messages.js";
import type { Effects } from "../core/outbox.js";
import { checkStrategyLoaded } from "../core/sharding/custom-strategy.js";
import { TERMINAL_STATES } from "../core/store-port.js";
import type { CoreDriver } from "./core-driver.js";

/** The finalizer that holds a deleted ShardedJob until its job's executions have ended. */
export const FINALIZER = "shardline.dev/executions";
/** Default of KubeJobsOptions.statusEveryMs. */
export const DEFAULT_STATUS_EVERY_MS = 2_000;
/** Default of KubeJobsOptions.timesEveryMs. */
export const DEFAULT_TIMES_EVERY_MS = 60_000;
/** Events of one reason about one object are posted at most once in this long; the others are counted into the next. */
const EVENT_REPEAT_MS = 10 * 60_000;

/** The core events that become Kubernetes Events on their job's ShardedJob: reason and type. */
const KUBE_EVENTS: Readonly<Record<string, { reason: string; type: "Normal" | "Warning" }>> = {
  "job.misfired": { reason: "Misfired", type: "Warning" },
  "execution.failover": { reason: "Failover", type: "Normal" },
  "job.strategy-failed": { reason: "StrategyFailed", type: "Warning" },
  "rollout.aborted": { reason: "RolloutAborted", type: "Warning" },
};

/** Where the controller follows ShardedJobs (--jobs-from kubernetes). */
export interface KubeJobsOptions {
  client: KubeClient;
  /** The namespaces watched; empty means every namespace. */
  namespaces: readonly string[];
  /** How often statuses are looked at: a change of a job's generation, conditions, shards or revisions is written within this long. */
  statusEveryMs?: number;
  /**
   * A change of only a job's fire times and last outcome (which a job firing every second makes
   * every second) is written at most this often: the status is coalesced, not a write per fire.
   */
  timesEveryMs?: number;
}

/** The job a ShardedJob becomes: NAMESPACE.NAME (a job name never has a dot; a namespace has none). */
export function jobNameOf(namespace: string, name: string): string {
  return `${namespace}.${name}`;
}

/** The namespace and name of the ShardedJob a job came from; undefined for a job applied otherwise. */
export function shardedJobOf(job: string): { namespace: string; name: string } | undefined {
  const dot = job.indexOf(".");
  return dot < 0 ? undefined : { namespace: job.slice(0, dot), name: job.slice(dot + 1) };
}

/** What a ShardedJob's status says, as written through its status subresource. */
interface ShardedJobStatus {
  observedGeneration: number;
  shards: number;
  readyShards: number;
  owners: Record<string, number>;
  lastFire: string | null;
  nextFire: string | null;
  lastOutcome: string | null;
  currentRevision: number;
  stableRevision: number;
  conditions: { type: string; status: "True" | "False"; reason: string; message: string; lastTransitionTime: string; observedGeneration: number }[];
}

/** One ShardedJob as the source knows it. */
interface Followed {
  namespace: string;
  name: string;
  uid: string;
  generation: number;
  /** Why its spec was not applied (it does not validate); undefined when it was. */
  invalid?: string;
  /** The last status written, as JSON, so an unchanged one is not written again; and its part without the times. */
  written?: string;
  writtenShape?: string;
  /** When a status was last written. */
  writtenAt?: number;
  /** When each condition last changed, by type. */
  transitions: Map<string, { status: string; at: string }>;
  lastOutcome?: string;
}

/**
 * The controller following ShardedJob objects of the API server (--jobs-from kubernetes), while
 * it leads: it lists and watches them (resourceVersion, bookmarks, a new list after 410 Gone),
 * applies each to the core as job NAMESPACE.NAME with the same checks as `shardline apply`, puts
 * its finalizer on each so that a deleted one is kept until its job's executions have ended
 * (deleted from the core as `shardline delete` does, then the finalizer removed), writes their
 * status back through the status subresource at most once per statusEveryMs per job and only
 * when it changed, and posts Kubernetes Events (misfires, failovers, strategy failures, rollout
 * aborts) on them, the same one at most once in ten minutes. A job such a source made cannot be
 * applied or deleted through the admin API (admin-service.ts says where it is managed).
 */
export class KubeJobSource {
  readonly #followed = new Map<string, Followed>();
  readonly #watches: JobWatch[];
  /** Per object and reason: when an Event was last posted, and how many were held back since. */
  readonly #posted = new Map<string, { at: number; held: number }>();
  readonly #unsubscribe: (() => void)[] = [];
  #statusTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Finalizers being removed, by key, so a second event does not remove it twice. */
  readonly #finishing = new Set<string>();
  /** Per object, the handling of its latest change: the next waits for it, so changes apply in order. */
  readonly #queues = new Map<string, Promise<void>>();

  constructor(
    private readonly options: KubeJobsOptions,
    private readonly core: ControllerCore,
    private readonly driver: CoreDriver,
    private readonly logger: Logger,
    private readonly customStrategies: ReadonlyMap<string, unknown>,
  ) {
    const targets = options.namespaces.length === 0 ? [undefined] : options.namespaces;
    this.#watches = targets.map(
      (namespace) =>
        new JobWatch({
          client: options.client,
          namespace: namespace ?? "",
          path: namespace === undefined ? "/apis/shardline.dev/v1/shardedjobs" : `/apis/shardline.dev/v1/namespaces/${encodeURIComponent(namespace)}/shardedjobs`,
          selector: "",
          logger,
          keyOf: (object) => `${object.metadata.namespace ?? ""}/${object.metadata.name}`,
          onChange: (key, object) => this.#enqueue(key, () => this.#onChange(key, object)),
          onListed: (keys) => this.#onListed(namespace, keys),
        }),
    );
  }

  start(): void {
    this.#unsubscribe.push(this.driver.onEvent((event) => this.#onEvent(event)));
    this.#unsubscribe.push(this.driver.onApplied((effects) => this.#onApplied(effects)));
    for (const watch of this.#watches) watch.start();
    this.#statusTimer = setInterval(() => void this.#writeStatuses(), this.options.statusEveryMs ?? DEFAULT_STATUS_EVERY_MS);
    this.#statusTimer.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#statusTimer);
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    for (const watch of this.#watches) watch.close();
  }

  /**
   * Runs `task` after the tasks queued for the same object: an object's changes are applied in
   * the order seen, so an older spec whose finalizer write is still on its way is never applied
   * after a newer one.
   */
  #enqueue(key: string, task: () => Promise<void>): void {
    const next = (this.#queues.get(key) ?? Promise.resolve()).then(task).catch((error: unknown) => this.#warn(error, key));
    this.#queues.set(key, next);
    void next.then(() => {
      if (this.#queues.get(key) === next) this.#queues.delete(key);
    });
  }

  async #onChange(key: string, object: KubeObject | undefined): Promise<void> {
    if (this.#stopped) return;
    const [namespace = "", name = ""] = key.split("/");
    const job = jobNameOf(namespace, name);
    if (object === undefined) {
      this.#followed.delete(key);
      await this.#deleteJob(job);
      return;
    }
    const finalizers = (object.metadata as { finalizers?: string[] }).finalizers ?? [];
    if (object.metadata.deletionTimestamp !== undefined) {
      if (!finalizers.includes(FINALIZER)) return;
      await this.#deleteJob(job);
      await this.#finishWhenDone(key, object, job);
      return;
    }
    const generation = Number((object.metadata as { generation?: number }).generation ?? 1);
    const followed: Followed = this.#followed.get(key) ?? { namespace, name, uid: object.metadata.uid ?? "", generation, transitions: new Map() };
    followed.generation = generation;
    followed.uid = object.metadata.uid ?? followed.uid;
    this.#followed.set(key, followed);
    if (!finalizers.includes(FINALIZER)) {
      await this.options.client.json({ method: "PATCH", path: objectPath(namespace, name), body: { metadata: { finalizers: [...finalizers, FINALIZER] } }, contentType: "application/merge-patch+json" });
    }
    const manifest = JSON.stringify({ apiVersion: MANIFEST_API_VERSION, kind: MANIFEST_KIND, metadata: { name, ...(object.metadata.labels === undefined ? {} : { labels: object.metadata.labels }) }, spec: object.spec ?? {} });
    let parsed: ReturnType<typeof parseManifest>;
    try {
      parsed = parseManifest(manifest);
      checkStrategyLoaded(parsed.spec.strategy, this.customStrategies);
    } catch (error) {
      if (!(error instanceof ShardlineError) || error.code !== "invalid-argument") throw error;
      followed.invalid = error.message;
      this.#postEvent(followed, "InvalidSpec", "Warning", `not applied: ${error.message}`);
      await this.#writeStatus(key, followed);
      return;
    }
    delete followed.invalid;
    const spec = { ...parsed.spec, name: job };
    await this.driver.run((now) => this.core.applyJob(job, spec, parsed.manifest, now, { appliedBy: `kubernetes:${namespace}/${name}` }));
    await this.#writeStatus(key, followed);
  }

  /** After a list: jobs of the watched namespaces whose ShardedJob is gone are deleted (gone while no controller watched). */
  #onListed(namespace: string | undefined, keys: ReadonlySet<string>): void {
    for (const view of this.core.listJobs()) {
      const from = shardedJobOf(view.record.name);
      if (from === undefined || (namespace !== undefined && from.namespace !== namespace)) continue;
      const key = `${from.namespace}/${from.name}`;
      if (!keys.has(key)) this.#enqueue(key, () => this.#deleteJob(view.record.name));
    }
  }

  async #deleteJob(job: string): Promise<void> {
    if (!this.core.jobCount(job).exists) return;
    await this.driver.run((now) => this.core.deleteJob(job, now));
  }

  /** Removes the finalizer once the job's executions have all ended (cancelled ones confirmed by their agents). */
  async #finishWhenDone(key: string, object: KubeObject, job: string): Promise<void> {
    if (this.#finishing.has(key)) return;
    this.#finishing.add(key);
    try {
      while (!this.#stopped && this.core.openExecutionsOf(job) > 0) await new Promise((resolve) => setTimeout(resolve, 200));
      if (this.#stopped) return;
      const finalizers = ((object.metadata as { finalizers?: string[] }).finalizers ?? []).filter((f) => f !== FINALIZER);
      await this.options.client.json({ method: "PATCH", path: objectPath(object.metadata.namespace ?? "", object.metadata.name), body: { metadata: { finalizers } }, contentType: "application/merge-patch+json" });
      this.#followed.delete(key);
    } finally {
      this.#finishing.delete(key);
    }
  }

  #onApplied(effects: Effects): void {
    for (const record of effects.persist.executions ?? []) {
      if (!TERMINAL_STATES.has(record.state)) continue;
      const from = shardedJobOf(record.job);
      if (from === undefined) continue;
      const followed = this.#followed.get(`${from.namespace}/${from.name}`);
      if (followed !== undefined) followed.lastOutcome = record.state;
    }
  }

  #onEvent(event: CoreEvent): void {
    const kind = KUBE_EVENTS[event.type];
    if (kind === undefined || event.job === undefined) return;
    const from = shardedJobOf(event.job);
    const followed = from === undefined ? undefined : this.#followed.get(`${from.namespace}/${from.name}`);
    if (followed !== undefined) this.#postEvent(followed, kind.reason, kind.type, event.message);
  }

  /**
   * Posts an Event on the ShardedJob, as Kubernetes' own event correlation would: one of a reason
   * per object per EVENT_REPEAT_MS (a job misfiring every second makes one, not one a second);
   * the next says how many were held back meanwhile (the controller's log and event stream have
   * each of them).
   */
  #postEvent(followed: Followed, reason: string, type: "Normal" | "Warning", text: string): void {
    const key = `${followed.namespace}/${followed.name}/${reason}`;
    const now = Date.now();
    const last = this.#posted.get(key);
    if (last !== undefined && now - last.at < EVENT_REPEAT_MS) {
      last.held++;
      return;
    }
    const message = last === undefined || last.held === 0 ? text : `${text} (and ${last.held} more like it since ${new Date(last.at).toISOString()})`;
    this.#posted.set(key, { at: now, held: 0 });
    for (const [old, { at }] of this.#posted) if (now - at >= 2 * EVENT_REPEAT_MS) this.#posted.delete(old);
    // events.k8s.io/v1: eventTime is a MicroTime, with six digits of fraction.
    const eventTime = new Date(now).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
    const body = {
      apiVersion: "events.k8s.io/v1",
      kind: "Event",
      metadata: { name: `${followed.name}.${randomBytes(8).toString("hex")}`, namespace: followed.namespace },
      eventTime,
      reportingController: "shardline.dev/controller",
      reportingInstance: hostname(),
      action: reason,
      reason,
      regarding: { apiVersion: MANIFEST_API_VERSION, kind: MANIFEST_KIND, name: followed.name, namespace: followed.namespace, uid: followed.uid },
      note: message.slice(0, 1024),
      type,
    };
    void this.options.client
      .json({ method: "POST", path: `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(followed.namespace)}/events`, body })
      .catch((error: unknown) => this.#warn(error, `${followed.namespace}/${followed.name}`));
  }

  async #writeStatuses(): Promise<void> {
    for (const [key, followed] of this.#followed) {
      if (this.#stopped) return;
      await this.#writeStatus(key, followed).catch((error: unknown) => this.#warn(error, key));
    }
  }

  /**
   * Writes the job's status if it changed since it was last written: at once when what changed
   * is more than its fire times and last outcome, else once timesEveryMs has passed since the
   * last write.
   */
  async #writeStatus(key: string, followed: Followed): Promise<void> {
    const status = this.#statusOf(followed);
    const text = JSON.stringify(status);
    if (text === followed.written) return;
    const { lastFire: _lastFire, nextFire: _nextFire, lastOutcome: _lastOutcome, ...shape } = status;
    const shapeText = JSON.stringify(shape);
    const now = Date.now();
    if (shapeText === followed.writtenShape && now - (followed.writtenAt ?? 0) < (this.options.timesEveryMs ?? DEFAULT_TIMES_EVERY_MS)) return;
    await this.options.client.json({ method: "PATCH", path: `${objectPath(followed.namespace, followed.name)}/status`, body: { status }, contentType: "application/merge-patch+json" });
    followed.written = text;
    followed.writtenShape = shapeText;
    followed.writtenAt = now;
  }

  #statusOf(followed: Followed): ShardedJobStatus {
    const job = jobNameOf(followed.namespace, followed.name);
    const now = new Date().toISOString();
    const condition = (type: string, on: boolean, reason: string, message: string) => {
      const status = on ? "True" : "False";
      const known = followed.transitions.get(type);
      const at = known !== undefined && known.status === status ? known.at : now;
      followed.transitions.set(type, { status, at });
      return { type, status, reason, message, lastTransitionTime: at, observedGeneration: followed.generation } as const;
    };
    if (followed.invalid !== undefined || !this.core.jobCount(job).exists) {
      const why = followed.invalid ?? "not applied yet";
      return {
        observedGeneration: followed.generation,
        shards: 0,
        readyShards: 0,
        owners: {},
        lastFire: null,
        nextFire: null,
        lastOutcome: followed.lastOutcome ?? null,
        currentRevision: 0,
        stableRevision: 0,
        conditions: [condition("Ready", false, "InvalidSpec", why), condition("Progressing", false, "InvalidSpec", why), condition("Degraded", true, "InvalidSpec", why)],
      };
    }
    const view = this.core.getJob(job);
    const rollout = this.core.rollout(job);
    const owners: Record<string, number> = {};
    let ready = 0;
    for (const assignment of this.core.listAssignments(job)) {
      owners[assignment.agent] = (owners[assignment.agent] ?? 0) + 1;
      if (!assignment.revoking) ready++;
    }
    const enabled = view.record.spec.shards - view.record.disabledShards.length;
    const progressing = rollout.phase === "progressing" || rollout.phase === "paused";
    const aborted = rollout.phase === "aborted";
    const waiting = view.waitingReason;
    return {
      observedGeneration: followed.generation,
      shards: view.record.spec.shards,
      readyShards: ready,
      owners,
      lastFire: view.lastFire === undefined ? null : new Date(view.lastFire).toISOString(),
      nextFire: view.nextFire === undefined ? null : new Date(view.nextFire).toISOString(),
      lastOutcome: followed.lastOutcome ?? null,
      currentRevision: rollout.currentRevision,
      stableRevision: rollout.stableRevision,
      conditions: [
        condition("Ready", ready >= enabled && waiting === undefined, ready >= enabled ? (waiting === undefined ? "AllShardsOwned" : "Waiting") : "ShardsUnowned", waiting ?? `${ready} of ${enabled} shards owned`),
        condition("Progressing", progressing, progressing ? "RolloutInProgress" : "Stable", progressing ? `rollout to revision ${rollout.targetRevision}: ${rollout.waiting ?? rollout.phase}` : `every shard runs revision ${rollout.stableRevision}`),
        condition("Degraded", aborted, aborted ? "RolloutAborted" : "AsExpected", aborted ? (rollout.reason ?? `the rollout of revision ${rollout.targetRevision} was aborted`) : ""),
      ],
    };
  }

  #warn(error: unknown, what: string): void {
    if (this.#stopped) return;
    this.logger.warn({ err: error, shardedJob: what }, `following ShardedJob ${what} failed; it is tried again on its next change or status write`);
  }
}

function objectPath(namespace: string, name: string): string {
  return `/apis/shardline.dev/v1/namespaces/${encodeURIComponent(namespace)}/shardedjobs/${encodeURIComponent(name)}`;
}
