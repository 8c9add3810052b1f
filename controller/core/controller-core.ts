import { ShardlineError } from "../../shared/errors.js";
import { specEquals } from "../../shared/manifest/index.js";
import { DEFAULT_START_TIMEOUT_SECONDS, type JobSpec, type KubernetesSpec, priorityOf, type StrategyName } from "../../shared/manifest/job-spec.js";
import { fireTimesBetween, nextFireAfter } from "../../shared/schedule.js";
import type {
  ExecutionCause,
  ExecutionRecord,
  ExecutionStateName,
  JobRecord,
  ShardOutcome,
  StoreSnapshot,
} from "../store/store.js";
import { FIRE_COMPLETE_SHARD, TERMINAL_STATES } from "../store/store.js";
import type { CoreConfig } from "./config.js";
import { executionId } from "./execution-id.js";
import { type ExecutionTracing, NO_TRACING, type TraceCarrier } from "./execution-tracing.js";
import { claimFromTheFuture, validateHello } from "./hello-rules.js";
import type { AgentHello, AssignmentRef, ExecutionContext, ExecutionReport } from "./messages.js";
import { admitLateFire, planMissedFires, retryDelayMs } from "./misfire.js";
import { type Effects, Outbox } from "./outbox.js";
import { spreadSticky, strategyFor } from "./sharding/index.js";
import type { ShardingInput } from "./sharding/strategy.js";
import { TimerQueue, type TimerKind } from "./timer-queue.js";
import { at, whyNoAgentCanRun, whyNoAgentForHook, whyNoScheduledFires } from "./waiting-reasons.js";

/** How an agent looks from the outside. */
export type AgentStateName = "ready" | "draining" | "lost";

export interface AgentView {
  id: string;
  labels: Record<string, string>;
  capacity: number;
  handlers: string[];
  version: string;
  state: AgentStateName;
  cordoned: boolean;
  shards: { job: string; shard: number }[];
  leaseExpiresAt: number;
  connectedAt: number;
  /** Executions it runs at once; 0 is no limit. */
  maxConcurrent: number;
  /** Executions dispatched to it and not finished. */
  running: number;
  /** The Hello.instance_id of the process holding the id; "" when it sent none. */
  instanceId: string;
  /** Hellos under its id from other processes refused while it held the id. */
  refusedHellos: number;
  /** The last such refusal (when, from where, which instance), for operators. */
  lastRefusal?: string;
}

export interface AssignmentView {
  job: string;
  shard: number;
  agent: string;
  term: number;
  generation: number;
  revoking: boolean;
}

export interface JobView {
  record: JobRecord;
  nextFire?: number;
  lastFire?: number;
  /** The next scheduled fires, up to five. */
  upcoming: number[];
  /** Why the job, or some of its shards, cannot run now; absent when nothing stops it. */
  waitingReason?: string;
}

/** An enabled shard no agent owns, and why. */
export interface UnassignedShardView {
  job: string;
  shard: number;
  reason: string;
}

interface AgentEntry {
  id: string;
  /** Distinguishes this entry from an earlier one of the same id, for stale lease timers. */
  incarnation: number;
  session: string;
  /** The process holding the id (Hello.instance_id); "" when unknown. */
  instance: string;
  /** Where its current (or last) stream came from, as the shell saw it. */
  address: string;
  /** Hellos under its id from other processes refused while it held the id. */
  refusedHellos: number;
  lastRefusal?: string;
  /** What a previous process of this id left behind when this one took the id over: see takeOver. */
  inherited?: InheritedFence;
  connected: boolean;
  lost: boolean;
  /** Said goodbye: leaving on purpose. */
  leaving: boolean;
  cordoned: boolean;
  labels: Record<string, string>;
  capacity: number;
  handlers: Set<string>;
  executors: Set<string>;
  /** Executions it runs at once; 0 is no limit. */
  maxConcurrent: number;
  version: string;
  /** The controller's view of the lease: never earlier than the agent's own. */
  leaseExpiry: number;
  /** A lease timer is queued for this entry (one at most: it re-arms itself while renewed). */
  leaseTimerArmed: boolean;
  connectedAt: number;
  shards: Set<ShardEntry>;
  /** Open executions dispatched to it. */
  executions: Set<string>;
}

/**
 * The shards and runs of an agent's previous process, which lost its stream with its lease still
 * valid, when a new process took the id over: that process may still be alive (partitioned) and
 * running them until `until`, its lease's end in the controller's view. Until then the new process
 * is not sent those shards, no placement moves them, and those runs are not taken for lost.
 */
interface InheritedFence {
  shards: Set<ShardEntry>;
  runs: Set<string>;
  until: number;
  /** The previous process's instance, for messages. */
  instance: string;
}

interface ShardEntry {
  job: string;
  shard: number;
  owner?: string;
  term: number;
  generation: number;
  /** A revoke was sent; the owner releases it once its runs are over. */
  revoking: boolean;
  /** Open executions dispatched to the owner. */
  running: Set<string>;
  /** Executions waiting for an owner able to start them, oldest first. */
  queue: ExecutionRecord[];
  /** The (term, generation) an agent claimed when the shard was adopted after a restart. */
  claim?: [number, number];
  /** When the shard's last daemon run ended under its current owner; the next one waits a backoff. */
  daemonEndedAt?: number;
  /** Cut off by a smaller shard count while its owner still held it: see JobEntry.retired. */
  retired?: boolean;
}

interface JobEntry {
  record: JobRecord;
  shards: ShardEntry[];
  /** The last scheduled fire made (durable). */
  cursor?: number;
  nextFire?: number;
  /** Bumped whenever the schedule changes, so armed fire timers of the old schedule are ignored. */
  fireToken: number;
  /** The latest fire instant issued, scheduled or manual, so ids never collide. */
  lastIssuedFire: number;
  /**
   * Shards a smaller shard count removed whose owner has not yet given them back (released, or
   * lost and its lease expired). They stay owned, and revoked, meanwhile: should the count grow
   * again, the shard returns still fenced for that owner, and no second agent can take it while
   * the first may still be running it.
   */
  retired: Map<number, ShardEntry>;
  /** What its shards were last placed for: see placementCurrent. */
  placedFor?: { agentsEpoch: number; spec: JobSpec };
}

/**
 * A fire of a job with spec.onFireComplete, from the fire until every shard of it has finished
 * (its final attempt, after retries and failover runs).
 */
interface FireProgress {
  /** Shards whose final attempt has not finished. */
  pending: Set<number>;
  /** How the others ended, by shard. */
  outcomes: Map<number, ShardOutcome>;
}

/**
 * The controller's decisions, with no I/O: events and the current time in, state and effects
 * out (DESIGN.md "The controller is a deterministic core inside a thin shell"). Every public
 * method first runs the timers due at `now`, then applies its event; the shell calls `take()`
 * to collect what to persist, send, close and publish, and `nextDeadline()` to arm one timer.
 */
export class ControllerCore {
  readonly term: number;
  private now: number;
  private generation = 0;
  private incarnations = 0;
  private readonly startupGraceUntil: number;
  /** No lease granted lasts past this instant (limitLeases); undefined: no bound. */
  private leaseCap: number | undefined;
  private readonly jobs = new Map<string, JobEntry>();
  private readonly agents = new Map<string, AgentEntry>();
  private readonly sessions = new Map<string, string>();
  private readonly open = new Map<string, ExecutionRecord>();
  /** Open executions already asked to stop (cancel, overlap: replace, a daemon's revoke). */
  private readonly cancelling = new Set<string>();
  /** Fires on their way to their spec.onFireComplete run, by fireKey. */
  private readonly fires = new Map<string, FireProgress>();
  /** Completion hook runs waiting for an agent with a free slot, oldest first. */
  private waitingFireCompletes: ExecutionRecord[] = [];
  /** When each waiting execution joined its queue: first in, first out within a priority. */
  private readonly queuedAt = new Map<string, number>();
  private queueSeq = 0;
  private readonly timers = new TimerQueue();
  /** The last fire of each deleted job, kept in the store too: see applyJob. */
  private readonly deletedCursors = new Map<string, number>();
  /** The shards of deleted jobs that their owners still hold, revoked, by job name: see deleteJob. */
  private readonly deletedJobShards = new Map<string, Map<number, ShardEntry>>();
  private readonly outbox = new Outbox();
  /** A step changed who may hold which shard: the next take() places shards again. */
  private reconcilePending = false;
  /** Bumped whenever an agent joins, leaves or changes what it may hold. */
  private agentsEpoch = 0;

  constructor(
    private readonly config: CoreConfig,
    snapshot: StoreSnapshot,
    now: number,
    private readonly tracing: ExecutionTracing = NO_TRACING,
  ) {
    this.term = snapshot.term;
    this.now = now;
    // Agents of a previous controller may hold valid leases for up to one lease TTL (it renewed
    // none after this one started: it was dead): until then no shard is given to anyone who does
    // not claim it. An agent not back by then has fenced itself and claims nothing when it
    // returns, so waiting longer would only delay the fires. When the store knows sooner (etcd:
    // the predecessor's leases ended with its leadership, or within what it recorded when it
    // handed over), only that and the margin for clock rates are left. The first term had no
    // predecessor.
    const predecessorLeases = snapshot.predecessorLeasesEndWithinMs ?? config.leaseTtlMs;
    this.startupGraceUntil = snapshot.term <= 1 ? now : now + predecessorLeases + config.leaseMarginMs;
    this.timers.push(this.startupGraceUntil, { kind: "startup-grace" });
    for (const record of snapshot.jobs) {
      const entry = this.addJobEntry(record);
      entry.cursor = snapshot.cursors.get(record.name);
      if (entry.cursor !== undefined) entry.lastIssuedFire = entry.cursor;
    }
    for (const [name, cursor] of snapshot.cursors) if (!this.jobs.has(name)) this.deletedCursors.set(name, cursor);
    const restored = [...snapshot.openExecutions].sort((a, b) => a.fireTime - b.fireTime || a.attempt - b.attempt);
    for (const execution of restored) this.restoreExecution(execution);
    this.restoreFireProgress(restored, snapshot.settledOfOpenFires);
    for (const job of this.jobs.values()) this.catchUpMissedFires(job);
  }


  /** The earliest instant at which `tick` has work to do. */
  nextDeadline(): number | undefined {
    return this.timers.peek();
  }

  /**
   * Collects what the steps since the last call decided, placing shards first if any of them
   * asked to: placement is computed once per batch of steps, not once per step, since it costs
   * O(jobs x agents) and a fleet connecting or leaving brings many steps in one turn.
   */
  take(): Effects {
    if (this.reconcilePending) {
      this.reconcilePending = false;
      this.reconcileAll();
    }
    return this.outbox.take();
  }

