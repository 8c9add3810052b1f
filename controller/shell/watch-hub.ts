import { randomBytes } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ShardlineError } from "../../shared/errors.js";
import {
  type ControllerStatus,
  ControllerStatusSchema,
  type ShardStatus,
  ShardStatusSchema,
  type WatchEventsResponse,
  WatchEventsResponseSchema,
  type WatchRequest,
  type WatchResponseSchema,
  WatchTopic,
} from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { type Agent, AgentState, type Execution, type Job } from "../../shared/gen/shardline/v1/types_pb.js";
import type { CallContext, ServerStreamWriter } from "../../shared/grpc/index.js";
import type { Logger } from "../../shared/logging.js";
import { VERSION } from "../../shared/version.js";
import type { ControllerCore } from "../core/controller-core.js";
import type { CoreEvent } from "../core/messages.js";
import type { Effects } from "../core/outbox.js";
import { type ExecutionRecord, TERMINAL_STATES } from "../core/store-port.js";
import type { Store } from "../store/store.js";
import type { CoreDriver } from "./core-driver.js";
import { agentToProto, executionToProto, jobToProto } from "./proto-mapping.js";

/** Changes are published at most this often: what changed in between goes out as one batch. */
const FLUSH_MS = 250;
/** Jobs and agents are recomputed at most this often, unless one was created, deleted or changed state. */
const SLOW_TOPIC_MS = 1_000;
/** The status goes out this often. */
const STATUS_MS = 1_000;
/** Changes kept to resume watches from (a watch whose cursor is older gets a fresh snapshot). */
const KEPT_CHANGES = 20_000;
/** Events kept for a new watch's snapshot (and `shardline events` without --watch). */
export const RECENT_EVENTS = 1_000;
/** Items per snapshot message. */
const SNAPSHOT_CHUNK = 500;
/** A watcher with this many messages unread, or messages holding this many changes, is cut off. */
export const DEFAULT_WATCH_LIMITS = { unreadMessages: 2_000, unreadChanges: 50_000 };
/** How long the hub keeps its state (and so resumable cursors) after its last watcher left. */
const LINGER_MS = 60_000;
/** The executions read to learn each shard's latest one when the hub starts. */
const SEED_EXECUTIONS = 10_000;
/** Default and most of WatchRequest.execution_snapshot_limit. */
const DEFAULT_EXECUTION_SNAPSHOT = 100;
const MAX_EXECUTION_SNAPSHOT = 10_000;
/** The window fires and executions per second are measured over. */
const RATE_WINDOW_MS = 10_000;

type Topic = "jobs" | "agents" | "shards" | "executions" | "events" | "status";

const TOPICS: Readonly<Record<Exclude<WatchTopic, WatchTopic.UNSPECIFIED>, Topic>> = {
  [WatchTopic.JOBS]: "jobs",
  [WatchTopic.AGENTS]: "agents",
  [WatchTopic.SHARDS]: "shards",
  [WatchTopic.EXECUTIONS]: "executions",
  [WatchTopic.EVENTS]: "events",
  [WatchTopic.STATUS]: "status",
};

/** Events after which jobs and agents are recomputed at the next flush rather than within a second. */
const PROMPT_EVENTS = /^(job\.(created|updated|deleted|paused|resumed)|agent\.(joined|lost|left|lease-expired|cordoned|uncordoned|draining|replaced|reconnected)|rollout\.)/;

/** One published batch of changes, for every watcher (each gets the part its filter keeps). */
interface Batch {
  seq: number;
  jobs: Job[];
  deletedJobs: string[];
  agents: Agent[];
  removedAgents: string[];
  shards: ShardStatus[];
  removedShards: { job: string; shard: number }[];
  executions: Execution[];
  events: WatchEventsResponse[];
  status: ControllerStatus | undefined;
}

type WatchMessage = MessageInitShape<typeof WatchResponseSchema>;

