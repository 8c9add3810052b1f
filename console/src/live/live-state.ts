import type { ControllerStatus, ShardStatus, WatchEventsResponse, WatchResponse } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import { type Agent, type Execution, ExecutionState, type Job } from "../../../shared/gen/shardline/v1/types_pb.js";

/** How many executions and events the live state keeps: the newest, by fire and by arrival. */
export const KEPT_EXECUTIONS = 2000;
export const KEPT_EVENTS = 500;

/** The key of a shard in LiveState.shards. */
export function shardKey(job: string, shard: number): string {
  return `${job}\u0000${shard}`;
}

/**
 * The controller's state as a watch has told it so far: the snapshot, then every change applied
 * in order (WatchResponse's contract). One object, changed in place: a snapshot of 10,000 shards
 * is not copied at every change; `version` grows with each message applied, which is what views
 * compare to know whether to draw again.
 */
export class LiveState {
  readonly jobs = new Map<string, Job>();
  readonly agents = new Map<string, Agent>();
  readonly shards = new Map<string, ShardStatus>();
  readonly executions = new Map<string, Execution>();
  events: WatchEventsResponse[] = [];
  status: ControllerStatus | undefined;
  /** The controller's clock minus this browser's, from the last status: a lease's end is on the controller's clock. */
  clockOffsetMs = 0;
  /** The last cursor read: where a new watch resumes. */
  cursor = "";
  /** True once the snapshot is complete (until a reset). */
  synced = false;
  version = 0;
  readonly #listeners = new Set<() => void>();
  #byJob = new Map<string, ShardStatus[]>();
  #byJobVersion = -1;
  #finished = new Map<string, Execution[]>();
  #finishedVersion = -1;
  /** Each shard's latest run seen that was more than dispatched ahead of its fire: see shownRun. */
  readonly #settled = new Map<string, Execution>();

  /** Applies one message of a watch, at `now` (this browser's clock, ms); tells the listeners. */
  apply(message: WatchResponse, now: number = Date.now()): void {
    if (message.reset) this.clear();
    for (const job of message.jobs) this.jobs.set(job.name, job);
    for (const agent of message.agents) this.agents.set(agent.id, agent);
    for (const shard of message.shards) {
      const key = shardKey(shard.job, shard.shard);
      this.shards.set(key, shard);
      if (shard.lastExecution !== undefined && !awaitsItsInstant(shard.lastExecution)) this.#settled.set(key, shard.lastExecution);
    }
    for (const execution of message.executions) this.executions.set(execution.id, execution);
    // Removals come after the upserts of the same kind (WatchResponse).
    for (const name of message.deletedJobs) this.#deleteJob(name);
    for (const id of message.removedAgents) this.agents.delete(id);
    for (const ref of message.removedShards) {
      this.shards.delete(shardKey(ref.job, ref.shard));
      this.#settled.delete(shardKey(ref.job, ref.shard));
    }
    if (message.events.length > 0) this.events = [...this.events, ...message.events].slice(-KEPT_EVENTS);
    if (this.executions.size > KEPT_EXECUTIONS * 1.25) this.#trimExecutions();
    if (message.status !== undefined) {
      this.status = message.status;
      if (message.status.timeUnixMs > 0n) this.clockOffsetMs = Number(message.status.timeUnixMs) - now;
    }
    if (message.synced) this.synced = true;
    if (message.cursor !== "") this.cursor = message.cursor;
    this.version++;
    for (const listener of this.#listeners) listener();
  }

  /** Forgets everything (a reset, or signing out). */
  clear(): void {
    this.jobs.clear();
    this.agents.clear();
    this.shards.clear();
    this.#settled.clear();
    this.executions.clear();
    this.events = [];
    this.status = undefined;
    this.synced = false;
  }

  /** Calls `listener` after each message applied; returns what stops it. */
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The run the map colours a shard by: its latest, except that a run merely dispatched ahead of
   * its fire instant (pending, on its agent, waiting for nothing else) shows the shard's run
   * before it when one was seen. A job firing every second always has such a run; amber all over
   * the map would hide how the runs actually go.
   */
  shownRun(shard: ShardStatus): Execution | undefined {
    const latest = shard.lastExecution;
    if (latest === undefined || !awaitsItsInstant(latest)) return latest;
    const settled = this.#settled.get(shardKey(shard.job, shard.shard));
    return settled !== undefined && settled.fireTimeUnixMs < latest.fireTimeUnixMs ? settled : latest;
  }

  /** A job's shards, by number (indexed once per version). */
  shardsOfJob(job: string): readonly ShardStatus[] {
    if (this.#byJobVersion !== this.version) {
      this.#byJob = new Map();
      for (const shard of this.shards.values()) {
        const list = this.#byJob.get(shard.job);
        if (list === undefined) this.#byJob.set(shard.job, [shard]);
        else list.push(shard);
      }
      for (const list of this.#byJob.values()) list.sort((a, b) => a.shard - b.shard);
      this.#byJobVersion = this.version;
    }
    return this.#byJob.get(job) ?? [];
  }

  /**
   * The executions of `job`'s newest fire that has finished runs, the latest attempt of each
   * shard: what "last outcome" reads (a frequent job's newest fire is nearly always still pending
   * or running).
   */
  lastFinishedFire(job: string): readonly Execution[] {
    if (this.#finishedVersion !== this.version) {
      const newest = new Map<string, Map<string, Execution>>();
      const fires = new Map<string, bigint>();
      for (const execution of this.executions.values()) {
        if (!isTerminal(execution.state) || execution.fireComplete) continue;
        const fire = fires.get(execution.job) ?? 0n;
        if (execution.fireTimeUnixMs < fire) continue;
        if (execution.fireTimeUnixMs > fire) {
          fires.set(execution.job, execution.fireTimeUnixMs);
          newest.set(execution.job, new Map());
        }
        const byShard = newest.get(execution.job)!;
        const seen = byShard.get(String(execution.shard));
        if (seen === undefined || seen.attempt < execution.attempt) byShard.set(String(execution.shard), execution);
      }
      this.#finished = new Map([...newest].map(([name, byShard]) => [name, [...byShard.values()]]));
      this.#finishedVersion = this.version;
    }
    return this.#finished.get(job) ?? [];
  }

  /** The controller's clock now, read from this browser's. */
  controllerNow(now: number = Date.now()): number {
    return now + this.clockOffsetMs;
  }

  #deleteJob(name: string): void {
    this.jobs.delete(name);
    // The watch removes a deleted job's shards itself; this keeps the map right if one is missed.
    for (const [key, shard] of this.shards) if (shard.job === name) this.shards.delete(key);
  }

  #trimExecutions(): void {
    const newest = [...this.executions.values()].sort((a, b) => Number(b.fireTimeUnixMs - a.fireTimeUnixMs)).slice(0, KEPT_EXECUTIONS);
    this.executions.clear();
    for (const execution of newest) this.executions.set(execution.id, execution);
  }
}

/** A pending run on its agent that waits for nothing but its fire instant. */
function awaitsItsInstant(execution: Execution): boolean {
  return execution.state === ExecutionState.PENDING && execution.agent !== "" && execution.waitingReason === "";
}

/** A state no execution leaves (every one but PENDING, RUNNING and UNKNOWN). */
function isTerminal(state: ExecutionState): boolean {
  return state !== ExecutionState.PENDING && state !== ExecutionState.RUNNING && state !== ExecutionState.UNKNOWN && state !== ExecutionState.UNSPECIFIED;
}
