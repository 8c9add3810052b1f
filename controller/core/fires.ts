/** Fires: the schedule, each fire's executions, the misfire policy, and catch-up after downtime. */
import { fireTimesBetween, nextFireAfter } from "../../shared/schedule.js";
import type { ExecutionCause, ExecutionRecord } from "./store-port.js";
import { executionId } from "./execution-id.js";
import { NO_TRACING, type TraceCarrier } from "./execution-tracing.js";
import { admitLateFire, type MisfireKind, planMissedFires } from "./misfire.js";
import type { ShardEntry, JobEntry } from "./model.js";
import { CoreState } from "./core-state.js";
import { fireKey } from "./fire-complete.js";
import * as Executions from "./executions.js";
import * as FireComplete from "./fire-complete.js";
import * as Waiting from "./waiting.js";
import * as Revisions from "./revisions.js";
import * as Rollouts from "./rollouts.js";

/**
 * A new execution record. `revision` is the job revision it runs: a fire's first attempt takes
 * the one its shard runs now (Rollouts.revisionFor), every later attempt its predecessor's.
 */
export function newExecution(core: CoreState, job: JobEntry, shard: number, fireTime: number, attempt: number, cause: ExecutionCause, parameter: string, revision: number): ExecutionRecord {
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
    revision,
  };
}

/**
 * Gives a new execution its trace context (tracing.contextFor), kept on the record so that it
 * is stored, dispatched, and found again by a run that replaces it after a restart. An empty
 * context is not kept: untraced records stay as they were.
 */
export function trace(core: CoreState, job: JobEntry, execution: ExecutionRecord, replaces?: TraceCarrier): void {
  if (core.tracing === NO_TRACING) return;
  const context = core.tracing.contextFor(
    {
      id: execution.id,
      job: execution.job,
      shard: execution.shard,
      shardCount: job.record.spec.shards,
      fireTime: execution.fireTime,
      attempt: execution.attempt,
      cause: execution.cause,
      ...(execution.revision === undefined ? {} : { revision: execution.revision }),
    },
    replaces,
  );
  if (Object.keys(context).length > 0) execution.traceContext = context;
}

/** Makes one fire of a job: one execution per chosen shard. */
export function fire(core: CoreState,  job: JobEntry, fireTime: number, cause: ExecutionCause, shards: readonly ShardEntry[] = job.shards, parameter?: string, ): string[] {
  job.lastIssuedFire = Math.max(job.lastIssuedFire, fireTime);
  if (cause === "schedule" || cause === "misfire") {
    job.cursor = Math.max(job.cursor ?? fireTime, fireTime);
    core.outbox.saveCursor(job.record.name, job.cursor);
  }
  const ids: string[] = [];
  const disabled = new Set(job.record.disabledShards);
  const firing = shards.filter((shard) => !disabled.has(shard.shard));
  // Registered before any shard is queued: one that misfires at once must not look like the last.
  if (job.record.spec.onFireComplete !== undefined && firing.length > 0) {
    core.fires.set(fireKey(job.record.name, fireTime), { pending: new Set(firing.map((s) => s.shard)), outcomes: new Map() });
  }
  for (const shard of firing) {
    const revision = Rollouts.revisionFor(core, job, shard);
    const execution = newExecution(core, job, shard.shard, fireTime, 1, cause, parameter ?? Revisions.specOf(job, revision).parameter, revision);
    trace(core, job, execution);
    ids.push(execution.id);
    enqueue(core, job, shard, execution);
  }
  if (firing.length > 0) Rollouts.countFire(core, job);
  return ids;
}

/**
 * A scheduled fire's timer, at `core.now`. A controller a whole schedule period or more behind
 * (a starved CPU, a long pause) does not make every instant it missed one after another, each
 * finding its shards still busy with the one before: the instants due by now are missed fires,
 * and the misfire policy picks which run, as after downtime. So a controller past its capacity
 * makes fewer fires rather than falling further behind, and keeps its agents' leases.
 */
export function scheduledFire(core: CoreState, job: JobEntry, fireTime: number): void {
  const spec = job.record.spec;
  // Timers fire dispatchAheadMs early: only one past its instant can be a period behind.
  const following = core.now > fireTime ? nextFireAfter(spec.schedule!, spec.timeZone, fireTime) : undefined;
  if (following !== undefined && following <= core.now) {
    core.fireBudget -= catchUp(core, job, fireTime - 1, "behind", "missed while the controller was behind its schedule (a starved CPU or a long pause)");
    scheduleNext(core, job, Math.max(core.now, job.cursor ?? core.now));
    return;
  }
  core.fireBudget -= Math.max(1, fire(core, job, fireTime, "schedule").length);
  scheduleNext(core, job, fireTime);
}