  /** Timers queued in the core (fires, leases), for diagnostics and metrics. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  get hasEffects(): boolean {
    return this.reconcilePending || !this.outbox.empty;
  }

  listAgents(): AgentView[] {
    return [...this.agents.values()]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((agent) => ({
        id: agent.id,
        labels: { ...agent.labels },
        capacity: agent.capacity,
        handlers: [...agent.handlers].sort(),
        version: agent.version,
        state: agent.lost ? "lost" : agent.leaving || agent.cordoned ? "draining" : "ready",
        cordoned: agent.cordoned,
        shards: [...agent.shards]
          .map((s) => ({ job: s.job, shard: s.shard }))
          .sort((a, b) => (a.job < b.job ? -1 : a.job > b.job ? 1 : a.shard - b.shard)),
        leaseExpiresAt: agent.leaseExpiry,
        connectedAt: agent.connectedAt,
        maxConcurrent: agent.maxConcurrent,
        running: agent.executions.size,
        instanceId: agent.instance,
        refusedHellos: agent.refusedHellos,
        ...(agent.lastRefusal === undefined ? {} : { lastRefusal: agent.lastRefusal }),
      }));
  }

  /**
   * Each agent the core knows (a lost one until its lease expires) with whether it has a stream
   * and how many shards it owns: for metrics, without listAgents' copies and sorting.
   */
  agentLoads(): { id: string; connected: boolean; shards: number }[] {
    const loads: { id: string; connected: boolean; shards: number }[] = [];
    for (const agent of this.agents.values()) loads.push({ id: agent.id, connected: agent.connected, shards: agent.shards.size });
    return loads;
  }

  listAssignments(job?: string): AssignmentView[] {
    const out: AssignmentView[] = [];
    const names = [...this.jobs.keys()].sort();
    for (const name of names) {
      if (job !== undefined && job !== "" && name !== job) continue;
      for (const shard of this.jobs.get(name)!.shards) {
        if (shard.owner === undefined) continue;
        out.push({
          job: name,
          shard: shard.shard,
          agent: shard.owner,
          term: shard.term,
          generation: shard.generation,
          revoking: shard.revoking,
        });
      }
    }
    return out;
  }

  /** How many jobs there are, and whether one is named `name`: cheap, unlike listJobs. */
  jobCount(name?: string): { total: number; exists: boolean } {
    return { total: this.jobs.size, exists: name !== undefined && this.jobs.has(name) };
  }

  getJob(name: string): JobView {
    const job = this.jobs.get(name);
    if (job === undefined) throw notFound("job", name);
    const upcoming: number[] = [];
    const spec = job.record.spec;
    for (let next = job.nextFire; next !== undefined && upcoming.length < 5; next = nextFireAfter(spec.schedule!, spec.timeZone, next)) {
      upcoming.push(next);
    }
    const waitingReason = this.jobWaitingReason(job);
    return { record: job.record, nextFire: job.nextFire, lastFire: job.cursor, upcoming, ...(waitingReason === undefined ? {} : { waitingReason }) };
  }

  /** The enabled shards of `job` (every job when absent or "") that no agent owns, each with why. */
  listUnassigned(job?: string): UnassignedShardView[] {
    const out: UnassignedShardView[] = [];
    for (const name of [...this.jobs.keys()].sort()) {
      if (job !== undefined && job !== "" && name !== job) continue;
      const entry = this.jobs.get(name)!;
      const unowned = this.unownedShards(entry);
      if (unowned.length === 0) continue;
      const reason = this.whyUnowned(entry);
      for (const shard of unowned) out.push({ job: name, shard: shard.shard, reason });
    }
    return out;
  }

  /**
   * What an apply should warn of: the job was stored, but no connected agent can run it now, and
   * which requirement none meets. Empty when some agent can.
   */
  applyWarnings(name: string): string[] {
    const job = this.requireJob(name);
    const reason = whyNoAgentCanRun(job.record.spec, this.agents.values());
    return reason === undefined ? [] : [`no connected agent can run it now: ${reason}; its fires wait (spec.misfire: ${job.record.spec.misfire})`];
  }

  /**
   * Why a pending execution is not running yet, for operators; undefined when it is not waiting
   * in a queue (dispatched, and only waiting for its fire instant on its agent, or finished).
   */
  waitingReason(id: string): string | undefined {
    const execution = this.open.get(id);
    if (execution === undefined || !this.queuedAt.has(id)) return undefined;
    const job = this.jobs.get(execution.job);
    if (job === undefined) return "its job is being deleted";
    if ((execution.notBefore ?? 0) > this.now) {
      return `${execution.cause === "daemon" ? "restarts" : "retries"} at ${at(execution.notBefore!)} (spec.retries.backoffSeconds)`;
    }
    if (execution.shard === FIRE_COMPLETE_SHARD) {
      const hook = job.record.spec.onFireComplete;
      if (hook === undefined) return "spec.onFireComplete was removed";
      return (
        whyNoAgentForHook(hook.handler, job.record.spec, this.agents.values()) ??
        `every agent that declares handler ${JSON.stringify(hook.handler)} runs its --max-concurrent executions`
      );
    }
    const shard = job.shards[execution.shard] ?? job.retired.get(execution.shard);
    if (shard === undefined) return `shard ${execution.shard} was removed by a smaller spec.shards`;
    const wait = this.shardWait(job, shard, execution.id);
    return wait === undefined ? undefined : `shard ${shard.shard}: ${wait}`;
  }

  /** The enabled shards of a job that no agent owns. */
  private unownedShards(job: JobEntry): ShardEntry[] {
    const disabled = new Set(job.record.disabledShards);
    return job.shards.filter((s) => s.owner === undefined && !disabled.has(s.shard));
  }

  /** Why a job's shards have no owner (the same for all of them: placement looks at the job, not the shard). */
  private whyUnowned(job: JobEntry): string {
    if (this.now < this.startupGraceUntil) {
      return `the controller restarted and gives no shard away until ${at(this.startupGraceUntil)}, while the previous owners reconnect and claim theirs`;
    }
    return whyNoAgentCanRun(job.record.spec, this.agents.values()) ?? "not placed yet";
  }

  /**
   * Why the shard cannot start its next execution now (`head`, or whatever heads its queue),
   * worded without the shard's number or any execution id, so that one cause reads the same
   * for every shard and fire; undefined when nothing stops it.
   */
  private shardWait(job: JobEntry, shard: ShardEntry, head?: string): string | undefined {
    if (shard.owner === undefined) return `no owner (${this.whyUnowned(job)})`;
    const owner = this.agents.get(shard.owner);
    if (owner === undefined || owner.lost || !owner.connected) {
      return `fenced until the lease of its owner ${shard.owner}, which lost its stream, expires at ${at(owner?.leaseExpiry ?? this.now)}`;
    }
    if (owner.inherited?.shards.has(shard) === true) {
      return `fenced until the lease of ${owner.id}'s previous process, which lost its stream, expires at ${at(owner.inherited.until)}`;
    }
    if (shard.revoking) return `moving away from ${owner.id}, which has not released it yet`;
    if (shard.running.size > 0 && job.record.spec.overlap === "forbid") return "busy with its previous run (spec.overlap: forbid)";
    if (!this.hasSlot(owner)) return `its owner ${owner.id} runs its --max-concurrent ${owner.maxConcurrent} executions`;
    if (head !== undefined && shard.queue.length > 0 && shard.queue[0]!.id !== head) return "behind its earlier executions";
    return undefined;
  }

  /** Why the job, or some of its shards, cannot run now; undefined when nothing stops it. */
  private jobWaitingReason(job: JobEntry): string | undefined {
    const { name, spec } = job.record;
    const parts: string[] = [];
    if (spec.schedule !== undefined || spec.daemon === true) {
      const noFires = whyNoScheduledFires(name, spec, job.record.paused);
      if (noFires !== undefined) parts.push(noFires);
    }
    const unowned = this.unownedShards(job);
    if (unowned.length > 0) {
      const count = unowned.length === job.shards.length ? `none of its ${unowned.length} shards has` : `${unowned.length} of its ${job.shards.length} shards have`;
      parts.push(`${count} an owner: ${this.whyUnowned(job)}`);
    }
    const disabled = job.record.disabledShards;
    if (disabled.length > 0) {
      const which = disabled.length === 1 ? `shard ${disabled[0]} is` : `shards ${disabled.slice(0, 10).join(", ")}${disabled.length > 10 ? ", ..." : ""} are`;
      parts.push(`${which} disabled (shardline enable ${name} ${disabled[0]})`);
    }
    const fenced = job.shards.filter((s) => {
      const owner = s.owner === undefined ? undefined : this.agents.get(s.owner);
      return owner !== undefined && (owner.lost || owner.inherited?.shards.has(s) === true);
    });
    if (fenced.length > 0) parts.push(`${fenced.length} shard${fenced.length === 1 ? " is" : "s are"} fenced until a lost owner's lease expires`);
    return parts.length === 0 ? undefined : parts.join("; ");
  }

  listJobs(): JobView[] {
    return [...this.jobs.keys()].sort().map((name) => this.getJob(name));
  }

  /**
   * The place in line of every waiting execution (1 is next): highest job priority first, then
   * first in, first out.
   */
  queuePositions(): Map<string, number> {
    const waiting: { id: string; priority: number; seq: number }[] = [];
    for (const [id, seq] of this.queuedAt) {
      const execution = this.open.get(id);
      const spec = execution === undefined ? undefined : this.jobs.get(execution.job)?.record.spec;
      const priority = spec === undefined ? 0 : priorityOf(spec);
      waiting.push({ id, priority, seq });
    }
    waiting.sort((a, b) => b.priority - a.priority || a.seq - b.seq);
    return new Map(waiting.map((w, i) => [w.id, i + 1]));
  }

  /** The agent a stream speaks for, once the core accepted its Hello; undefined otherwise. */
  agentOfSession(session: string): string | undefined {
    return this.sessions.get(session);
  }

  /** An execution not yet finished, if the core holds it. */
  openExecution(id: string): ExecutionRecord | undefined {
    const execution = this.open.get(id);
    return execution === undefined ? undefined : { ...execution };
  }


  /** Runs every timer due at or before `now`. */
  tick(now: number): void {
    this.advance(now);
  }

  private advance(now: number): void {
    if (now > this.now) this.now = now;
    for (;;) {
      const timer = this.timers.popDue(this.now);
      if (timer === undefined) return;
      this.onTimer(timer);
    }
  }

  private onTimer(timer: TimerKind): void {
    switch (timer.kind) {
      case "fire": {
        const job = this.jobs.get(timer.job);
        if (job === undefined || job.fireToken !== timer.token || job.nextFire !== timer.fireTime) return;
        this.fire(job, timer.fireTime, "schedule");
        this.scheduleNext(job, timer.fireTime);
        return;
      }
      case "lease": {
        const agent = this.agents.get(timer.agent);
        if (agent === undefined || agent.incarnation !== timer.incarnation) return;
        agent.leaseTimerArmed = false;
        if (agent.leaseExpiry > this.now) {
          this.armLeaseTimer(agent);
          return;
        }
        this.expireLease(agent);
        return;
      }
      case "retry": {
        if (timer.shard === FIRE_COMPLETE_SHARD) {
          this.dispatchFireCompletes();
          return;
        }
        const shard = this.jobs.get(timer.job)?.shards[timer.shard];
        if (shard !== undefined) this.dispatchShard(shard);
        return;
      }
      case "startup-grace":
        this.agentsChanged();
        return;
      case "inherited": {
        const agent = this.agents.get(timer.agent);
        if (agent?.inherited === undefined || agent.incarnation !== timer.incarnation || agent.inherited.until > this.now) return;
        this.endInheritedFence(agent);
        return;
      }
    }
  }


