import type { StoreSnapshot } from "./store-port.js";
import type { CoreConfig } from "./config.js";
import { type ExecutionTracing, NO_TRACING } from "./execution-tracing.js";
import type { AgentHello, AssignmentRef, ExecutionUpdate } from "./messages.js";
import type { Effects } from "./outbox.js";
import { CoreState } from "./core-state.js";
import type { AgentView, AssignmentView, JobView, UnassignedShardView } from "./model.js";
import type { JobSpec } from "../../shared/manifest/job-spec.js";
import type { ExecutionRecord, ExecutionStateName, JobRecord } from "./store-port.js";
import * as Agents from "./agents.js";
import * as JobAdmin from "./job-admin.js";
import * as Executions from "./executions.js";
import * as Placement from "./placement.js";
import * as Recovery from "./recovery.js";
import * as Views from "./views.js";
import * as Waiting from "./waiting.js";
import * as Clock from "./clock.js";
import { applyInput, type CoreInput, type CoreOutput } from "./events.js";
import type { ApplyOptions } from "./job-admin.js";
import { rolloutView, type RolloutView } from "./rollout-view.js";
import * as Rollouts from "./rollouts.js";

export type { ApplyOptions } from "./job-admin.js";
export type { RolloutView } from "./rollout-view.js";

export type { AgentStateName, AgentView, AssignmentView, JobView, UnassignedShardView } from "./model.js";

/**
 * The controller's decisions, with no I/O: events and the current time in, state and effects out
 * (docs/architecture.md, "The controller core"). Every step first runs the timers due at `now`,
 * then applies its event; the shell calls `take()` to collect what to persist, send, close and
 * publish, and `nextDeadline()` to arm one timer. This class is the facade: the rules live in the
 * concept modules beside it (agents, job-admin, fires, executions, fire-complete, daemon-runs,
 * placement, recovery, views, waiting, clock), over one CoreState.
 */
export class ControllerCore {
  private readonly s: CoreState;

  constructor(config: CoreConfig, snapshot: StoreSnapshot, now: number, tracing: ExecutionTracing = NO_TRACING) {
    // Agents of a previous controller may hold valid leases for up to one lease TTL (it renewed
    // none after this one started: it was dead): until then no shard is given to anyone who does
    // not claim it. An agent not back by then has fenced itself and claims nothing when it
    // returns, so waiting longer would only delay the fires. When the store knows sooner (etcd:
    // the predecessor's leases ended with its leadership, or within what it recorded when it
    // handed over), only that and the margin for clock rates are left. The first term had no
    // predecessor.
    const predecessorLeases = snapshot.predecessorLeasesEndWithinMs ?? config.leaseTtlMs;
    const startupGraceUntil = snapshot.term <= 1 ? now : now + predecessorLeases + config.leaseMarginMs;
    this.s = new CoreState(config, tracing, snapshot.term, now, startupGraceUntil);
    Recovery.restore(this.s, snapshot);
  }

  /**
   * Applies one input (docs/architecture.md, "The event union"): the one entry point a replay log,
   * the simulator or a hostile-input test can drive. Each kind is the method of the same name.
   */
  step<I extends CoreInput>(input: I, now: number): CoreOutput<I> {
    return applyInput(this, input, now) as CoreOutput<I>;
  }

  /** The controller term this core leads in. */
  get term(): number {
    return this.s.term;
  }

  /** The earliest instant at which `tick` has work to do. */
  nextDeadline(): number | undefined {
    // Fires held back for the next batch are due now, unless the shell holds every fire.
    return this.s.heldFires.length > 0 && this.s.fireBudget > 0 ? this.s.now : this.s.timers.peek();
  }

  /** Ends a hold of take({ holdFires: true }): the fires due meanwhile are made at the next tick. */
  releaseFires(): void {
    this.s.fireBudget = this.s.config.maxFireExecutionsPerBatch;
  }

  /**
   * Collects what the steps since the last call decided, placing shards first if any of them
   * asked to: placement is computed once per batch of steps, not once per step, since it costs
   * O(jobs x agents) and a fleet connecting or leaving brings many steps in one turn.
   *
   * The next batch may make up to config.maxFireExecutionsPerBatch executions of scheduled
   * fires; with `holdFires` (the shell's store is behind), none until releaseFires(): fires due
   * meanwhile wait, and one made a whole period late is a missed fire (Fires.scheduledFire).
   */
  take(options: { holdFires?: boolean } = {}): Effects {
    this.s.fireBudget = options.holdFires === true ? 0 : this.s.config.maxFireExecutionsPerBatch;
    if (this.s.reconcilePending) {
      this.s.reconcilePending = false;
      Placement.reconcileAll(this.s);
    }
    return this.s.outbox.take();
  }