/** Starts an execution now if its shard can, else queues or misfires it per the job's spec. */
export function enqueue(core: CoreState, job: JobEntry, shard: ShardEntry, execution: ExecutionRecord): void {
  if (!Executions.canStartNow(core, job, shard)) {
    const waiting = shard.queue.filter((e) => e.cause === "schedule" || e.cause === "misfire").length;
    const admission = admitLateFire(job.record.spec, execution.cause, waiting);
    if (!admission.admit) {
      const wait = Waiting.shardWait(core, job, shard);
      misfire(core, execution, "shard", wait === undefined ? admission.reason : `${admission.reason}: ${wait}`);
      return;
    }
  }
  core.open.set(execution.id, execution);
  // A shard's fires wait in fire order: a failover re-run of an earlier fire takes its place
  // ahead of later fires that queued while its first attempt was running (or unknown).
  const later = shard.queue.findIndex((e) => e.fireTime > execution.fireTime);
  if (later === -1) shard.queue.push(execution);
  else shard.queue.splice(later, 0, execution);
  core.queuedAt.set(execution.id, ++core.queueSeq);
  core.outbox.saveExecution(execution);
  Executions.dispatchShard(core, shard);
}

/**
 * Records an execution as misfired. `kind` says why, for counting: its shard could not start it
 * on time (`shard`), no controller was running at its instant (`down`), or the controller was
 * behind its schedule (`behind`); `reason` says it in words.
 */
export function misfire(core: CoreState, execution: ExecutionRecord, kind: MisfireKind, reason: string): void {
  execution.state = "misfired";
  execution.error = reason;
  execution.finishedAt = core.now;
  core.outbox.saveExecution(execution);
  FireComplete.settleFire(core, execution);
  core.emit("execution.misfired", `${execution.id} misfired: ${reason}`, {
    job: execution.job,
    shard: execution.shard,
    executionId: execution.id,
    misfire: kind,
  });
}

/** Arms the job's next scheduled fire strictly after `after`, if it has a schedule and runs. */
export function scheduleNext(core: CoreState, job: JobEntry, after: number): void {
  job.fireToken++;
  job.nextFire = undefined;
  const spec = job.record.spec;
  if (spec.schedule === undefined || job.record.paused || spec.suspend) return;
  const next = nextFireAfter(spec.schedule, spec.timeZone, after);
  if (next === undefined) return;
  job.nextFire = next;
  core.timers.push(next - core.config.dispatchAheadMs, { kind: "fire", job: job.record.name, token: job.fireToken, fireTime: next });
}

/** Applies the misfire policy to the fires a job missed while no controller was running. */
export function catchUpMissedFires(core: CoreState, job: JobEntry): void {
  const spec = job.record.spec;
  if (spec.schedule !== undefined && job.cursor !== undefined && !job.record.paused && !spec.suspend) {
    catchUp(core, job, job.cursor, "down", "missed while no controller was running");
  }
  scheduleNext(core, job, Math.max(core.now, job.cursor ?? core.now));
}

/**
 * The fires of a job's schedule after `after` and due by now, missed: the misfire policy picks
 * those to run (cause `misfire`), and the rest are recorded as misfired, the latest
 * maxMissedFiresRecorded one by one and any older ones in a single event. Returns how many
 * executions it made, run or recorded.
 */
function catchUp(core: CoreState, job: JobEntry, after: number, kind: MisfireKind, why: string): number {
  const spec = job.record.spec;
  const limit = core.config.maxMissedFiresRecorded + spec.maxCatchUp;
  const missed = fireTimesBetween(spec.schedule!, spec.timeZone, after, core.now, limit);
  if (missed.length === 0) return 0;
  const plan = planMissedFires(spec, missed);
  const recorded = plan.misfire.slice(-core.config.maxMissedFiresRecorded);
  if (missed.length >= limit || recorded.length < plan.misfire.length) {
    core.emit("job.misfired", `job ${job.record.name} missed more fires than are recorded one by one (${why})`, {
      job: job.record.name,
      misfire: kind,
    });
  }
  let made = 0;
  for (const fireTime of recorded) {
    for (const shard of job.shards) {
      const revision = Rollouts.revisionFor(core, job, shard);
      misfire(core, newExecution(core, job, shard.shard, fireTime, 1, "schedule", Revisions.specOf(job, revision).parameter, revision), kind, `${why} (spec.misfire: ${spec.misfire})`);
      made++;
    }
  }
  const last = missed[missed.length - 1]!;
  if (plan.run.length === 0) {
    job.cursor = last;
    job.lastIssuedFire = Math.max(job.lastIssuedFire, last);
    core.outbox.saveCursor(job.record.name, last);
  }
  for (const fireTime of plan.run) made += fire(core, job, fireTime, "misfire").length;
  return made;
}
