import type { Attributes } from "@opentelemetry/api";
import type { BoundHistogram, HistogramSeries } from "../../shared/telemetry/bound-histogram.js";
import type { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import type { ControllerCore } from "../core/controller-core.js";
import type { CoreEvent } from "../core/messages.js";
import { MISFIRE_KINDS } from "../core/misfire.js";
import type { Effects } from "../core/outbox.js";
import { type ExecutionRecord, type ExecutionStateName, type JobRecord, type RolloutPhase, type StoreSnapshot, TERMINAL_STATES } from "../store/store.js";
import type { AgentSessions } from "./agent-sessions.js";

/** What the gauges read: the leading core and its sessions, while this controller leads. */
export interface MetricsSource {
  core(): ControllerCore | undefined;
  sessions(): AgentSessions | undefined;
}

/** One outcome of one job's executions: its label set, made once, and its count. */
interface OutcomeTally {
  readonly attributes: Attributes;
  count: number;
  readonly duration: HistogramSeries;
}

/** Executions of one revision of a job that ended in one state: its label set, made once, and its count. */
interface RevisionOutcome {
  readonly attributes: Attributes;
  count: number;
}

/** A job's rollout phases as the phase gauge names them; "none" for a job that never rolled out in steps. */
export const ROLLOUT_PHASES: readonly (RolloutPhase | "none")[] = ["none", "progressing", "paused", "completed", "aborted"];

/** How many revisions of a job shardline_revision_executions keeps series for: the newest ones. */
export const REVISIONS_COUNTED = 10;

/** How a job's rollout stands, for the gauges, with its label sets made once. */
interface RolloutGauge {
  /** The step under way, from 1, as `shardline rollout status` shows it; 0 with no rollout. */
  step: number;
  /** Undefined once the job is deleted: every phase then says 0. */
  phase: RolloutPhase | "none" | undefined;
  readonly attributes: Attributes;
  /** One label set per phase, ROLLOUT_PHASES' order. */
  readonly phases: readonly Attributes[];
}

/** What is counted per job, with the `{job}` label set made once. */
interface JobTally {
  readonly attributes: Attributes;
  /** The latest fire instant counted: fires of a job are made in increasing fire instants. */
  lastFire: number;
  fires: number;
  failovers: number;
  retries: number;
  /** By why they misfired (MisfireKind): the `{job, reason}` label set made once each. */
  readonly misfires: Map<string, { count: number; readonly attributes: Attributes }>;
  moved: number;
  readonly outcomes: Map<ExecutionStateName, OutcomeTally>;
  /** Finished executions by revision, then state: the newest REVISIONS_COUNTED revisions seen. */
  readonly revisions: Map<number, Map<ExecutionStateName, RevisionOutcome>>;
  readonly lag: HistogramSeries;
  /** The last owner seen for each shard, to tell a move from a first assignment. */
  readonly owners: (string | undefined)[];
}

/**
 * The controller's Prometheus metrics (docs/observability.md lists them), derived from one
 * source: each batch of the core's effects once it is durable (the execution records saved and
 * the events), plus gauges that read the current state when scraped.
 *
 * Counters are kept as plain numbers per job and reported through observable counters at scrape
 * time, so that counting an execution costs a map lookup and an increment; the two histograms
 * record into series bound once per job (and outcome).
 */
export class ControllerMetrics {
  private readonly jobs = new Map<string, JobTally>();
  /** Each job's rollout, as the jobs saved say; of every job seen since the process started. */
  private readonly rollouts = new Map<string, RolloutGauge>();
  /** The latest fire instant of each job in the snapshot a leadership began with, for tallies made later. */
  private readonly restoredFires = new Map<string, number>();
  private leaseExpiries = 0;
  private stallSeconds = 0;
  private leasesExtended = 0;
  /** Executions whose fire lag was recorded when they started, so it is not recorded again when they finish. */
  private readonly lagRecorded = new Set<string>();
  private readonly duration: BoundHistogram;
  private readonly lag: BoundHistogram;

  constructor(registry: MetricsRegistry, source: MetricsSource) {
    const meter = registry.meter;
    // Recorded per execution: series bound once per job and outcome (see BoundHistogram).
    this.duration = registry.histogram({
      name: "shardline_execution_duration_seconds",
      description: "How long executions ran, from the start to the end their agent reported, by job and outcome",
      unit: "s",
    });
    this.lag = registry.histogram({
      name: "shardline_fire_lag_seconds",
      description: "From a fire's instant to the start its agent reported, for first attempts of scheduled and triggered fires, by job",
      unit: "s",
    });

    const fires = meter.createObservableCounter("shardline_fires", { description: "Fires made (scheduled, triggered, caught up), by job" });
    const executions = meter.createObservableCounter("shardline_executions", {
      description: "Executions finished, by job and outcome (succeeded, failed, timed-out, cancelled, lost, misfired)",
    });
    const failovers = meter.createObservableCounter("shardline_failovers", { description: "Lost executions run again on another agent, by job" });
    const retries = meter.createObservableCounter("shardline_retries", { description: "Failed or timed-out executions retried, by job" });
    const misfires = meter.createObservableCounter("shardline_misfires", {
      description: "Executions of fires recorded as misfired, by job and reason (shard: it could not start on time; down: no controller ran; behind: the controller was a schedule period or more behind)",
    });
    const moved = meter.createObservableCounter("shardline_shards_moved", { description: "Shards assigned to an agent other than their previous owner, by job" });
    const leaseExpiries = meter.createObservableCounter("shardline_lease_expiries", { description: "Agent leases that expired (agents lost without a goodbye)" });
    const stalls = meter.createObservableCounter("shardline_controller_stall_seconds", {
      description: "Time the controller's event loop could not run (long garbage collection, a starved CPU), during which no agent lease lapses",
      unit: "s",
    });
    const extended = meter.createObservableCounter("shardline_leases_extended", { description: "Agent leases extended because the controller stalled" });
    const byRevision = meter.createObservableCounter("shardline_revision_executions", {
      description: "Executions finished, by job, the job revision they ran and outcome, for each job's newest revisions",
    });
    meter.addBatchObservableCallback(
      (result) => {
        for (const job of this.jobs.values()) {
          result.observe(fires, job.fires, job.attributes);
          result.observe(failovers, job.failovers, job.attributes);
          result.observe(retries, job.retries, job.attributes);
          for (const misfired of job.misfires.values()) result.observe(misfires, misfired.count, misfired.attributes);
          result.observe(moved, job.moved, job.attributes);
          for (const outcome of job.outcomes.values()) result.observe(executions, outcome.count, outcome.attributes);
          for (const outcomes of job.revisions.values()) for (const outcome of outcomes.values()) result.observe(byRevision, outcome.count, outcome.attributes);
        }
        result.observe(leaseExpiries, this.leaseExpiries);
        result.observe(stalls, this.stallSeconds);
        result.observe(extended, this.leasesExtended);
      },
      [fires, executions, failovers, retries, misfires, moved, leaseExpiries, stalls, extended, byRevision],
    );

    const connected = meter.createObservableGauge("shardline_agents_connected", { description: "Agents with an open stream to this controller" });
    const shards = meter.createObservableGauge("shardline_shards_assigned", { description: "Shards each agent owns (a lost agent's until its lease expires), by agent" });
    const queued = meter.createObservableGauge("shardline_send_queue_messages", { description: "Messages waiting in each agent's stream send queue, by agent" });
    const leader = meter.createObservableGauge("shardline_leader", { description: "1 while this controller leads, 0 while it follows" });
    const term = meter.createObservableGauge("shardline_term", { description: "The term this controller leads in; 0 while it follows" });
    const rolloutStep = meter.createObservableGauge("shardline_rollout_step", {
      description: "The step of each job's rollout under way, from 1 (the number of steps plus 1 once past the last); 0 for a job that never rolled out in steps, by job",
    });
    const rolloutPhase = meter.createObservableGauge("shardline_rollout_phase", {
      description: "1 for the phase each job's rollout is in (none, progressing, paused, completed, aborted), 0 for the others, by job and phase",
    });
    meter.addBatchObservableCallback(
      (result) => {
        const core = source.core();
        result.observe(leader, core === undefined ? 0 : 1);
        result.observe(term, core?.term ?? 0);
        let agents = 0;
        for (const load of core?.agentLoads() ?? []) {
          if (load.connected) agents++;
          result.observe(shards, load.shards, { agent: load.id });
        }
        result.observe(connected, agents);
        for (const queue of source.sessions()?.sendQueues() ?? []) result.observe(queued, queue.queued, { agent: queue.agent });
        // The exporter keeps every series it was given: a follower, and a deleted job, say 0.
        for (const rollout of this.rollouts.values()) {
          const phase = core === undefined ? undefined : rollout.phase;
          result.observe(rolloutStep, phase === undefined ? 0 : rollout.step, rollout.attributes);
          ROLLOUT_PHASES.forEach((name, index) => result.observe(rolloutPhase, name === phase ? 1 : 0, rollout.phases[index]));
        }
      },
      [connected, shards, queued, leader, term, rolloutStep, rolloutPhase],
    );
  }

  /**
   * Starts counting for a controller that begins to lead with `snapshot`: fires it restored are
   * not counted again when their executions change.
   */
  lead(snapshot: StoreSnapshot): void {
    this.lagRecorded.clear();
    for (const rollout of this.rollouts.values()) rollout.phase = undefined;
    for (const job of snapshot.jobs) this.observeJob(job);
    for (const [job, cursor] of snapshot.cursors) this.recordLastFire(job, cursor);
    for (const execution of snapshot.openExecutions) this.recordLastFire(execution.job, execution.fireTime);
  }

  /** Counts what one batch of the core's effects did; called once the batch is durable. */
  readonly observe = (effects: Effects): void => {
    for (const name of effects.persist.deletedJobs ?? []) {
      const rollout = this.rollouts.get(name);
      if (rollout !== undefined) rollout.phase = undefined;
    }
    for (const job of effects.persist.jobs ?? []) this.observeJob(job);
    for (const execution of effects.persist.executions ?? []) this.observeExecution(execution);
    for (const event of effects.events) this.observeEvent(event);
  };

  private observeExecution(execution: ExecutionRecord): void {
    const job = this.job(execution.job);
    // A new fire shows as the first record of a first attempt past the latest fire counted.
    if (execution.fireTime > job.lastFire && execution.attempt === 1 && FIRE_CAUSES.has(execution.cause)) {
      job.lastFire = execution.fireTime;
      job.fires++;
    }
    const state = execution.state;
    if (state === "running") {
      if (execution.startedAt !== undefined && lagged(execution)) {
        job.lag.record(Math.max(0, execution.startedAt - execution.fireTime) / 1000);
        this.lagRecorded.add(execution.id);
      }
      return;
    }
    if (!TERMINAL_STATES.has(state)) return;
    let outcome = job.outcomes.get(state);
    if (outcome === undefined) {
      const attributes = { shardline_job: execution.job, outcome: state };
      outcome = { attributes, count: 0, duration: this.duration.series(attributes) };
      job.outcomes.set(state, outcome);
    }
    outcome.count++;
    if (execution.revision !== undefined) this.countRevision(job, execution.job, execution.revision, state);
    const { startedAt, finishedAt } = execution;
    if (startedAt === undefined) return;
    // Reported straight as finished (it ran too briefly for a "running" report of its own).
    if (!this.lagRecorded.delete(execution.id) && lagged(execution)) {
      job.lag.record(Math.max(0, startedAt - execution.fireTime) / 1000);
    }
    if (finishedAt !== undefined) outcome.duration.record(Math.max(0, finishedAt - startedAt) / 1000);
  }

  /** A job saved: its rollout's step and phase, for the gauges. */
  private observeJob(record: JobRecord): void {
    let gauge = this.rollouts.get(record.name);
    if (gauge === undefined) {
      const attributes = { shardline_job: record.name };
      gauge = { step: 0, phase: "none", attributes, phases: ROLLOUT_PHASES.map((phase) => ({ ...attributes, phase })) };
      this.rollouts.set(record.name, gauge);
    }
    gauge.step = record.rollout === undefined ? 0 : record.rollout.step + 1;
    gauge.phase = record.rollout?.phase ?? "none";
  }

  private countRevision(job: JobTally, name: string, revision: number, state: ExecutionStateName): void {
    let outcomes = job.revisions.get(revision);
    if (outcomes === undefined) {
      // Series for the newest revisions only: a job applied every day must not grow them without bound.
      const oldest = Math.min(...job.revisions.keys());
      if (job.revisions.size >= REVISIONS_COUNTED && revision < oldest) return;
      if (job.revisions.size >= REVISIONS_COUNTED) job.revisions.delete(oldest);
      outcomes = new Map();
      job.revisions.set(revision, outcomes);
    }
    let outcome = outcomes.get(state);
    if (outcome === undefined) {
      outcome = { attributes: { shardline_job: name, revision: String(revision), outcome: state }, count: 0 };
      outcomes.set(state, outcome);
    }
    outcome.count++;
  }

  private observeEvent(event: CoreEvent): void {
    switch (event.type) {
      case "execution.failover":
        this.job(event.job!).failovers++;
        return;
      case "execution.retry":
        this.job(event.job!).retries++;
        return;
      case "execution.misfired": {
        const job = this.job(event.job!);
        job.misfires.get(event.misfire ?? "shard")!.count++;
        return;
      }
      case "agent.lease-expired":
        this.leaseExpiries++;
        return;
      case "controller.stalled":
        this.stallSeconds += (event.stall?.ms ?? 0) / 1000;
        this.leasesExtended += event.stall?.leasesExtended ?? 0;
        return;
      case "shard.assigned": {
        const job = this.job(event.job!);
        const previous = job.owners[event.shard!];
        if (previous !== undefined && previous !== event.agent) job.moved++;
        job.owners[event.shard!] = event.agent;
        return;
      }
      case "job.deleted":
        this.jobs.get(event.job!)?.owners.splice(0);
        return;
    }
  }

  private job(name: string): JobTally {
    let job = this.jobs.get(name);
    if (job === undefined) {
      const attributes = { shardline_job: name };
      job = {
        attributes,
        lastFire: this.restoredFires.get(name) ?? -Infinity,
        fires: 0,
        failovers: 0,
        retries: 0,
        // Every reason from 0, so that each series exists before its first misfire.
        misfires: new Map(MISFIRE_KINDS.map((reason) => [reason, { count: 0, attributes: { ...attributes, reason } }])),
        moved: 0,
        outcomes: new Map(),
        revisions: new Map(),
        lag: this.lag.series(attributes),
        owners: [],
      };
      this.jobs.set(name, job);
    }
    return job;
  }

  private recordLastFire(name: string, fireTime: number): void {
    if (fireTime > (this.restoredFires.get(name) ?? -Infinity)) this.restoredFires.set(name, fireTime);
    const job = this.jobs.get(name);
    if (job !== undefined && fireTime > job.lastFire) job.lastFire = fireTime;
  }
}

/** Causes of the first execution of a fire; the others run again (retry, failover), hook or hold a daemon shard. */
const FIRE_CAUSES = new Set(["schedule", "trigger", "misfire"]);

/**
 * True when the execution's start measures fire lag: the first attempt of a scheduled or
 * triggered fire. Retries and failover runs wait on purpose, catch-up runs start late by design.
 */
function lagged(execution: ExecutionRecord): boolean {
  return execution.attempt === 1 && (execution.cause === "schedule" || execution.cause === "trigger");
}