  /**
   * A new stream said Hello. Refuses a malformed one with a ShardlineError (the shell ends the
   * stream with it), and ends the stream of a second process claiming an id another process holds
   * (see refuseSecondProcess); otherwise welcomes the agent, takes back what it still holds, and
   * sends it its whole set of shards. `peer` is where the stream comes from, for operators.
   */
  hello(session: string, hello: AgentHello, now: number, peer = ""): void {
    this.advance(now);
    validateHello(hello);
    if (this.sessions.has(session)) {
      throw new ShardlineError("failed-precondition", "hello: sent twice on one stream; send it once, first");
    }
    let agent = this.agents.get(hello.agentId);
    const instance = hello.instanceId ?? "";
    if (agent !== undefined && this.refuseSecondProcess(session, agent, instance, peer)) return;
    const returning = agent !== undefined;
    // A new process of an agent whose previous one lost its stream within its lease: what it replaces.
    const replaced =
      agent !== undefined && instance !== "" && agent.instance !== "" && agent.instance !== instance && agent.leaseExpiry > this.now
        ? { leaseEnd: agent.leaseExpiry, instance: agent.instance }
        : undefined;
    if (agent?.connected) {
      // The agent opened a new stream before the old one was seen to die: the new one wins.
      this.sessions.delete(agent.session);
      this.outbox.close(agent.session, "replaced by a new stream of the same agent");
    }
    agent ??= this.addAgentEntry(hello.agentId, { lost: false });
    agent.session = session;
    agent.instance = hello.instanceId ?? "";
    agent.address = peer;
    agent.connected = true;
    agent.lost = false;
    agent.leaving = false;
    agent.labels = { ...hello.labels };
    agent.capacity = hello.capacity;
    agent.handlers = new Set(hello.handlers);
    agent.executors = new Set(hello.executors);
    agent.maxConcurrent = hello.maxConcurrent;
    agent.version = hello.version;
    agent.connectedAt = this.now;
    agent.leaseExpiry = this.leaseFromNow();
    this.sessions.set(session, agent.id);
    this.armLeaseTimer(agent);
    this.outbox.send(session, {
      kind: "welcome",
      sessionId: session,
      heartbeatIntervalMs: this.config.heartbeatIntervalMs,
      leaseTtlMs: this.grantedTtl(),
      dispatchAheadMs: this.config.dispatchAheadMs,
    });
    if (replaced !== undefined) this.takeOver(agent, replaced, peer);
    else this.emit(returning ? "agent.reconnected" : "agent.joined", `agent ${agent.id} connected`, { agent: agent.id });

    const finished = this.reattachExecutions(agent, hello.executions);
    this.adoptHeld(agent, hello.held);
    this.sendSnapshot(agent);
    this.agentsChanged();
    for (const report of finished) this.applyReport(agent, report);
    for (const shard of agent.shards) this.dispatchShard(shard);
    this.dispatchFireCompletes();
  }

  /**
   * One process holds an agent id at a time (invariant 7). While the id's lease is valid under a
   * connected process, a Hello from another (a copy-pasted id, a replacement pod started early)
   * ends with ALREADY_EXISTS naming the holder, and nothing of the holder changes. A Hello that
   * names no instance, or the holder's own, is the same process reconnecting; one that comes
   * after the holder lost its stream takes the id over (see takeOver). Returns true when refused.
   */
  private refuseSecondProcess(session: string, holder: AgentEntry, instance: string, peer: string): boolean {
    if (instance === "" || holder.instance === "" || instance === holder.instance || holder.leaseExpiry <= this.now || !holder.connected) return false;
    const left = `${((holder.leaseExpiry - this.now) / 1000).toFixed(1)} s`;
    const from = peer === "" ? "" : ` from ${peer}`;
    holder.refusedHellos++;
    holder.lastRefusal = `${at(this.now)}${from} (instance ${shortInstance(instance)})`;
    const reason =
      `agent id ${JSON.stringify(holder.id)} is held by another process (instance ${shortInstance(holder.instance)}, connected` +
      `${holder.address === "" ? "" : ` from ${holder.address}`}); its lease runs for another ${left}. ` +
      "Two processes cannot share an agent id: give each its own --id, or start this one with --wait-for-id to take the id over once the other stops";
    this.outbox.close(session, reason, "already-exists");
    this.emit("agent.refused", `refused a second process${from} under agent id ${holder.id}: ${reason}`, { agent: holder.id });
    return true;
  }

  /**
   * A new process (a restarted container, a replacement pod) takes over the id of one that lost
   * its stream while its lease still runs. That one may be dead, or alive behind a partition and
   * still running its shards until its lease ends: so its shards stay fenced for the new process
   * until then (not sent, not dispatched, not moved), and its runs the new one does not report
   * stay its own until then too (a Kubernetes Job the new process finds and reports is adopted at
   * once). Called once the entry speaks for the new process, before its Hello's runs are read.
   */
  private takeOver(agent: AgentEntry, replaced: { leaseEnd: number; instance: string }, peer: string): void {
    const until = Math.max(agent.inherited?.until ?? 0, replaced.leaseEnd);
    const previous = replaced.instance;
    agent.inherited = { shards: new Set(agent.shards), runs: new Set(agent.executions), until, instance: previous };
    this.timers.push(until, { kind: "inherited", agent: agent.id, incarnation: agent.incarnation });
    this.emit(
      "agent.replaced",
      `agent ${agent.id}: a new process (instance ${shortInstance(agent.instance)}${peer === "" ? "" : ` from ${peer}`}) replaces one that lost its stream ` +
        `(instance ${shortInstance(previous)}); its ${agent.shards.size} shards and ${agent.executions.size} runs stay that one's until its lease expires at ${at(until)}`,
      { agent: agent.id },
    );
  }

  /** The previous process's fence is over: its shards go to the new one, its runs nobody reported are lost. */
  private endInheritedFence(agent: AgentEntry): void {
    const inherited = agent.inherited!;
    agent.inherited = undefined;
    for (const id of inherited.runs) {
      const execution = this.open.get(id);
      if (execution !== undefined && execution.agent === agent.id) {
        this.loseExecution(execution, `agent ${agent.id}'s previous process (instance ${shortInstance(inherited.instance)}) lost its stream and its lease expired before the run finished`);
      }
    }
    const handed: AssignmentRef[] = [];
    for (const shard of inherited.shards) {
      if (shard.owner !== agent.id) continue;
      // Being moved away from the old process when it was lost: its lease is over, so it moves now.
      if (shard.revoking) {
        this.unassign(shard);
        continue;
      }
      // A new generation: the shard now belongs to the new process, never to the one fenced.
      this.assign(shard, agent);
      handed.push(this.refOf(shard));
    }
    if (agent.connected && handed.length > 0) this.outbox.send(agent.session, { kind: "assignments", snapshot: false, add: handed, revoke: [] });
    for (const shard of inherited.shards) this.dispatchShard(shard);
    this.reconcileSoon();
  }

  /**
   * When an agent's lease ends in the controller's view, renewed now: the lease granted (one
   * TTL, or less under limitLeases), plus a margin for the agent's clock running slow and its
   * fence timer firing late, so that the agent has always fenced itself before its shards move.
   */
  private leaseFromNow(): number {
    return this.now + this.grantedTtl() + this.config.leaseMarginMs;
  }

  heartbeat(session: string, seq: number, now: number): void {
    this.advance(now);
    const agent = this.agentOf(session);
    agent.leaseExpiry = this.leaseFromNow();
    this.outbox.send(session, { kind: "heartbeat-ack", seq, leaseExpiresAt: agent.leaseExpiry, leaseTtlMs: this.grantedTtl() });
  }

  /**
   * Bounds the leases granted from now on: none lasts past `until` (Unix ms), this controller's
   * own leadership lease when several replicas share an etcd store; undefined lifts the bound.
   * A new leader is elected only after that lease ended, so it finds no agent lease of this
   * controller still valid.
   */
  limitLeases(until: number | undefined, now: number): void {
    this.advance(now);
    this.leaseCap = until;
  }

  /**
   * How long, from now, until every agent lease this controller granted has ended in its view
   * (lease plus margin), and every lease of its predecessors too (its startup grace): what a
   * leader stepping down records for the next one.
   */
  leasesEndWithin(now: number): number {
    this.advance(now);
    let latest = Math.max(this.now, this.startupGraceUntil);
    for (const agent of this.agents.values()) latest = Math.max(latest, agent.leaseExpiry, agent.inherited?.until ?? 0);
    return latest - this.now;
  }

  /** The lease an ack grants now, in ms from the agent's heartbeat: one TTL, or less under limitLeases. */
  private grantedTtl(): number {
    if (this.leaseCap === undefined) return this.config.leaseTtlMs;
    // At least 1 ms: 0 would mean "the Welcome's TTL" on the wire.
    return Math.max(1, Math.min(this.config.leaseTtlMs, this.leaseCap - this.now));
  }

  executionUpdates(session: string, reports: readonly ExecutionReport[], now: number): void {
    this.advance(now);
    const agent = this.agentOf(session);
    // An event for each of the first few reports ignored, then one for the rest: a batch of
    // thousands of made-up ids must not flood every watcher of the events.
    const stale = { count: 0, events: 10 };
    for (const report of reports) this.applyReport(agent, report, stale);
    if (stale.count > stale.events) {
      this.emit("execution.stale-report", `ignored ${stale.count - stale.events} more reports from ${agent.id} of executions it does not hold`, {
        agent: agent.id,
      });
    }
  }

  /** The agent stopped running these shards after a revoke. */
  release(session: string, released: readonly AssignmentRef[], now: number): void {
    this.advance(now);
    const agent = this.agentOf(session);
    const touched = new Set<string>();
    // Not held by this agent at that (term, generation): normal after a race (a revoke of a shard
    // the agent no longer held, a release overtaken by a newer assignment), and never a reason to
    // touch the shard, which may be another agent's.
    const ignored: AssignmentRef[] = [];
    for (const ref of released) {
      const job = this.jobs.get(ref.job);
      const shard = job?.shards[ref.shard] ?? job?.retired.get(ref.shard) ?? this.deletedJobShards.get(ref.job)?.get(ref.shard);
      // A replaced process's shard is not this process's to give back: it moves when that one's lease ends.
      const inherited = shard !== undefined && agent.inherited?.shards.has(shard) === true;
      if (shard === undefined || inherited || shard.owner !== agent.id || shard.term !== ref.term || shard.generation !== ref.generation) {
        ignored.push(ref);
        continue;
      }
      // Only its own runs: a run still held for another agent (restored after a failover, its
      // agent not back yet) is that agent's to report.
      this.loseRunning(shard, "its agent released the shard before the run finished", agent.id);
      this.unassign(shard);
      this.emit("shard.released", `${agent.id} released ${ref.job}/${ref.shard}`, {
        job: ref.job,
        shard: ref.shard,
        agent: agent.id,
      });
      touched.add(ref.job);
    }
    if (touched.size > 0) this.reconcileSoon();
    if (ignored.length > 0) {
      const shown = ignored.slice(0, 5).map((r) => `${r.job}/${r.shard} @ (${r.term}, ${r.generation})`);
      this.emit(
        "shard.release-ignored",
        `ignored ${ignored.length} release${ignored.length === 1 ? "" : "s"} from ${agent.id} of shards it does not hold at that (term, generation): ` +
          `${shown.join(", ")}${ignored.length > shown.length ? ", ..." : ""}`,
        { agent: agent.id },
      );
    }
  }