  /** Timers queued in the core (fires, leases), for diagnostics and metrics. */
  get pendingTimers(): number {
    return this.s.timers.size;
  }

  get hasEffects(): boolean {
    return this.s.reconcilePending || !this.s.outbox.empty;
  }

  listAgents(): AgentView[] {
    return Views.listAgents(this.s);
  }

  /**
   * Each agent the core knows (a lost one until its lease expires) with whether it has a stream
   * and how many shards it owns: for metrics, without listAgents' copies and sorting.
   */
  agentLoads(): { id: string; connected: boolean; shards: number }[] {
    return Views.agentLoads(this.s);
  }

  listAssignments(job?: string): AssignmentView[] {
    return Views.listAssignments(this.s, job);
  }

  /** How many jobs there are, and whether one is named `name`: cheap, unlike listJobs. */
  jobCount(name?: string): { total: number; exists: boolean } {
    return Views.jobCount(this.s, name);
  }

  /** A job's record as it is now (spec, revision, rollout), or undefined: cheap, for every event, unlike getJob's view. */
  jobRecord(name: string): JobRecord | undefined {
    return this.s.jobs.get(name)?.record;
  }

  getJob(name: string): JobView {
    return Views.getJob(this.s, name);
  }

  /** What applying `spec` to job `name` would do, changing nothing (see Views.previewApply). */
  previewApply(name: string, spec: JobSpec, manifest: string): { view: JobView; changed: boolean; warnings: string[] } {
    return Views.previewApply(this.s, name, spec, manifest);
  }

  /** The enabled shards of `job` (every job when absent or "") that no agent owns, each with why. */
  listUnassigned(job?: string): UnassignedShardView[] {
    return Views.listUnassigned(this.s, job);
  }

  /**
   * What an apply should warn of: the job was stored, but no connected agent can run it now, and
   * which requirement none meets. Empty when some agent can.
   */
  applyWarnings(name: string): string[] {
    return Views.applyWarnings(this.s, name);
  }

  /**
   * Why a pending execution is not running yet, for operators; undefined when it is not waiting
   * in a queue (dispatched, and only waiting for its fire instant on its agent, or finished).
   */
  waitingReason(id: string): string | undefined {
    return Waiting.waitingReason(this.s, id);
  }

  listJobs(): JobView[] {
    return Views.listJobs(this.s);
  }

  /**
   * The place in line of every waiting execution (1 is next): highest job priority first, then
   * first in, first out.
   */
  queuePositions(): Map<string, number> {
    return Views.queuePositions(this.s);
  }

  /** The agent a stream speaks for, once the core accepted its Hello; undefined otherwise. */
  agentOfSession(session: string): string | undefined {
    return Views.agentOfSession(this.s, session);
  }

  /** How many executions of `job` are not finished yet (pending, running or unknown). */
  openExecutionsOf(job: string): number {
    let count = 0;
    for (const execution of this.s.open.values()) if (execution.job === job) count++;
    return count;
  }

  /** An execution not yet finished, if the core holds it. */
  openExecution(id: string): ExecutionRecord | undefined {
    return Views.openExecution(this.s, id);
  }

  /** Runs every timer due at or before `now`. */
  tick(now: number): void {
    Clock.tick(this.s, now);
  }

  /**
   * A new stream said Hello. Refuses a malformed one with a ShardlineError (the shell ends the
   * stream with it), and ends the stream of a second process claiming an id another process holds
   * (see refuseSecondProcess); otherwise welcomes the agent, takes back what it still holds, and
   * sends it its whole set of shards. `peer` is where the stream comes from, for operators.
   */
  hello(session: string, hello: AgentHello, now: number, peer = ""): void {
    Agents.hello(this.s, session, hello, now, peer);
  }

  /**
   * The controller could not run for `stalledMs` just before `now`: no lease lapses for that
   * time (see agents.ts, noteStall).
   */
  noteStall(stalledMs: number, now: number): void {
    Agents.noteStall(this.s, stalledMs, now);
  }

  heartbeat(session: string, seq: number, now: number): void {
    Agents.heartbeat(this.s, session, seq, now);
  }