/** A watch in progress. */
interface Watcher {
  topics: ReadonlySet<Topic>;
  job: string;
  stream: ServerStreamWriter<typeof WatchResponseSchema>;
  /** Batches published while its snapshot is read, sent after it; undefined once live. */
  held: Batch[] | undefined;
  /** Ends the watch with this error (cut off, or the controller stopped leading). */
  fail: (error: ShardlineError) => void;
  /** True once it failed: nothing more is sent to it. */
  failed: boolean;
  /** The changes in each message sent, newest last (as many as may be unread): the unread ones are the last `stream.queued`. */
  sent: number[];
}

/** What the hub needs besides the core. */
export interface WatchHubOptions {
  core: ControllerCore;
  driver: CoreDriver;
  store: Store;
  logger: Logger;
  /** The address the controller is reached at (ControllerStatus.address). */
  address: () => string;
  /** The controller's --trace-url-template, or "". */
  traceUrlTemplate: string;
  /** When a watcher is cut off; default DEFAULT_WATCH_LIMITS. */
  limits?: { unreadMessages: number; unreadChanges: number };
  clock?: () => number;
}

/**
 * The live view behind AdminService.Watch: what the controller's jobs, agents and shards look
 * like, kept while someone watches, and every change to them as numbered batches.
 *
 * Nothing is computed on the hot path for it: the hub listens to the driver's applied batches
 * (executions as stored) and events, notes what they make stale, and at most every FLUSH_MS
 * recomputes what is stale from the core's views, compares it with what it published last, and
 * publishes the difference as one batch. Jobs and agents change with every fire and execution,
 * so they are recomputed at most once a second unless an event says one was created, deleted or
 * changed state; a shard's latest execution is followed from the stored records, without
 * recomputing the assignments. A watcher gets a snapshot (the hub's current view, the newest
 * executions from the store, the recent events) and then the batches, filtered; its cursor is
 * the hub's incarnation and the batch number, and the last KEPT_CHANGES changes are kept to
 * resume from. A watcher that lets MAX_UNREAD_MESSAGES pile up is cut off: nothing a watcher does
 * slows the controller.
 *
 * With no watcher for LINGER_MS the hub forgets everything (a later watch starts a new
 * incarnation); it keeps only the recent events.
 */
export class WatchHub {
  readonly #core: ControllerCore;
  readonly #driver: CoreDriver;
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #options: WatchHubOptions;
  readonly #clock: () => number;
  readonly #unsubscribe: (() => void)[];

  /** The recent events, always kept (a ring of RECENT_EVENTS). */
  readonly #recentEvents: CoreEvent[] = [];
  #recentNext = 0;

  #incarnation = "";
  #seq = 0;
  /** Resolves once the hub has its view (set while starting and running). */
  #starting: Promise<void> | undefined;
  /** True from the start on: what the driver applies is followed. */
  #collecting = false;
  /** True once the view is taken: changes are published. */
  #ready = false;
  readonly #watchers = new Set<Watcher>();
  readonly #kept: Batch[] = [];
  #keptChanges = 0;
  #lingerTimer: NodeJS.Timeout | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  #statusTimer: NodeJS.Timeout | undefined;
  #stopped: ShardlineError | undefined;

  /** The view as last published, each item with its fingerprint. */
  readonly #jobs = new Map<string, { print: string; message: Job }>();
  readonly #agents = new Map<string, { print: string; message: Agent }>();
  readonly #shards = new Map<string, { print: string; message: ShardStatus }>();
  /** The newest execution known per shard ("job/shard"). */
  readonly #latest = new Map<string, ExecutionRecord>();
  #status: ControllerStatus | undefined;

  /** What is stale since the last flush. */
  #jobsStale = false;
  #agentsStale = false;
  #promptly = false;
  #shardsStale = false;
  readonly #shardsWithNewExecutions = new Set<string>();
  #statusDue = false;
  #jobsAt = 0;
  #agentsAt = 0;
  readonly #executions = new Map<string, ExecutionRecord>();
  readonly #events: CoreEvent[] = [];
  /** [time, fires so far, executions finished so far], for the rates. */
  readonly #samples: [number, number, number][] = [];
  #fires = 0;
  #finished = 0;
  /** The fires counted lately ("job@fireTime" to when), so a fire's records stored in several batches count once. */
  readonly #firesSeen = new Map<string, number>();