  /** The agent is leaving on purpose: move its shards away now. */
  goodbye(session: string, reason: string, now: number): void {
    this.advance(now);
    const agent = this.agentOf(session);
    agent.leaving = true;
    this.emit("agent.draining", `agent ${agent.id} is leaving (${reason || "no reason given"})`, { agent: agent.id });
    this.agentsChanged();
  }

  /** The stream ended, for whatever reason. Unknown sessions are ignored. */
  streamClosed(session: string, now: number): void {
    this.advance(now);
    const id = this.sessions.get(session);
    if (id === undefined) return;
    this.sessions.delete(session);
    const agent = this.agents.get(id)!;
    agent.connected = false;
    if (agent.shards.size === 0 && agent.executions.size === 0) {
      this.agents.delete(agent.id);
      this.emit("agent.left", `agent ${agent.id} left`, { agent: agent.id });
      return;
    }
    agent.lost = true;
    this.emit(
      "agent.lost",
      `agent ${agent.id} lost its stream; its shards are fenced until its lease expires at ${new Date(agent.leaseExpiry).toISOString()}`,
      { agent: agent.id },
    );
    // failover: fast trades the no-duplicate guarantee for speed: move at once.
    for (const shard of [...agent.shards]) {
      if (this.jobs.get(shard.job)?.record.spec.failover !== "fast") continue;
      this.loseRunning(shard, `agent ${agent.id} lost its stream (failover: fast)`, agent.id);
      this.unassign(shard);
    }
    if (agent.shards.size === 0 && agent.executions.size === 0) this.agents.delete(agent.id);
    this.agentsChanged();
  }


  /** Creates or updates a job; `changed` is false when the spec equals the stored one. */
  applyJob(name: string, spec: JobSpec, manifest: string, now: number): { record: JobRecord; changed: boolean } {
    this.advance(now);
    const existing = this.jobs.get(name);
    if (existing !== undefined && specEquals(existing.record.spec, spec)) {
      return { record: existing.record, changed: false };
    }
    const record: JobRecord = {
      name,
      manifest,
      spec,
      paused: existing?.record.paused ?? false,
      revision: (existing?.record.revision ?? 0) + 1,
      disabledShards: (existing?.record.disabledShards ?? []).filter((s) => s < spec.shards),
    };
    this.outbox.saveJob(record);
    if (existing === undefined) {
      const job = this.addJobEntry(record);
      // Applied again under a deleted job's name: it fires after that job's last fire, never
      // making an execution id that job had; missed fires are not made up.
      const deletedLast = this.deletedCursors.get(name);
      this.deletedCursors.delete(name);
      if (deletedLast !== undefined) job.lastIssuedFire = deletedLast;
      this.scheduleNext(job, Math.max(this.now, deletedLast ?? this.now));
      this.emit("job.created", `job ${name} created with ${spec.shards} shards`, { job: name });
    } else {
      const before = existing.record.spec;
      existing.record = record;
      if (spec.onFireComplete === undefined) this.stopFireCompletes(name, "the job no longer has spec.onFireComplete");
      this.resizeShards(existing, spec.shards);
      if (before.schedule !== spec.schedule || before.timeZone !== spec.timeZone || before.suspend !== spec.suspend) {
        this.scheduleNext(existing, Math.max(this.now, existing.cursor ?? this.now));
      }
      this.emit("job.updated", `job ${name} updated to revision ${record.revision}`, { job: name });
    }
    this.reconcileSoon();
    return { record, changed: true };
  }

  /**
   * Deletes a job. Its waiting executions are cancelled here; running ones are asked to stop on
   * their agents and are recorded as their agents report them.
   */
  deleteJob(name: string, now: number): void {
    this.advance(now);
    const job = this.requireJob(name);
    // First: cancelling the shards' runs below must not count as their fires completing.
    this.stopFireCompletes(name, "job deleted");
    // Shards whose owner still holds them stay fenced for it, as a smaller shard count leaves
    // them, so that the job applied again under this name cannot give them to a second agent.
    const retired = this.deletedJobShards.get(name) ?? new Map<number, ShardEntry>();
    for (const shard of [...job.shards, ...job.retired.values()]) this.removeShard(shard, "job deleted", retired);
    if (retired.size > 0) this.deletedJobShards.set(name, retired);
    this.jobs.delete(name);
    this.deletedCursors.set(name, job.lastIssuedFire);
    this.outbox.deleteJob(name);
    this.emit("job.deleted", `job ${name} deleted`, { job: name });
    this.reconcileSoon();
  }

  /** Fires a job now; returns the fire instant and the executions created. */
  triggerJob(
    name: string,
    shards: readonly number[],
    parameter: string | undefined,
    now: number,
  ): { fireTime: number; executionIds: string[] } {
    this.advance(now);
    const job = this.requireJob(name);
    if (job.record.spec.daemon === true) {
      throw new ShardlineError("failed-precondition", `job ${name} is a daemon job: its shards run continuously, so there is nothing to trigger`);
    }
    for (const shard of shards) {
      if (!Number.isInteger(shard) || shard < 0 || shard >= job.shards.length) {
        throw ShardlineError.invalid("shards", shard, `shard numbers from 0 to ${job.shards.length - 1}`);
      }
    }
    for (const shard of shards) {
      if (job.record.disabledShards.includes(shard)) {
        throw new ShardlineError("failed-precondition", `shard ${shard} of job ${name} is disabled; enable it first`, {
          field: "shards",
          value: String(shard),
        });
      }
    }
    const fireTime = Math.max(this.now, job.lastIssuedFire + 1);
    const chosen = shards.length === 0 ? job.shards : [...new Set(shards)].map((s) => job.shards[s]!);
    const ids = this.fire(job, fireTime, "trigger", chosen, parameter);
    return { fireTime, executionIds: ids };
  }

  pauseJob(name: string, now: number): void {
    this.advance(now);
    const job = this.requireJob(name);
    if (job.record.paused) return;
    job.record = { ...job.record, paused: true };
    this.outbox.saveJob(job.record);
    this.scheduleNext(job, this.now);
    for (const shard of job.shards) this.stopDaemonRun(job, shard, "the job was paused");
    this.emit("job.paused", `job ${name} paused`, { job: name });
  }

  resumeJob(name: string, now: number): void {
    this.advance(now);
    const job = this.requireJob(name);
    if (!job.record.paused) return;
    job.record = { ...job.record, paused: false };
    this.outbox.saveJob(job.record);
    // Fires missed while paused are not made: the schedule restarts from now.
    this.scheduleNext(job, this.now);
    for (const shard of job.shards) this.dispatchShard(shard);
    this.emit("job.resumed", `job ${name} resumed`, { job: name });
  }

  /**
   * Cancels an open execution: a waiting one at once, a dispatched one by asking its agent to
   * abort it (it is recorded when the agent confirms, and never re-run by failover). Returns
   * the execution's state after the request.
   */
  cancelExecution(id: string, reason: string, now: number): ExecutionStateName {
    this.advance(now);
    const execution = this.open.get(id);
    if (execution === undefined) {
      throw new ShardlineError("failed-precondition", `execution ${JSON.stringify(id)} is not pending or running`, { field: "id", value: id });
    }
    const shard = this.jobs.get(execution.job)?.shards[execution.shard];
    const why = reason || "cancelled by an operator";
    if (execution.agent === "") {
      if (shard !== undefined) shard.queue = shard.queue.filter((e) => e.id !== id);
      this.waitingFireCompletes = this.waitingFireCompletes.filter((e) => e.id !== id);
      this.closeExecution(execution, "cancelled", { error: why });
      this.emit("execution.cancelled", `${id} cancelled: ${why}`, { job: execution.job, shard: execution.shard, executionId: id });
      if (shard !== undefined) this.dispatchShard(shard);
      return "cancelled";
    }
    this.cancelling.add(id);
    const agent = this.agents.get(execution.agent);
    if (agent !== undefined && agent.connected) this.outbox.send(agent.session, { kind: "cancel", executionIds: [id], reason: why });
    this.emit("execution.cancelling", `${id} is being cancelled on ${execution.agent}: ${why}`, {
      job: execution.job,
      shard: execution.shard,
      agent: execution.agent,
      executionId: id,
    });
    return execution.state;
  }

  /** Stops firing one shard of a job; its assignment and running executions stay. */
  disableShard(name: string, shard: number, now: number): void {
    this.setShardDisabled(name, shard, true, now);
  }

  enableShard(name: string, shard: number, now: number): void {
    this.setShardDisabled(name, shard, false, now);
  }

  private setShardDisabled(name: string, shard: number, disabled: boolean, now: number): void {
    this.advance(now);
    const job = this.requireJob(name);
    if (!Number.isInteger(shard) || shard < 0 || shard >= job.shards.length) {
      throw ShardlineError.invalid("shard", shard, `a shard number from 0 to ${job.shards.length - 1}`);
    }
    const set = new Set(job.record.disabledShards);
    if (set.has(shard) === disabled) return;
    if (disabled) set.add(shard);
    else set.delete(shard);
    job.record = { ...job.record, disabledShards: [...set].sort((a, b) => a - b) };
    this.outbox.saveJob(job.record);
    const entry = job.shards[shard]!;
    if (disabled) this.stopDaemonRun(job, entry, "the shard was disabled");
    else this.dispatchShard(entry);
    this.emit(disabled ? "shard.disabled" : "shard.enabled", `${name}/${shard} ${disabled ? "disabled" : "enabled"}`, { job: name, shard });
  }

  drainAgent(id: string, now: number): void {
    this.advance(now);
    const agent = this.agents.get(id);
    if (agent === undefined) throw notFound("agent", id);
    agent.cordoned = true;
    this.emit("agent.cordoned", `agent ${id} drained: its shards move away`, { agent: id });
    this.agentsChanged();
  }

  uncordonAgent(id: string, now: number): void {
    this.advance(now);
    const agent = this.agents.get(id);
    if (agent === undefined) throw notFound("agent", id);
    agent.cordoned = false;
    this.emit("agent.uncordoned", `agent ${id} may receive shards again`, { agent: id });
    this.agentsChanged();
  }


  private armLeaseTimer(agent: AgentEntry): void {
    if (agent.leaseTimerArmed) return;
    agent.leaseTimerArmed = true;
    this.timers.push(agent.leaseExpiry, { kind: "lease", agent: agent.id, incarnation: agent.incarnation });
  }

  private expireLease(agent: AgentEntry): void {
    if (agent.connected) {
      this.sessions.delete(agent.session);
      this.outbox.close(agent.session, "lease expired: no heartbeat within the lease");
      agent.connected = false;
    }
    this.emit("agent.lease-expired", `agent ${agent.id}'s lease expired; its shards move`, { agent: agent.id });
    for (const shard of [...agent.shards]) {
      this.loseRunning(shard, `agent ${agent.id}'s lease expired before the run finished`, agent.id);
      this.unassign(shard);
    }
    for (const id of [...agent.executions]) {
      const execution = this.open.get(id);
      if (execution !== undefined) this.loseExecution(execution, `agent ${agent.id}'s lease expired before the run finished`);
    }
    this.agents.delete(agent.id);
    this.agentsChanged();
  }

  /** Marks every run the shard's owner holds as lost (with failover per the job's spec). */
  private loseRunning(shard: ShardEntry, reason: string, onlyOf?: string): void {
    for (const id of [...shard.running]) {
      const execution = this.open.get(id);
      if (execution !== undefined && (onlyOf === undefined || execution.agent === onlyOf)) this.loseExecution(execution, reason);
    }
  }