  /**
   * Bounds the leases granted from now on: none lasts past `until` (Unix ms), this controller's
   * own leadership lease when several replicas share an etcd store; undefined lifts the bound.
   * A new leader is elected only after that lease ended, so it finds no agent lease of this
   * controller still valid.
   */
  limitLeases(until: number | undefined, now: number): void {
    Agents.limitLeases(this.s, until, now);
  }

  /**
   * How long, from now, until every agent lease this controller granted has ended in its view
   * (lease plus margin), and every lease of its predecessors too (its startup grace): what a
   * leader stepping down records for the next one.
   */
  leasesEndWithin(now: number): number {
    return Agents.leasesEndWithin(this.s, now);
  }

  executionUpdates(session: string, reports: readonly ExecutionUpdate[], now: number): void {
    Executions.executionUpdates(this.s, session, reports, now);
  }

  /** The agent stopped running these shards after a revoke. */
  release(session: string, released: readonly AssignmentRef[], now: number): void {
    Agents.release(this.s, session, released, now);
  }

  /** The agent is leaving on purpose: move its shards away now. */
  goodbye(session: string, reason: string, now: number): void {
    Agents.goodbye(this.s, session, reason, now);
  }

  /** The stream ended, for whatever reason. Unknown sessions are ignored. */
  streamClosed(session: string, now: number): void {
    Agents.streamClosed(this.s, session, now);
  }

  /**
   * Creates or updates a job; `changed` is false when the spec equals the stored one. A change
   * is the job's next revision; a change of what its runs execute rolls out by its spec.rollout
   * (docs/rollouts.md), or at once with options.undoOf.
   */
  applyJob(name: string, spec: JobSpec, manifest: string, now: number, options: ApplyOptions = {}): { record: JobRecord; changed: boolean } {
    return JobAdmin.applyJob(this.s, name, spec, manifest, now, options);
  }

  /** How the job's rollout stands. */
  rollout(name: string): RolloutView {
    return rolloutView(this.s, name);
  }

  /** Ends the rollout's current pause or analysis (every remaining step with `full`). `by`: who asked. */
  promoteRollout(name: string, full: boolean, by: string, now: number): void {
    Clock.advance(this.s, now);
    Rollouts.promote(this.s, name, full, by);
  }

  /** Aborts the rollout: every shard runs the stable revision from its next fire. */
  abortRollout(name: string, by: string, now: number): void {
    Clock.advance(this.s, now);
    Rollouts.abortByHand(this.s, name, by);
  }

  /** Starts an aborted rollout again from its first step. */
  retryRollout(name: string, by: string, now: number): void {
    Clock.advance(this.s, now);
    Rollouts.retry(this.s, name, by);
  }

  /**
   * Deletes a job. Its waiting executions are cancelled here; running ones are asked to stop on
   * their agents and are recorded as their agents report them.
   */
  deleteJob(name: string, now: number): void {
    JobAdmin.deleteJob(this.s, name, now);
  }

  /** Fires a job now; returns the fire instant and the executions created. */
  triggerJob(name: string, shards: readonly number[], parameter: string | undefined, now: number): { fireTime: number; executionIds: string[] } {
    return JobAdmin.triggerJob(this.s, name, shards, parameter, now);
  }

  pauseJob(name: string, now: number): void {
    JobAdmin.pauseJob(this.s, name, now);
  }

  resumeJob(name: string, now: number): void {
    JobAdmin.resumeJob(this.s, name, now);
  }

  /**
   * Cancels an open execution: a waiting one at once, a dispatched one by asking its agent to
   * abort it (it is recorded when the agent confirms, and never re-run by failover). Returns
   * the execution's state after the request.
   */
  cancelExecution(id: string, reason: string, now: number): ExecutionStateName {
    return Executions.cancelExecution(this.s, id, reason, now);
  }

  /** Stops firing one shard of a job; its assignment and running executions stay. */
  disableShard(name: string, shard: number, now: number): void {
    JobAdmin.disableShard(this.s, name, shard, now);
  }

  enableShard(name: string, shard: number, now: number): void {
    JobAdmin.enableShard(this.s, name, shard, now);
  }

  drainAgent(id: string, now: number): void {
    Agents.drainAgent(this.s, id, now);
  }

  uncordonAgent(id: string, now: number): void {
    Agents.uncordonAgent(this.s, id, now);
  }
}