  constructor(options: WatchHubOptions) {
    this.#options = options;
    this.#core = options.core;
    this.#driver = options.driver;
    this.#store = options.store;
    this.#logger = options.logger;
    this.#clock = options.clock ?? Date.now;
    this.#unsubscribe = [options.driver.onEvent((event) => this.#onEvent(event)), options.driver.onApplied((effects) => this.#onApplied(effects))];
  }

  /** Publishes an event that does not come from the core (an audit record), as the core's events are. */
  note(event: CoreEvent): void {
    this.#onEvent(event);
  }

  /** The newest events kept, oldest first. */
  recentEvents(job = ""): CoreEvent[] {
    const ordered = [...this.#recentEvents.slice(this.#recentNext), ...this.#recentEvents.slice(0, this.#recentNext)];
    return job === "" ? ordered : ordered.filter((event) => event.job === job);
  }

  /**
   * Serves one Watch call until the client goes away, or throws why it ended: cut off for
   * falling behind, or the controller stopped leading.
   */
  async watch(request: WatchRequest, stream: ServerStreamWriter<typeof WatchResponseSchema>, context: CallContext): Promise<void> {
    const topics = topicsOf(request.topics);
    const limit = request.executionSnapshotLimit === 0 ? DEFAULT_EXECUTION_SNAPSHOT : request.executionSnapshotLimit;
    if (limit > MAX_EXECUTION_SNAPSHOT) {
      throw ShardlineError.invalid("execution_snapshot_limit", request.executionSnapshotLimit, `0 (meaning ${DEFAULT_EXECUTION_SNAPSHOT}) to ${MAX_EXECUTION_SNAPSHOT}`);
    }
    if (this.#stopped !== undefined) throw this.#stopped;
    let fail: (error: ShardlineError) => void = () => {};
    const ended = new Promise<void>((resolve, reject) => {
      fail = reject;
      if (context.signal.aborted) resolve();
      context.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    // It may fail (cut off, the controller stopping) while the snapshot is still being read: it
    // is awaited below, and must not count as unhandled meanwhile.
    ended.catch(() => {});
    const watcher: Watcher = {
      topics,
      job: request.job,
      stream,
      held: [],
      failed: false,
      sent: [],
      fail: (error) => {
        watcher.failed = true;
        fail(error);
      },
    };
    this.#watchers.add(watcher);
    clearTimeout(this.#lingerTimer);
    try {
      await this.#start();
      if (this.#stopped !== undefined) throw this.#stopped;
      const resumeFrom = this.#resumable(request.cursor);
      if (resumeFrom !== undefined) {
        for (const batch of this.#kept) if (batch.seq > resumeFrom) this.#send(watcher, batch);
        this.#goLive(watcher, this.#seq);
      } else {
        await this.#sendSnapshot(watcher, request.cursor !== "", limit);
      }
      await ended;
    } finally {
      this.#watchers.delete(watcher);
      if (this.#watchers.size === 0 && this.#stopped === undefined) {
        this.#lingerTimer = setTimeout(() => this.#forget(), LINGER_MS);
        this.#lingerTimer.unref();
      }
    }
  }

  /** Ends every watch with `reason` (the controller stops leading) and stops listening. */
  stop(reason: string): void {
    this.#stopped = new ShardlineError("unavailable", `${reason}; watch again (a controller that leads answers)`);
    for (const watcher of this.#watchers) watcher.fail(this.#stopped);
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    this.#forget();
  }

  /** The batch number after which a watch with `cursor` resumes, or undefined when it cannot. */
  #resumable(cursor: string): number | undefined {
    const match = /^([0-9a-f]+)\.(\d+)$/.exec(cursor);
    if (match === null || match[1] !== this.#incarnation) return undefined;
    const seq = Number(match[2]);
    const oldest = this.#kept[0]?.seq ?? this.#seq + 1;
    return seq <= this.#seq && seq >= oldest - 1 ? seq : undefined;
  }

  /** Starts collecting (once): learns each shard's newest execution from the store, then takes the view. */
  #start(): Promise<void> {
    this.#starting ??= (async () => {
      this.#incarnation = randomBytes(6).toString("hex");
      this.#seq = 0;
      // From here on the stored records are followed; the read below fills in what came before.
      this.#collecting = true;
      await this.#driver.idle();
      const stored = await this.#store.listExecutions({ limit: SEED_EXECUTIONS });
      // Stopped meanwhile (the controller stopped leading): nothing more to start.
      if (this.#stopped !== undefined) return;
      for (const record of stored) this.#noteLatest(record);
      this.#seedRates(stored);
      this.#executions.clear();
      this.#events.length = 0;
      this.#recompute(true);
      this.#ready = true;
      this.#statusTimer = setInterval(() => {
        this.#statusDue = true;
        this.#flushSoon();
      }, STATUS_MS);
      this.#statusTimer.unref();
    })();
    return this.#starting;
  }

  /** Forgets the view and the kept batches: the next watch starts a new incarnation. */
  #forget(): void {
    if (this.#watchers.size > 0 && this.#stopped === undefined) return;
    clearTimeout(this.#lingerTimer);
    clearTimeout(this.#flushTimer);
    clearInterval(this.#statusTimer);
    this.#flushTimer = undefined;
    this.#starting = undefined;
    this.#collecting = false;
    this.#ready = false;
    this.#kept.length = 0;
    this.#keptChanges = 0;
    this.#jobs.clear();
    this.#agents.clear();
    this.#shards.clear();
    this.#latest.clear();
    this.#executions.clear();
    this.#events.length = 0;
    this.#samples.length = 0;
    this.#firesSeen.clear();
    this.#fires = 0;
    this.#finished = 0;
    this.#shardsWithNewExecutions.clear();
  }

  #onEvent(event: CoreEvent): void {
    if (this.#recentEvents.length < RECENT_EVENTS) this.#recentEvents.push(event);
    else this.#recentEvents[this.#recentNext] = event;
    this.#recentNext = (this.#recentNext + 1) % RECENT_EVENTS;
    if (!this.#collecting) return;
    this.#events.push(event);
    const { type } = event;
    if (PROMPT_EVENTS.test(type)) this.#promptly = true;
    if (type.startsWith("job.") || type.startsWith("rollout.")) {
      this.#jobsStale = true;
      this.#shardsStale = true;
    } else if (type.startsWith("agent.")) {
      this.#agentsStale = true;
      this.#jobsStale = true;
      this.#shardsStale = true;
    } else if (type.startsWith("shard.")) {
      this.#agentsStale = true;
      this.#shardsStale = true;
    }
    this.#flushSoon();
  }

  #onApplied(effects: Effects): void {
    if (!this.#collecting) return;
    const { executions, jobs, cursors, deletedJobs } = effects.persist;
    if ((jobs?.length ?? 0) > 0 || (cursors?.length ?? 0) > 0 || (deletedJobs?.length ?? 0) > 0) this.#jobsStale = true;
    if ((deletedJobs?.length ?? 0) > 0) this.#shardsStale = true;
    if (executions !== undefined && executions.length > 0) {
      const now = this.#clock();
      for (const record of executions) {
        this.#executions.set(record.id, record);
        if (this.#noteLatest(record)) this.#shardsWithNewExecutions.add(`${record.job}/${record.shard}`);
        this.#count(record, now);
      }
      // Running counts changed.
      this.#agentsStale = true;
    }
    this.#flushSoon();
  }

  /** Counts a stored record for the rates: a fire when its first attempt is first seen, an execution when it finished. */
  #count(record: ExecutionRecord, at: number): void {
    if (TERMINAL_STATES.has(record.state)) this.#finished++;
    if (record.attempt !== 1) return;
    const fire = `${record.job}@${record.fireTime}`;
    if (this.#firesSeen.has(fire)) return;
    this.#firesSeen.set(fire, at);
    this.#fires++;
  }

  /**
   * Starts the rates from the stored executions the hub read when it started: the fires made and
   * the executions finished in the last RATE_WINDOW_MS before now count as if followed, so the
   * first status a watch gets already says how busy the controller is.
   */
  #seedRates(stored: readonly ExecutionRecord[]): void {
    const now = this.#clock();
    const since = now - RATE_WINDOW_MS;
    this.#samples.length = 0;
    this.#samples.push([since, 0, 0]);
    for (const record of stored) {
      // A fire's instant may lie a little ahead (triggers in one millisecond get the next ones).
      if (record.fireTime >= since && record.attempt === 1 && !this.#firesSeen.has(`${record.job}@${record.fireTime}`)) {
        this.#firesSeen.set(`${record.job}@${record.fireTime}`, now);
        this.#fires++;
      }
      if (TERMINAL_STATES.has(record.state) && (record.finishedAt ?? 0) >= since) this.#finished++;
    }
  }

  /** Notes a stored execution as its shard's newest if it is; true when it became so (or changed). */
  #noteLatest(record: ExecutionRecord): boolean {
    const key = `${record.job}/${record.shard}`;
    const known = this.#latest.get(key);
    if (known !== undefined && (known.fireTime > record.fireTime || (known.fireTime === record.fireTime && known.attempt > record.attempt))) return false;
    this.#latest.set(key, record);
    return true;
  }

  #flushSoon(): void {
    // Also while lingering without watchers: the kept batches stay current for a watch that resumes.
    if (this.#flushTimer !== undefined || !this.#ready) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      this.#flush();
    }, FLUSH_MS);
    this.#flushTimer.unref();
  }

  /** Publishes what changed since the last flush as one batch. */
  #flush(): void {
    if (this.#stopped !== undefined || !this.#ready) return;
    const batch = this.#recompute(false);
    const executions = [...this.#executions.values()].map((record) => executionToProto(record));
    this.#executions.clear();
    batch.executions = executions;
    batch.events = this.#events.splice(0).map(eventToProto);
    if (this.#statusDue) {
      this.#statusDue = false;
      batch.status = this.#takeStatus();
    }
    const changes = sizeOf(batch);
    if (changes > 0) {
      batch.seq = ++this.#seq;
      this.#kept.push(batch);
      this.#keptChanges += changes;
      while (this.#keptChanges > KEPT_CHANGES && this.#kept.length > 1) this.#keptChanges -= sizeOf(this.#kept.shift()!);
      for (const watcher of this.#watchers) {
        if (watcher.held !== undefined) watcher.held.push(batch);
        else this.#send(watcher, batch);
      }
    }
    // Jobs or agents left for their next second.
    if (this.#jobsStale || this.#agentsStale) this.#flushSoon();
  }

  /**
   * Recomputes what is stale (everything with `all`), updates the view, and returns the
   * differences as a batch (numbered by the caller).
   */
  #recompute(all: boolean): Batch {
    const now = this.#clock();
    const batch: Batch = { seq: 0, jobs: [], deletedJobs: [], agents: [], removedAgents: [], shards: [], removedShards: [], executions: [], events: [], status: undefined };
    const promptly = this.#promptly;
    this.#promptly = false;
    if (all || (this.#jobsStale && (promptly || now - this.#jobsAt >= SLOW_TOPIC_MS))) {
      this.#jobsStale = false;
      this.#jobsAt = now;
      const seen = new Set<string>();
      for (const view of this.#core.listJobs()) {
        const name = view.record.name;
        seen.add(name);
        const rollout = this.#core.rollout(name);
        const print = JSON.stringify([view.record.revision, view.record.paused, view.nextFire, view.lastFire, view.waitingReason, view.record.disabledShards, rollout]);
        if (this.#jobs.get(name)?.print === print) continue;
        const message = jobToProto(view, rollout);
        this.#jobs.set(name, { print, message });
        batch.jobs.push(message);
      }
      for (const name of this.#jobs.keys()) {
        if (seen.has(name)) continue;
        this.#jobs.delete(name);
        batch.deletedJobs.push(name);
      }
    }
    if (all || (this.#agentsStale && (promptly || now - this.#agentsAt >= SLOW_TOPIC_MS))) {
      this.#agentsStale = false;
      this.#agentsAt = now;
      const seen = new Set<string>();
      for (const view of this.#core.listAgents()) {
        seen.add(view.id);
        // A connected agent's lease moves with every heartbeat: it counts as a change only once lost.
        const print = JSON.stringify({ ...view, leaseExpiresAt: view.state === "lost" ? view.leaseExpiresAt : 0 });
        if (this.#agents.get(view.id)?.print === print) continue;
        const message = agentToProto(view);
        this.#agents.set(view.id, { print, message });
        batch.agents.push(message);
      }
      for (const id of this.#agents.keys()) {
        if (seen.has(id)) continue;
        this.#agents.delete(id);
        batch.removedAgents.push(id);
      }
    }
    if (all || this.#shardsStale) {
      this.#shardsStale = false;
      this.#shardsWithNewExecutions.clear();
      this.#recomputeShards(batch);
    } else if (this.#shardsWithNewExecutions.size > 0) {
      for (const key of this.#shardsWithNewExecutions) {
        const known = this.#shards.get(key);
        if (known === undefined) continue;
        this.#publishShard(batch, key, { ...known.message, lastExecution: this.#latestOf(key) });
      }
      this.#shardsWithNewExecutions.clear();
    }
    if (all) this.#status = this.#takeStatus();
    return batch;
  }

  #recomputeShards(batch: Batch): void {
    const owners = new Map(this.#core.listAssignments().map((a) => [`${a.job}/${a.shard}`, a]));
    const reasons = new Map(this.#core.listUnassigned().map((u) => [`${u.job}/${u.shard}`, u.reason]));
    const seen = new Set<string>();
    for (const view of this.#core.listJobs()) {
      const { name, spec, disabledShards } = view.record;
      const disabled = new Set(disabledShards);
      for (let shard = 0; shard < spec.shards; shard++) {
        const key = `${name}/${shard}`;
        seen.add(key);
        const owner = owners.get(key);
        this.#publishShard(batch, key, {
          job: name,
          shard,
          agent: owner?.agent ?? "",
          revoking: owner?.revoking ?? false,
          unassignedReason: reasons.get(key) ?? "",
          disabled: disabled.has(shard),
          lastExecution: this.#latestOf(key),
        });
      }
    }
    for (const key of this.#shards.keys()) {
      if (seen.has(key)) continue;
      const { job, shard } = this.#shards.get(key)!.message;
      this.#shards.delete(key);
      this.#latest.delete(key);
      batch.removedShards.push({ job, shard });
    }
  }

  #latestOf(key: string): Execution | undefined {
    const record = this.#latest.get(key);
    return record === undefined ? undefined : executionToProto(record);
  }

  #publishShard(batch: Batch, key: string, status: MessageInitShape<typeof ShardStatusSchema>): void {
    const last = status.lastExecution;
    const print = `${status.agent}|${status.revoking}|${status.unassignedReason}|${status.disabled}|${last?.id ?? ""}|${last?.state ?? ""}|${last?.finishedAtUnixMs ?? ""}`;
    if (this.#shards.get(key)?.print === print) return;
    const message = create(ShardStatusSchema, status);
    this.#shards.set(key, { print, message });
    batch.shards.push(message);
  }

  #takeStatus(): ControllerStatus {
    const now = this.#clock();
    this.#samples.push([now, this.#fires, this.#finished]);
    while (this.#samples.length > 2 && this.#samples[1]![0] <= now - RATE_WINDOW_MS) this.#samples.shift();
    for (const [fire, at] of this.#firesSeen) {
      // Oldest first: the rest are newer.
      if (at > now - 2 * RATE_WINDOW_MS) break;
      this.#firesSeen.delete(fire);
    }
    const [since, firesThen, finishedThen] = this.#samples[0]!;
    const seconds = (now - since) / 1000;
    let connected = 0;
    let lost = 0;
    let cordoned = 0;
    let running = 0;
    for (const { message } of this.#agents.values()) {
      if (message.cordoned) cordoned++;
      if (message.state === AgentState.LOST) lost++;
      else connected++;
      running += message.running;
    }
    let paused = 0;
    for (const { message } of this.#jobs.values()) if (message.paused) paused++;
    let unassigned = 0;
    for (const { message } of this.#shards.values()) if (message.agent === "" && !message.disabled) unassigned++;
    const status = create(ControllerStatusSchema, {
      term: BigInt(this.#core.term),
      address: this.#options.address(),
      version: VERSION,
      timeUnixMs: BigInt(now),
      firesPerSecond: seconds > 0 ? (this.#fires - firesThen) / seconds : 0,
      executionsPerSecond: seconds > 0 ? (this.#finished - finishedThen) / seconds : 0,
      agentsConnected: connected,
      agentsLost: lost,
      agentsCordoned: cordoned,
      jobs: this.#jobs.size,
      jobsPaused: paused,
      executionsRunning: running,
      executionsPending: this.#core.queuePositions().size,
      shards: this.#shards.size,
      shardsUnassigned: unassigned,
      traceUrlTemplate: this.#options.traceUrlTemplate,
    });
    this.#status = status;
    return status;
  }

  /**
   * Sends the snapshot a watcher starts from: the view as published last (cursor: that batch),
   * the newest executions from the store and the recent events, in chunks, the last one `synced`;
   * then what was published meanwhile.
   */
  async #sendSnapshot(watcher: Watcher, reset: boolean, limit: number): Promise<void> {
    const { topics, job } = watcher;
    const at = this.#seq;
    const wanted = <T>(topic: Topic, items: () => T[]): T[] => (topics.has(topic) ? items() : []);
    const ofJob = (name: string): boolean => job === "" || name === job;
    const jobs = wanted("jobs", () => [...this.#jobs.values()].map((j) => j.message).filter((j) => ofJob(j.name)));
    const agents = wanted("agents", () => [...this.#agents.values()].map((a) => a.message));
    const shards = wanted("shards", () => [...this.#shards.values()].map((s) => s.message).filter((s) => ofJob(s.job)));
    // Without the events not yet published: they come with the next batch.
    const events = wanted("events", () =>
      this.recentEvents()
        .slice(0, Math.max(0, Math.min(this.#recentEvents.length, RECENT_EVENTS) - this.#events.length))
        .filter((event) => ofJob(event.job ?? ""))
        .map(eventToProto),
    );
    const status = topics.has("status") ? this.#status : undefined;
    let executions: Execution[] = [];
    if (topics.has("executions")) {
      await this.#driver.idle();
      const stored = await this.#store.listExecutions(job === "" ? { limit } : { job, limit });
      const positions = this.#core.queuePositions();
      executions = stored.map((e) => executionToProto(e, positions.get(e.id)));
    }
    const cursor = this.#cursor(at);
    const parts: WatchMessage[] = [];
    const chunked = <K extends keyof WatchMessage>(key: K, items: unknown[]): void => {
      for (let i = 0; i < items.length; i += SNAPSHOT_CHUNK) parts.push({ cursor, [key]: items.slice(i, i + SNAPSHOT_CHUNK) });
    };
    parts.push({ cursor, reset, ...(status === undefined ? {} : { status }) });
    chunked("jobs", jobs);
    chunked("agents", agents);
    chunked("shards", shards);
    chunked("executions", executions);
    chunked("events", events);
    parts.at(-1)!.synced = true;
    for (const part of parts) if (!this.#deliver(watcher, part)) return;
    this.#goLive(watcher, at);
  }

  /**
   * Sends what was published while the watcher's start was read, past batch `after` (what it
   * has already); it gets batches as they come from here on.
   */
  #goLive(watcher: Watcher, after: number): void {
    const held = watcher.held ?? [];
    watcher.held = undefined;
    for (const batch of held) if (batch.seq > after) this.#send(watcher, batch);
  }

  /** Sends a watcher the part of a batch its filter keeps (nothing when that is empty). */
  #send(watcher: Watcher, batch: Batch): void {
    const { topics, job } = watcher;
    const has = (topic: Topic): boolean => topics.has(topic);
    const ofJob = (name: string): boolean => job === "" || name === job;
    const message: WatchMessage = {
      cursor: this.#cursor(batch.seq),
      jobs: has("jobs") ? batch.jobs.filter((j) => ofJob(j.name)) : [],
      deletedJobs: has("jobs") ? batch.deletedJobs.filter(ofJob) : [],
      agents: has("agents") ? batch.agents : [],
      removedAgents: has("agents") ? batch.removedAgents : [],
      shards: has("shards") ? batch.shards.filter((s) => ofJob(s.job)) : [],
      removedShards: has("shards") ? batch.removedShards.filter((s) => ofJob(s.job)) : [],
      executions: has("executions") ? batch.executions.filter((e) => ofJob(e.job)) : [],
      events: has("events") ? batch.events.filter((e) => ofJob(e.job)) : [],
      ...(has("status") && batch.status !== undefined ? { status: batch.status } : {}),
    };
    const empty =
      message.status === undefined &&
      [message.jobs, message.deletedJobs, message.agents, message.removedAgents, message.shards, message.removedShards, message.executions, message.events].every(
        (items) => items === undefined || items.length === 0,
      );
    if (!empty) this.#deliver(watcher, message);
  }

  /**
   * Sends one message, or cuts the watcher off when what it has not read yet would pass its
   * limits; false then.
   */
  #deliver(watcher: Watcher, message: WatchMessage): boolean {
    const { stream, sent } = watcher;
    if (watcher.failed || stream.closed) return false;
    const { unreadMessages, unreadChanges } = this.#options.limits ?? DEFAULT_WATCH_LIMITS;
    // Only the newest `queued` messages are unread: the older sizes are forgotten.
    sent.splice(0, Math.max(0, sent.length - stream.queued));
    const changes = changesIn(message);
    const unread = sent.reduce((sum, size) => sum + size, 0) + changes;
    if (sent.length + 1 > unreadMessages || unread > unreadChanges || !stream.send(message)) {
      this.#logger.warn({ messages: sent.length, changes: unread - changes }, "cut off a watch that fell behind");
      watcher.fail(
        new ShardlineError(
          "resource-exhausted",
          `the watch fell behind: ${sent.length} messages with ${unread - changes} changes unread, and a watcher may leave at most ${unreadMessages} messages or ${unreadChanges} changes; ` +
            "watch again with the last cursor read, and read faster or watch fewer topics",
        ),
      );
      return false;
    }
    sent.push(changes);
    return true;
  }

  #cursor(seq: number): string {
    return `${this.#incarnation}.${seq}`;
  }
}

/** A request's topics as a set: every topic when none is named; UNSPECIFIED or an unknown one is refused. */
function topicsOf(topics: readonly WatchTopic[]): ReadonlySet<Topic> {
  if (topics.length === 0) return new Set(Object.values(TOPICS));
  const named = new Set<Topic>();
  for (const topic of topics) {
    const name = TOPICS[topic as keyof typeof TOPICS] as Topic | undefined;
    if (name === undefined) {
      const protoName = (value: number): string => (WatchTopic[value] === undefined ? String(value) : `WATCH_TOPIC_${WatchTopic[value]}`);
      throw ShardlineError.invalid("topics", protoName(topic), `topics among ${Object.keys(TOPICS).map((t) => protoName(Number(t))).join(", ")}; none means all`);
    }
    named.add(name);
  }
  return named;
}

/** The changes one message carries. */
function changesIn(message: WatchMessage): number {
  const { jobs, deletedJobs, agents, removedAgents, shards, removedShards, executions, events, status } = message;
  return (
    [jobs, deletedJobs, agents, removedAgents, shards, removedShards, executions, events].reduce((sum, items) => sum + (items?.length ?? 0), 0) +
    (status === undefined ? 0 : 1)
  );
}

function sizeOf(batch: Batch): number {
  return (
    batch.jobs.length +
    batch.deletedJobs.length +
    batch.agents.length +
    batch.removedAgents.length +
    batch.shards.length +
    batch.removedShards.length +
    batch.executions.length +
    batch.events.length +
    (batch.status === undefined ? 0 : 1)
  );
}

/** An event as the API shows it (WatchEvents, Watch). */
export function eventToProto(event: CoreEvent): WatchEventsResponse {
  return create(WatchEventsResponseSchema, {
    timeUnixMs: BigInt(event.time),
    type: event.type,
    job: event.job ?? "",
    shard: event.shard ?? 0,
    agent: event.agent ?? "",
    executionId: event.executionId ?? "",
    message: event.message,
  });
}