  private loseExecution(execution: ExecutionRecord, reason: string): void {
    if (this.cancelling.has(execution.id)) {
      // It was being cancelled: a lost agent does not bring it back.
      this.closeExecution(execution, "cancelled", { error: `cancelled; its agent could not confirm (${reason})` });
      return;
    }
    const job = this.jobs.get(execution.job);
    const shard = job?.shards[execution.shard];
    const fireComplete = execution.shard === FIRE_COMPLETE_SHARD;
    if (job === undefined || (shard === undefined && !fireComplete)) {
      // Its job or shard was removed while it ran: removal cancels runs, this one included.
      this.closeExecution(execution, "cancelled", { error: `cancelled: its ${job === undefined ? "job was deleted" : "shard was removed"}; ${reason}` });
      return;
    }
    // A daemon run is not re-run: the shard's next owner starts its own.
    const rerun = job.record.spec.failover !== "off" && execution.cause !== "daemon";
    this.closeExecution(execution, "lost", { error: reason }, rerun);
    this.emit("execution.lost", `${execution.id} lost: ${reason}`, {
      job: execution.job,
      shard: execution.shard,
      agent: execution.agent,
      executionId: execution.id,
    });
    if (!rerun) return;
    const retry = this.newExecution(job, execution.shard, execution.fireTime, execution.attempt + 1, "failover", execution.parameter);
    this.trace(job, retry, execution.traceContext);
    this.emit("execution.failover", `${execution.id} runs again as ${retry.id}`, {
      job: job.record.name,
      shard: execution.shard,
      executionId: retry.id,
    });
    if (shard !== undefined) {
      this.enqueue(job, shard, retry);
    } else {
      retry.fireOutcome = execution.fireOutcome;
      this.queueFireComplete(retry);
    }
  }


  /** `stale` counts the reports ignored; past `stale.events` of them, no event is emitted for each. */
  private applyReport(agent: AgentEntry, report: ExecutionReport, stale?: { count: number; events: number }): void {
    const execution = this.open.get(report.executionId);
    if (execution === undefined || execution.agent !== agent.id) {
      // A report of a run already closed (for example lost after a lease expiry), or of another
      // agent's, changes nothing.
      if (stale !== undefined && ++stale.count > stale.events) return;
      this.emit("execution.stale-report", `ignored a report of ${report.executionId} from ${agent.id}`, {
        agent: agent.id,
        executionId: report.executionId,
      });
      return;
    }
    if (report.state === "running") {
      if (execution.state !== "running") {
        execution.state = "running";
        execution.startedAt = report.startedAt ?? this.now;
        this.outbox.saveExecution(execution);
      }
      return;
    }
    if (report.state === "lost") {
      this.loseExecution(execution, report.error || `agent ${agent.id} could not finish it`);
      return;
    }
    if (!TERMINAL_STATES.has(report.state) || report.state === "misfired") {
      throw ShardlineError.invalid(
        "execution_updates.state",
        report.state,
        "RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED or LOST",
      );
    }
    const startedAt = execution.startedAt ?? report.startedAt;
    const job = this.jobs.get(execution.job);
    const shard = job?.shards[execution.shard];
    const retrying =
      job !== undefined &&
      (shard !== undefined || execution.shard === FIRE_COMPLETE_SHARD) &&
      (report.state === "failed" || report.state === "timed-out") &&
      execution.attempt <= job.record.spec.retries.limit;
    this.closeExecution(
      execution,
      report.state,
      { startedAt, finishedAt: report.finishedAt, error: report.error, result: report.result },
      retrying,
    );
    this.emit("execution.finished", `${execution.id} ${report.state} on ${agent.id}`, {
      job: execution.job,
      shard: execution.shard,
      agent: agent.id,
      executionId: execution.id,
      state: report.state,
    });
    if (retrying) this.scheduleRetry(job, shard, execution);
    if (shard !== undefined) this.dispatchShard(shard);
  }

  /**
   * Queues the next attempt of a failed execution after its backoff: a shard's ahead of later
   * fires, a completion hook's among the waiting hooks (`shard` undefined).
   */
  private scheduleRetry(job: JobEntry, shard: ShardEntry | undefined, failed: ExecutionRecord): void {
    const retry = this.newExecution(job, failed.shard, failed.fireTime, failed.attempt + 1, "retry", failed.parameter);
    this.trace(job, retry, failed.traceContext);
    retry.notBefore = this.now + retryDelayMs(job.record.spec.retries.backoffSeconds, failed.attempt);
    if (shard === undefined) {
      retry.fireOutcome = failed.fireOutcome;
      this.queueFireComplete(retry);
    } else {
      this.open.set(retry.id, retry);
      shard.queue.unshift(retry);
      this.queuedAt.set(retry.id, ++this.queueSeq);
      this.outbox.saveExecution(retry);
      this.timers.push(retry.notBefore, { kind: "retry", job: job.record.name, shard: shard.shard });
    }
    this.emit("execution.retry", `${failed.id} ${failed.state}; retrying as ${retry.id} at ${new Date(retry.notBefore).toISOString()}`, {
      job: job.record.name,
      shard: failed.shard,
      executionId: retry.id,
    });
  }

  /**
   * Moves an open execution to a terminal state and forgets it. `followedUp`: another attempt
   * of the same fire and shard comes next (a retry or a failover run), so the shard's part of
   * the fire is not over yet.
   */
  private closeExecution(
    execution: ExecutionRecord,
    state: ExecutionStateName,
    fields: { startedAt?: number; finishedAt?: number; error?: string; result?: string },
    followedUp = false,
  ): void {
    execution.state = state;
    if (fields.startedAt !== undefined) execution.startedAt = fields.startedAt;
    execution.finishedAt = fields.finishedAt || this.now;
    if (fields.error) execution.error = fields.error;
    if (fields.result) execution.result = fields.result;
    this.outbox.saveExecution(execution);
    this.open.delete(execution.id);
    this.queuedAt.delete(execution.id);
    this.cancelling.delete(execution.id);
    const agent = this.agents.get(execution.agent);
    const freed = agent !== undefined && agent.executions.delete(execution.id);
    const shard = this.jobs.get(execution.job)?.shards[execution.shard];
    let shardFreed = false;
    if (shard !== undefined) {
      shardFreed = shard.running.delete(execution.id);
      if (execution.cause === "daemon" && execution.agent !== "" && execution.agent === shard.owner) shard.daemonEndedAt = this.now;
    }
    if (!followedUp) this.settleFire(execution);
    // The shard's next execution may have waited for this one (overlap: forbid), also when it
    // ran on an agent other than the shard's owner (restored for an agent not back yet, now lost).
    if (shardFreed && shard!.queue.length > 0) this.dispatchShard(shard!);
    if (freed && agent.maxConcurrent > 0) this.fillSlots(agent);
    if (freed) this.dispatchFireCompletes();
  }

  /**
   * Counts the execution's shard as finished in its fire; when it was the last one, queues the
   * fire's spec.onFireComplete run, unless nothing ran (every shard misfired).
   */
  private settleFire(execution: ExecutionRecord): void {
    if (execution.shard === FIRE_COMPLETE_SHARD) return;
    const key = fireKey(execution.job, execution.fireTime);
    const progress = this.fires.get(key);
    if (progress === undefined || !progress.pending.delete(execution.shard)) return;
    progress.outcomes.set(execution.shard, outcomeOf(execution));
    if (progress.pending.size > 0) return;
    this.fires.delete(key);
    const job = this.jobs.get(execution.job);
    if (job?.record.spec.onFireComplete === undefined) return;
    const outcomes = [...progress.outcomes.values()].sort((a, b) => a.shard - b.shard);
    if (outcomes.every((o) => o.state === "misfired")) return;
    const run = this.newExecution(job, FIRE_COMPLETE_SHARD, execution.fireTime, 1, "fire-complete", execution.parameter);
    this.trace(job, run);
    run.fireOutcome = outcomes;
    const succeeded = outcomes.filter((o) => o.state === "succeeded").length;
    this.emit(
      "fire.completed",
      `every shard of ${job.record.name}'s fire at ${new Date(execution.fireTime).toISOString()} finished ` +
        `(${succeeded} of ${outcomes.length} succeeded); its completion hook runs as ${run.id}`,
      { job: job.record.name, executionId: run.id },
    );
    this.queueFireComplete(run);
  }

  /** Makes a completion hook run open and waiting, and sends it out if an agent can take it. */
  private queueFireComplete(run: ExecutionRecord): void {
    this.open.set(run.id, run);
    this.waitingFireCompletes.push(run);
    this.queuedAt.set(run.id, ++this.queueSeq);
    this.outbox.saveExecution(run);
    if (run.notBefore !== undefined) this.timers.push(run.notBefore, { kind: "retry", job: run.job, shard: FIRE_COMPLETE_SHARD });
    this.dispatchFireCompletes();
  }

  /**
   * Sends each waiting completion hook run whose time has come to the agent, among those that
   * declare its handler and match the job's placement, that runs the fewest executions and has
   * a free slot. It belongs to no shard, so it runs under that agent's lease alone: if the agent
   * is lost it runs again elsewhere only once its lease has expired, like a fenced shard's run.
   */
  private dispatchFireCompletes(): void {
    if (this.waitingFireCompletes.length === 0) return;
    const waiting: ExecutionRecord[] = [];
    const sends = new Map<AgentEntry, ExecutionContext[]>();
    for (const run of this.waitingFireCompletes) {
      const spec = this.jobs.get(run.job)?.record.spec;
      const hook = spec?.onFireComplete;
      const agent = spec === undefined || hook === undefined || (run.notBefore ?? 0) > this.now ? undefined : this.fireCompleteTarget(spec, hook.handler);
      if (agent === undefined) {
        waiting.push(run);
        continue;
      }
      this.queuedAt.delete(run.id);
      run.agent = agent.id;
      agent.executions.add(run.id);
      this.outbox.saveExecution(run);
      push(sends, agent, {
        executionId: run.id,
        job: run.job,
        shard: 0,
        shardCount: spec!.shards,
        shardParameter: "",
        parameter: run.parameter,
        fireTime: run.fireTime,
        attempt: run.attempt,
        handler: hook!.handler,
        timeoutMs: spec!.timeoutSeconds * 1000,
        traceContext: run.traceContext ?? {},
        fireOutcome: run.fireOutcome ?? [],
      });
    }
    this.waitingFireCompletes = waiting;
    for (const [agent, executions] of sends) this.outbox.send(agent.session, { kind: "dispatch", executions });
  }

  private fireCompleteTarget(spec: JobSpec, handler: string): AgentEntry | undefined {
    let best: AgentEntry | undefined;
    for (const agent of this.agents.values()) {
      if (!this.placeable(agent, spec) || !agent.handlers.has(handler) || !this.hasSlot(agent)) continue;
      if (best === undefined || agent.executions.size < best.executions.size || (agent.executions.size === best.executions.size && agent.id < best.id)) {
        best = agent;
      }
    }
    return best;
  }

  /** Cancels a job's completion hook runs, waiting or running, and forgets its fires' progress. */
  private stopFireCompletes(job: string, reason: string): void {
    for (const key of [...this.fires.keys()]) {
      if (key.startsWith(`${job}\n`)) this.fires.delete(key);
    }
    const mine = this.waitingFireCompletes.filter((run) => run.job === job);
    this.waitingFireCompletes = this.waitingFireCompletes.filter((run) => run.job !== job);
    for (const run of mine) this.closeExecution(run, "cancelled", { error: reason });
    for (const run of this.open.values()) {
      if (run.job !== job || run.shard !== FIRE_COMPLETE_SHARD || run.agent === "" || this.cancelling.has(run.id)) continue;
      const agent = this.agents.get(run.agent);
      this.cancelling.add(run.id);
      if (agent !== undefined && agent.connected) this.outbox.send(agent.session, { kind: "cancel", executionIds: [run.id], reason });
    }
  }

  /**
   * A daemon job's shard runs one execution for as long as its owner keeps it: queue one when
   * none runs or waits. After a run ends under the same owner, the next waits the job's backoff.
   */
  private ensureDaemonRun(job: JobEntry, shard: ShardEntry): void {
    const spec = job.record.spec;
    if (spec.daemon !== true || job.record.paused || spec.suspend || job.record.disabledShards.includes(shard.shard)) return;
    if (shard.running.size > 0 || shard.queue.length > 0) return;
    const fireTime = Math.max(this.now, job.lastIssuedFire + 1);
    job.lastIssuedFire = fireTime;
    const run = this.newExecution(job, shard.shard, fireTime, 1, "daemon", spec.parameter);
    this.trace(job, run);
    if (shard.daemonEndedAt !== undefined) {
      run.notBefore = shard.daemonEndedAt + Math.max(1, spec.retries.backoffSeconds) * 1000;
      this.timers.push(run.notBefore, { kind: "retry", job: job.record.name, shard: shard.shard });
    }
    this.open.set(run.id, run);
    shard.queue.push(run);
    this.queuedAt.set(run.id, ++this.queueSeq);
    this.outbox.saveExecution(run);
  }

  /** Asks the owner to stop the shard's daemon run (a revoke, a pause, a disable). */
  private stopDaemonRun(job: JobEntry, shard: ShardEntry, reason: string): void {
    if (job.record.spec.daemon !== true) return;
    for (const execution of shard.queue) this.closeExecution(execution, "cancelled", { error: reason });
    shard.queue = [];
    const owner = shard.owner === undefined ? undefined : this.agents.get(shard.owner);
    const running = [...shard.running].filter((id) => !this.cancelling.has(id));
    if (owner === undefined || !owner.connected || running.length === 0) return;
    for (const id of running) this.cancelling.add(id);
    this.outbox.send(owner.session, { kind: "cancel", executionIds: running, reason });
  }

  /** True when the agent may start one more execution. */
  private hasSlot(agent: AgentEntry): boolean {
    return agent.maxConcurrent === 0 || agent.executions.size < agent.maxConcurrent;
  }

  /**
   * Gives an agent's free slots to its waiting executions: highest job priority first, then
   * first in, first out.
   */
  private fillSlots(agent: AgentEntry): void {
    while (agent.connected && !agent.lost && this.hasSlot(agent)) {
      let best: ShardEntry | undefined;
      let bestPriority = -Infinity;
      let bestSeq = Infinity;
      for (const shard of agent.shards) {
        const head = shard.queue[0];
        if (head === undefined || !this.headCanStart(shard)) continue;
        const priority = priorityOf(this.jobs.get(shard.job)!.record.spec);
        const seq = this.queuedAt.get(head.id) ?? 0;
        if (priority > bestPriority || (priority === bestPriority && seq < bestSeq)) {
          best = shard;
          bestPriority = priority;
          bestSeq = seq;
        }
      }
      if (best === undefined) return;
      this.dispatchShard(best, 1);
    }
  }

  /** True when the shard's first waiting execution may go to its owner now (slots aside). */
  private headCanStart(shard: ShardEntry): boolean {
    const head = shard.queue[0];
    if (head === undefined || (head.notBefore ?? 0) > this.now || this.dispatchTarget(shard) === undefined) return false;
    return shard.running.size === 0 || this.jobs.get(shard.job)!.record.spec.overlap !== "forbid";
  }

  private newExecution(
    job: JobEntry,
    shard: number,
    fireTime: number,
    attempt: number,
    cause: ExecutionCause,
    parameter: string,
  ): ExecutionRecord {
    return {
      id: executionId(job.record.name, fireTime, shard, attempt),
      job: job.record.name,
      shard,
      fireTime,
      attempt,
      agent: "",
      state: "pending",
      cause,
      parameter,
    };
  }

  /**
   * Gives a new execution its trace context (tracing.contextFor), kept on the record so that it
   * is stored, dispatched, and found again by a run that replaces it after a restart. An empty
   * context is not kept: untraced records stay as they were.
   */
  private trace(job: JobEntry, execution: ExecutionRecord, replaces?: TraceCarrier): void {
    if (this.tracing === NO_TRACING) return;
    const context = this.tracing.contextFor(
      {
        id: execution.id,
        job: execution.job,
        shard: execution.shard,
        shardCount: job.record.spec.shards,
        fireTime: execution.fireTime,
        attempt: execution.attempt,
        cause: execution.cause,
      },
      replaces,
    );
    if (Object.keys(context).length > 0) execution.traceContext = context;
  }

  /** Makes one fire of a job: one execution per chosen shard. */
  private fire(
    job: JobEntry,
    fireTime: number,
    cause: ExecutionCause,
    shards: readonly ShardEntry[] = job.shards,
    parameter?: string,
  ): string[] {
    job.lastIssuedFire = Math.max(job.lastIssuedFire, fireTime);
    if (cause === "schedule" || cause === "misfire") {
      job.cursor = Math.max(job.cursor ?? fireTime, fireTime);
      this.outbox.saveCursor(job.record.name, job.cursor);
    }
    const ids: string[] = [];
    const disabled = new Set(job.record.disabledShards);
    const firing = shards.filter((shard) => !disabled.has(shard.shard));
    // Registered before any shard is queued: one that misfires at once must not look like the last.
    if (job.record.spec.onFireComplete !== undefined && firing.length > 0) {
      this.fires.set(fireKey(job.record.name, fireTime), { pending: new Set(firing.map((s) => s.shard)), outcomes: new Map() });
    }
    for (const shard of firing) {
      const execution = this.newExecution(job, shard.shard, fireTime, 1, cause, parameter ?? job.record.spec.parameter);
      this.trace(job, execution);
      ids.push(execution.id);
      this.enqueue(job, shard, execution);
    }
    return ids;
  }

  /** Starts an execution now if its shard can, else queues or misfires it per the job's spec. */
  private enqueue(job: JobEntry, shard: ShardEntry, execution: ExecutionRecord): void {
    if (!this.canStartNow(job, shard)) {
      const waiting = shard.queue.filter((e) => e.cause === "schedule" || e.cause === "misfire").length;
      const admission = admitLateFire(job.record.spec, execution.cause, waiting);
      if (!admission.admit) {
        const wait = this.shardWait(job, shard);
        this.misfire(execution, wait === undefined ? admission.reason : `${admission.reason}: ${wait}`);
        return;
      }
    }
    this.open.set(execution.id, execution);
    shard.queue.push(execution);
    this.queuedAt.set(execution.id, ++this.queueSeq);
    this.outbox.saveExecution(execution);
    this.dispatchShard(shard);
  }

  private misfire(execution: ExecutionRecord, reason: string): void {
    execution.state = "misfired";
    execution.error = reason;
    execution.finishedAt = this.now;
    this.outbox.saveExecution(execution);
    this.settleFire(execution);
    this.emit("execution.misfired", `${execution.id} misfired: ${reason}`, {
      job: execution.job,
      shard: execution.shard,
      executionId: execution.id,
    });
  }

  private canStartNow(job: JobEntry, shard: ShardEntry): boolean {
    const target = this.dispatchTarget(shard);
    if (shard.queue.length > 0 || target === undefined || !this.hasSlot(target)) return false;
    return job.record.spec.overlap !== "forbid" || shard.running.size === 0;
  }

  /** The agent the shard's work can be sent to now, if any. */
  private dispatchTarget(shard: ShardEntry): AgentEntry | undefined {
    if (shard.owner === undefined || shard.revoking) return undefined;
    const agent = this.agents.get(shard.owner);
    if (agent === undefined || !agent.connected || agent.lost || agent.inherited?.shards.has(shard) === true) return undefined;
    return agent;
  }

  /** Sends the shard's waiting executions to its owner, as its overlap policy allows. */
  private dispatchShard(shard: ShardEntry, max = Infinity): void {
    const agent = this.dispatchTarget(shard);
    const job = this.jobs.get(shard.job);
    if (agent !== undefined && job !== undefined) this.ensureDaemonRun(job, shard);
    if (agent === undefined || job === undefined || shard.queue.length === 0) return;
    const spec = job.record.spec;
    const contexts: ExecutionContext[] = [];
    while (shard.queue.length > 0 && contexts.length < max && this.hasSlot(agent)) {
      if ((shard.queue[0]!.notBefore ?? 0) > this.now) break;
      if (shard.running.size > 0 && spec.overlap === "forbid") break;
      if (shard.running.size > 0 && spec.overlap === "replace") {
        const stale = [...shard.running].filter((id) => !this.cancelling.has(id));
        if (stale.length > 0) {
          for (const id of stale) this.cancelling.add(id);
          this.outbox.send(agent.session, { kind: "cancel", executionIds: stale, reason: "replaced by a newer fire (overlap: replace)" });
        }
      }
      const execution = shard.queue.shift()!;
      this.queuedAt.delete(execution.id);
      execution.agent = agent.id;
      shard.running.add(execution.id);
      agent.executions.add(execution.id);
      this.outbox.saveExecution(execution);
      contexts.push({
        executionId: execution.id,
        job: execution.job,
        shard: execution.shard,
        shardCount: spec.shards,
        shardParameter: spec.shardParameters[execution.shard] ?? "",
        parameter: execution.parameter,
        fireTime: execution.fireTime,
        attempt: execution.attempt,
        handler: spec.handler,
        timeoutMs: spec.timeoutSeconds * 1000,
        assignment: { job: shard.job, shard: shard.shard, term: shard.term, generation: shard.generation },
        traceContext: execution.traceContext ?? {},
        ...executorOf(spec),
        ...(execution.cause === "daemon" ? { daemon: true } : {}),
      });
    }
    if (contexts.length > 0) this.outbox.send(agent.session, { kind: "dispatch", executions: contexts });
  }


  /**
   * Level-based: computes the desired owner of every shard from the live agents and the jobs,
   * and acts on the difference. A shard whose owner is alive is revoked and moves once released;
   * one whose owner is lost stays fenced until that owner's lease expires.
   */
  private reconcileSoon(): void {
    this.reconcilePending = true;
  }

  /** Which agents may hold what changed (one joined, left, was lost, drained...): every job is placed again. */
  private agentsChanged(): void {
    this.agentsEpoch++;
    this.reconcileSoon();
  }

  /**
   * True when placing the job again could change nothing: it was placed for the same agents and
   * the same spec, and every shard has an owner (a shard released, lost or added has none).
   */
  private placementCurrent(job: JobEntry): boolean {
    if (job.placedFor?.agentsEpoch !== this.agentsEpoch || job.placedFor.spec !== job.record.spec) return false;
    for (const shard of job.shards) if (shard.owner === undefined) return false;
    return true;
  }

  private reconcileAll(): void {
    if (this.now < this.startupGraceUntil) return;
    const adds = new Map<string, AssignmentRef[]>();
    const revokes = new Map<string, AssignmentRef[]>();
    const assigned: ShardEntry[] = [];
    const load = new Map<string, number>();
    for (const agent of this.agents.values()) load.set(agent.id, agent.shards.size);
    // Higher-priority jobs are placed first, so they get the least loaded agents.
    const order = [...this.jobs.values()].sort(
      (a, b) => priorityOf(b.record.spec) - priorityOf(a.record.spec) || (a.record.name < b.record.name ? -1 : 1),
    );
    // Jobs that run the same way with the same selector share one list of eligible agents.
    const eligibleBy = new Map<string, AgentEntry[]>();
    for (const job of order) {
      if (this.placementCurrent(job)) continue;
      const name = job.record.name;
      const spec = job.record.spec;
      job.placedFor = { agentsEpoch: this.agentsEpoch, spec };
      const runsBy = spec.script !== undefined ? "script" : spec.http !== undefined ? "http" : spec.kubernetes !== undefined ? "kubernetes" : `handler:${spec.handler}`;
      const key = `${runsBy} ${JSON.stringify(spec.placement)}`;
      let eligible = eligibleBy.get(key);
      if (eligible === undefined) {
        eligible = [...this.agents.values()].filter((a) => this.eligible(a, spec));
        eligibleBy.set(key, eligible);
      }
      const mine = new Map<string, number>();
      const previous = new Map<number, string>();
      for (const shard of job.shards) {
        if (shard.owner === undefined) continue;
        previous.set(shard.shard, shard.owner);
        mine.set(shard.owner, (mine.get(shard.owner) ?? 0) + 1);
      }
      const desired = this.placeShards(spec, {
        job: name,
        shardCount: spec.shards,
        agents: eligible.map((a) => ({ id: a.id, capacity: a.capacity, load: (load.get(a.id) ?? 0) - (mine.get(a.id) ?? 0) })),
        previous,
      });
      for (const shard of job.shards) {
        const want = desired.get(shard.shard);
        if (shard.owner === want) continue;
        if (shard.owner === undefined) {
          const agent = this.agents.get(want!)!;
          this.assign(shard, agent);
          push(adds, agent.id, this.refOf(shard));
          load.set(agent.id, (load.get(agent.id) ?? 0) + 1);
          assigned.push(shard);
          continue;
        }
        const owner = this.agents.get(shard.owner);
        // A lost owner's shards, and a replaced process's, are fenced: they move once its lease ends.
        if (owner === undefined || owner.lost || shard.revoking || owner.inherited?.shards.has(shard) === true) continue;
        shard.revoking = true;
        push(revokes, owner.id, this.refOf(shard));
        this.stopDaemonRun(job, shard, "the shard is moving to another agent");
        this.emit("shard.revoking", `${name}/${shard.shard} is moving away from ${owner.id}`, {
          job: name,
          shard: shard.shard,
          agent: owner.id,
        });
      }
    }
    for (const id of new Set([...adds.keys(), ...revokes.keys()])) {
      const agent = this.agents.get(id)!;
      this.outbox.send(agent.session, { kind: "assignments", snapshot: false, add: adds.get(id) ?? [], revoke: revokes.get(id) ?? [] });
    }
    for (const shard of assigned) this.dispatchShard(shard);
    this.dispatchFireCompletes();
  }

  /**
   * Runs the job's strategy. A custom one (user code) that throws, or maps a shard to an agent
   * that is not eligible, is not trusted: the job falls back to sticky and an event says why.
   */
  private placeShards(spec: JobSpec, input: ShardingInput): Map<number, string> {
    const spreadBy = spec.placement.spreadBy ?? [];
    if (spreadBy.length > 0) {
      // The manifest allows spreadBy only with sticky; placeable() let in only agents with every label.
      const topologyOf = (id: string): string[] => {
        const labels = this.agents.get(id)?.labels;
        return labels === undefined ? [] : spreadBy.map((key) => labels[key] ?? "");
      };
      return spreadSticky(topologyOf, spreadBy.length)(input);
    }
    if (!spec.strategy.startsWith("custom:")) return strategyFor(spec.strategy as StrategyName)(input);
    const name = spec.strategy.slice("custom:".length);
    const custom = this.config.customStrategies?.get(name);
    let problem: string;
    if (custom === undefined) {
      problem = `strategy ${spec.strategy} is not loaded on this controller`;
    } else {
      try {
        const result = custom(input);
        problem = invalidPlacement(result, input) ?? "";
        if (problem === "") return result;
      } catch (error) {
        problem = `strategy ${spec.strategy} threw: ${error instanceof Error ? error.message : String(error)}`;
      }
    }
    this.emit("job.strategy-failed", `${input.job}: ${problem}; placing its shards with sticky instead`, { job: input.job });
    return strategyFor("sticky")(input);
  }

  /** True when the agent may take the job's shards. */
  private eligible(agent: AgentEntry, spec: JobSpec): boolean {
    if (!this.placeable(agent, spec)) return false;
    if (spec.script !== undefined) return agent.executors.has("script");
    if (spec.http !== undefined) return agent.executors.has("http");
    if (spec.kubernetes !== undefined) return agent.executors.has("kubernetes");
    return agent.handlers.has(spec.handler);
  }

  /** True when the agent takes new work and matches the job's placement, whatever it runs. */
  private placeable(agent: AgentEntry, spec: JobSpec): boolean {
    if (!agent.connected || agent.lost || agent.leaving || agent.cordoned) return false;
    for (const [key, value] of Object.entries(spec.placement.selector)) {
      if (agent.labels[key] !== value) return false;
    }
    // An agent whose place is unknown cannot be counted in a domain: it takes none of the shards.
    for (const key of spec.placement.spreadBy ?? []) {
      if (agent.labels[key] === undefined) return false;
    }
    return true;
  }

  private assign(shard: ShardEntry, agent: AgentEntry): void {
    shard.daemonEndedAt = undefined;
    shard.owner = agent.id;
    shard.term = this.term;
    shard.generation = ++this.generation;
    shard.revoking = false;
    agent.shards.add(shard);
    this.emit("shard.assigned", `${shard.job}/${shard.shard} assigned to ${agent.id}`, {
      job: shard.job,
      shard: shard.shard,
      agent: agent.id,
    });
  }

  private unassign(shard: ShardEntry): void {
    if (shard.retired === true) {
      this.jobs.get(shard.job)?.retired.delete(shard.shard);
      const deleted = this.deletedJobShards.get(shard.job);
      if (deleted?.get(shard.shard) === shard) {
        deleted.delete(shard.shard);
        if (deleted.size === 0) this.deletedJobShards.delete(shard.job);
      }
    }
    if (shard.owner !== undefined) this.agents.get(shard.owner)?.shards.delete(shard);
    shard.owner = undefined;
    shard.revoking = false;
    shard.claim = undefined;
  }

  private refOf(shard: ShardEntry): AssignmentRef {
    return { job: shard.job, shard: shard.shard, term: shard.term, generation: shard.generation };
  }

  /**
   * Re-attaches the runs a reconnecting agent still holds; the rest of its runs are lost. Returns
   * its reports of runs that finished meanwhile, for the caller to apply once the agent has its
   * assignments again: a finish frees the shard for its next execution, which is dispatched at
   * once and must be neither taken for a run missing from the Hello nor sent before the snapshot.
   */
  private reattachExecutions(agent: AgentEntry, reports: readonly ExecutionReport[]): ExecutionReport[] {
    const reported = new Set<string>();
    const finished: ExecutionReport[] = [];
    const stale: string[] = [];
    for (const report of reports) {
      const execution = this.open.get(report.executionId);
      if (execution === undefined || execution.agent !== agent.id) {
        // Still running on the agent, yet no longer its own here (recorded lost and run again, or
        // ended): work that outlived the agent's process, such as a Kubernetes Job. Stop it.
        if (report.state === "running" || report.state === "pending") stale.push(report.executionId);
        continue;
      }
      reported.add(execution.id);
      if (report.state === "pending") continue;
      if (report.state === "running") this.applyReport(agent, report);
      else finished.push(report);
    }
    for (const id of [...agent.executions]) {
      if (reported.has(id)) {
        agent.inherited?.runs.delete(id);
        continue;
      }
      // A previous process's run stays its own until its fence ends: it may still be running it.
      if (agent.inherited?.runs.has(id)) continue;
      const execution = this.open.get(id);
      if (execution !== undefined) this.loseExecution(execution, `agent ${agent.id} reconnected without it`);
    }
    if (stale.length > 0) {
      this.outbox.send(agent.session, { kind: "cancel", executionIds: stale, reason: "the controller no longer counts this execution as running on this agent" });
    }
    return finished;
  }

  /**
   * Takes back shards a reconnecting agent says it holds, when nobody else owns them. After a
   * controller restart, conflicting claims are settled by the higher (term, generation).
   */
  private adoptHeld(agent: AgentEntry, held: readonly AssignmentRef[]): void {
    const inGrace = this.now < this.startupGraceUntil;
    const future: AssignmentRef[] = [];
    for (const ref of held) {
      const shard = this.jobs.get(ref.job)?.shards[ref.shard];
      if (shard === undefined || shard.owner === agent.id) continue;
      if (claimFromTheFuture(ref, this.term, this.generation)) {
        future.push(ref);
        continue;
      }
      if (shard.owner === undefined) {
        this.assign(shard, agent);
        if (inGrace) shard.claim = [ref.term, ref.generation];
        continue;
      }
      const claim = shard.claim;
      if (!inGrace || claim === undefined) continue;
      if (ref.term > claim[0] || (ref.term === claim[0] && ref.generation > claim[1])) {
        const other = this.agents.get(shard.owner);
        this.unassign(shard);
        this.assign(shard, agent);
        shard.claim = [ref.term, ref.generation];
        if (other !== undefined && other.connected) this.sendSnapshot(other);
      }
    }
    if (future.length > 0) {
      const shown = future.slice(0, 5).map((r) => `${r.job}/${r.shard} @ (${r.term}, ${r.generation})`);
      this.emit(
        "shard.claim-ignored",
        `ignored ${future.length} claim${future.length === 1 ? "" : "s"} of ${agent.id} newer than any assignment made so far ` +
          `(term ${this.term}, generation ${this.generation}): ${shown.join(", ")}${future.length > shown.length ? ", ..." : ""}`,
        { agent: agent.id },
      );
    }
  }

  /** Tells an agent its whole set of shards; revoking ones are revoked again after it. */
  private sendSnapshot(agent: AgentEntry): void {
    const owned = [...agent.shards].filter((s) => agent.inherited?.shards.has(s) !== true);
    this.outbox.send(agent.session, {
      kind: "assignments",
      snapshot: true,
      add: owned.map((s) => this.refOf(s)),
      revoke: owned.filter((s) => s.revoking).map((s) => this.refOf(s)),
    });
  }


  private addJobEntry(record: JobRecord): JobEntry {
    // A job applied again under the name of a deleted one takes back its still-held shards.
    const retired = this.deletedJobShards.get(record.name) ?? new Map<number, ShardEntry>();
    this.deletedJobShards.delete(record.name);
    const job: JobEntry = { record, shards: [], fireToken: 0, lastIssuedFire: 0, retired };
    this.jobs.set(record.name, job);
    this.resizeShards(job, record.spec.shards);
    return job;
  }

  private resizeShards(job: JobEntry, count: number): void {
    while (job.shards.length > count) this.removeShard(job.shards.pop()!, "the job's shard count was reduced", job);
    while (job.shards.length < count) {
      const retired = job.retired.get(job.shards.length);
      if (retired !== undefined) {
        job.retired.delete(retired.shard);
        retired.retired = false;
        job.shards.push(retired);
        continue;
      }
      job.shards.push({
        job: job.record.name,
        shard: job.shards.length,
        term: 0,
        generation: 0,
        revoking: false,
        running: new Set(),
        queue: [],
      });
    }
  }

  /**
   * Cancels a shard's waiting runs, asks its running ones to stop, and takes it from its owner.
   * With `retireIn` (a smaller shard count), a shard whose owner still holds it is kept in that
   * job's retired shards until the owner gives it back.
   */
  private removeShard(shard: ShardEntry, reason: string, retireIn?: { retired: Map<number, ShardEntry> } | Map<number, ShardEntry>): void {
    for (const execution of shard.queue) this.closeExecution(execution, "cancelled", { error: reason });
    shard.queue = [];
    const owner = shard.owner === undefined ? undefined : this.agents.get(shard.owner);
    // A replaced process's shard is not with the process on the stream: nothing to tell it.
    if (owner !== undefined && owner.connected && owner.inherited?.shards.has(shard) !== true) {
      if (shard.running.size > 0) {
        this.outbox.send(owner.session, { kind: "cancel", executionIds: [...shard.running], reason });
      }
      this.outbox.send(owner.session, { kind: "assignments", snapshot: false, add: [], revoke: [this.refOf(shard)] });
    }
    if (owner !== undefined && retireIn !== undefined) {
      shard.revoking = true;
      shard.retired = true;
      (retireIn instanceof Map ? retireIn : retireIn.retired).set(shard.shard, shard);
      return;
    }
    this.unassign(shard);
  }

  /** Arms the job's next scheduled fire strictly after `after`, if it has a schedule and runs. */
  private scheduleNext(job: JobEntry, after: number): void {
    job.fireToken++;
    job.nextFire = undefined;
    const spec = job.record.spec;
    if (spec.schedule === undefined || job.record.paused || spec.suspend) return;
    const next = nextFireAfter(spec.schedule, spec.timeZone, after);
    if (next === undefined) return;
    job.nextFire = next;
    this.timers.push(next - this.config.dispatchAheadMs, { kind: "fire", job: job.record.name, token: job.fireToken, fireTime: next });
  }

  /** Applies the misfire policy to the fires a job missed while no controller was running. */
  private catchUpMissedFires(job: JobEntry): void {
    const spec = job.record.spec;
    if (spec.schedule !== undefined && job.cursor !== undefined && !job.record.paused && !spec.suspend) {
      const limit = this.config.maxMissedFiresRecorded + spec.maxCatchUp;
      const missed = fireTimesBetween(spec.schedule, spec.timeZone, job.cursor, this.now, limit);
      if (missed.length > 0) {
        const plan = planMissedFires(spec, missed);
        const recorded = plan.misfire.slice(-this.config.maxMissedFiresRecorded);
        if (missed.length >= limit || recorded.length < plan.misfire.length) {
          this.emit("job.misfired", `job ${job.record.name} missed more fires than are recorded one by one`, {
            job: job.record.name,
          });
        }
        for (const fireTime of recorded) {
          for (const shard of job.shards) {
            this.misfire(
              this.newExecution(job, shard.shard, fireTime, 1, "schedule", spec.parameter),
              `missed while no controller was running (spec.misfire: ${spec.misfire})`,
            );
          }
        }
        const last = missed[missed.length - 1]!;
        if (plan.run.length === 0) {
          job.cursor = last;
          job.lastIssuedFire = Math.max(job.lastIssuedFire, last);
          this.outbox.saveCursor(job.record.name, last);
        }
        for (const fireTime of plan.run) this.fire(job, fireTime, "misfire");
      }
    }
    this.scheduleNext(job, Math.max(this.now, job.cursor ?? this.now));
  }

  /** Puts an execution that was open when the previous controller stopped back in its place. */
  private restoreExecution(execution: ExecutionRecord): void {
    const job = this.jobs.get(execution.job);
    const shard = job?.shards[execution.shard];
    if (job === undefined || (shard === undefined && execution.shard !== FIRE_COMPLETE_SHARD)) {
      this.closeExecution(execution, "cancelled", { error: "its job no longer exists" });
      return;
    }
    if (execution.agent === "" && shard === undefined) {
      this.queueFireComplete(execution);
      return;
    }
    this.open.set(execution.id, execution);
    if (execution.agent === "" && shard !== undefined) {
      shard.queue.push(execution);
      this.queuedAt.set(execution.id, ++this.queueSeq);
      if (execution.notBefore !== undefined) this.timers.push(execution.notBefore, { kind: "retry", job: job.record.name, shard: shard.shard });
      return;
    }
    // It may still be running on an agent that has not reconnected yet, or have ended there with
    // the report not yet made: hold it on a stand-in for that agent, lost until it says hello.
    // The agent gets one lease to come back before its runs are taken for lost and run again,
    // even when its shards may move sooner (leases bounded by leadership): a live agent reports.
    let agent = this.agents.get(execution.agent);
    if (agent === undefined) {
      agent = this.addAgentEntry(execution.agent, { lost: true, leaseExpiry: Math.max(this.startupGraceUntil, this.leaseFromNow()) });
      this.armLeaseTimer(agent);
    }
    agent.executions.add(execution.id);
    shard?.running.add(execution.id);
  }

  /**
   * Rebuilds how far each fire of a job with spec.onFireComplete is from its completion run:
   * shards with an open execution are pending, the others ended as their latest attempt did.
   */
  private restoreFireProgress(open: readonly ExecutionRecord[], settled: readonly ExecutionRecord[]): void {
    for (const execution of open) {
      if (execution.shard === FIRE_COMPLETE_SHARD || execution.cause === "daemon") continue;
      if (this.jobs.get(execution.job)?.record.spec.onFireComplete === undefined || !this.open.has(execution.id)) continue;
      const key = fireKey(execution.job, execution.fireTime);
      let progress = this.fires.get(key);
      if (progress === undefined) {
        progress = { pending: new Set(), outcomes: new Map() };
        this.fires.set(key, progress);
      }
      progress.pending.add(execution.shard);
    }
    const byAttempt = [...settled].sort((a, b) => a.attempt - b.attempt);
    for (const execution of byAttempt) {
      const progress = this.fires.get(fireKey(execution.job, execution.fireTime));
      if (progress === undefined || execution.shard === FIRE_COMPLETE_SHARD || progress.pending.has(execution.shard)) continue;
      progress.outcomes.set(execution.shard, outcomeOf(execution));
    }
  }


  /** Registers an agent that has no stream yet; hello() fills in what it declares. */
  private addAgentEntry(id: string, state: { lost: boolean; leaseExpiry?: number }): AgentEntry {
    const agent: AgentEntry = {
      id,
      incarnation: ++this.incarnations,
      session: "",
      instance: "",
      address: "",
      refusedHellos: 0,
      connected: false,
      lost: state.lost,
      leaving: false,
      cordoned: false,
      labels: {},
      capacity: 1,
      handlers: new Set(),
      executors: new Set(),
      maxConcurrent: 0,
      version: "",
      leaseExpiry: state.leaseExpiry ?? 0,
      leaseTimerArmed: false,
      connectedAt: 0,
      shards: new Set(),
      executions: new Set(),
    };
    this.agents.set(id, agent);
    return agent;
  }

  private agentOf(session: string): AgentEntry {
    const id = this.sessions.get(session);
    const agent = id === undefined ? undefined : this.agents.get(id);
    if (agent === undefined) {
      throw new ShardlineError("failed-precondition", "this stream has no agent: the first message must be a hello");
    }
    return agent;
  }

  private requireJob(name: string): JobEntry {
    const job = this.jobs.get(name);
    if (job === undefined) throw notFound("job", name);
    return job;
  }

  private emit(
    type: string,
    message: string,
    about: { job?: string; shard?: number; agent?: string; executionId?: string; state?: ExecutionStateName } = {},
  ): void {
    this.outbox.emit({ time: this.now, type, message, ...about });
  }
}

/** The start of an instance id, enough to tell two processes apart in a message. */
function shortInstance(instance: string): string {
  return instance.length <= 12 ? instance : `${instance.slice(0, 8)}...`;
}

/** Identifies one fire of one job. */
function fireKey(job: string, fireTime: number): string {
  return `${job}\n${fireTime}`;
}

function outcomeOf(execution: ExecutionRecord): ShardOutcome {
  const outcome: ShardOutcome = { shard: execution.shard, state: execution.state, executionId: execution.id };
  if (execution.error) outcome.error = execution.error;
  return outcome;
}

/** The executor part of an execution's context, from the job's spec. */
function executorOf(spec: JobSpec): Pick<ExecutionContext, "script" | "http" | "kubernetes"> {
  if (spec.script !== undefined) {
    const { command, args, env, killGraceSeconds } = spec.script;
    return { script: { command, args, env, killGraceMs: killGraceSeconds * 1000 } };
  }
  if (spec.http !== undefined) {
    const { method, url, headers, body, connectTimeoutSeconds, readTimeoutSeconds } = spec.http;
    return { http: { method, url, headers, body, connectTimeoutMs: connectTimeoutSeconds * 1000, readTimeoutMs: readTimeoutSeconds * 1000 } };
  }
  if (spec.kubernetes !== undefined) return { kubernetes: kubernetesContext(spec.kubernetes) };
  return {};
}

/** Each spec's pod template is turned into JSON once, not per dispatched execution. */
const podTemplates = new WeakMap<KubernetesSpec, NonNullable<ExecutionContext["kubernetes"]>>();

function kubernetesContext(kubernetes: KubernetesSpec): NonNullable<ExecutionContext["kubernetes"]> {
  let context = podTemplates.get(kubernetes);
  if (context === undefined) {
    const { template, backoffLimit, ttlSecondsAfterFinished, logContainer } = kubernetes;
    // Specs stored before startTimeoutSeconds existed get its default.
    const startTimeoutSeconds = kubernetes.startTimeoutSeconds ?? DEFAULT_START_TIMEOUT_SECONDS;
    context = { podTemplateJson: JSON.stringify(template), backoffLimit, ttlSecondsAfterFinished, logContainer, startTimeoutSeconds };
    podTemplates.set(kubernetes, context);
  }
  return context;
}

/** Why a strategy's answer cannot be used, or undefined when every shard has an eligible agent. */
function invalidPlacement(result: unknown, input: ShardingInput): string | undefined {
  if (!(result instanceof Map)) return "the strategy did not return a Map of shard to agent id";
  if (input.agents.length === 0) return undefined;
  const ids = new Set(input.agents.map((a) => a.id));
  for (let shard = 0; shard < input.shardCount; shard++) {
    const agent: unknown = result.get(shard);
    if (typeof agent !== "string" || !ids.has(agent)) return `the strategy put shard ${shard} on ${JSON.stringify(agent)}, not an eligible agent`;
  }
  return undefined;
}

function notFound(kind: string, name: string): ShardlineError {
  return new ShardlineError("not-found", `${kind} ${JSON.stringify(name)} not found`, { field: kind, value: name });
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}
