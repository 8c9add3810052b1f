/** Job admin: apply, delete, pause, resume, trigger, resize, and a shard disabled or enabled. */
import { ShardlineError } from "../../shared/errors.js";
import { specEquals } from "../../shared/manifest/index.js";
import { type JobSpec } from "../../shared/manifest/job-spec.js";
import type { JobRecord } from "./store-port.js";
import type { ShardEntry, JobEntry } from "./model.js";
import { CoreState } from "./core-state.js";
import * as Fires from "./fires.js";
import * as Executions from "./executions.js";
import * as FireComplete from "./fire-complete.js";
import * as DaemonRuns from "./daemon-runs.js";
import * as Placement from "./placement.js";
import * as Clock from "./clock.js";
import * as Revisions from "./revisions.js";
import * as Rollouts from "./rollouts.js";

/** Who applied a change, and how: for the revision's record and the rollout. */
export interface ApplyOptions {
  /** The token's name; "" when the controller checks no tokens. */
  appliedBy?: string;
  /** `rollout undo`: the revision whose manifest this is. It applies at once, without the steps. */
  undoOf?: number;
}

/** Creates or updates a job; `changed` is false when the spec equals the stored one. */
export function applyJob(core: CoreState, name: string, spec: JobSpec, manifest: string, now: number, options: ApplyOptions = {}): { record: JobRecord; changed: boolean } {
  Clock.advance(core, now);
  const existing = core.jobs.get(name);
  if (existing !== undefined && specEquals(existing.record.spec, spec)) {
    return { record: existing.record, changed: false };
  }
  // A job applied again under a deleted one's name starts again at revision 1, unless the
  // delete is in the same store batch: its revisions are still stored, and numbers go on.
  const first = existing === undefined && core.outbox.deletes(name) ? (core.deletedRevisions.get(name) ?? 0) : 0;
  const record: JobRecord = {
    name,
    manifest,
    spec,
    paused: existing?.record.paused ?? false,
    revision: (existing?.record.revision ?? first) + 1,
    disabledShards: (existing?.record.disabledShards ?? []).filter((s) => s < spec.shards),
    ...(existing?.record.rollout === undefined ? {} : { rollout: existing.record.rollout }),
  };
  const revision = Revisions.newRevision(name, record.revision, spec, manifest, core.now, options.appliedBy ?? "", options.undoOf);
  if (existing === undefined) {
    core.outbox.saveJob(record);
    const job = addJobEntry(core, record);
    Revisions.add(core, job, revision);
    // Applied again under a deleted job's name: it fires after that job's last fire, never
    // making an execution id that job had; missed fires are not made up.
    const deletedLast = core.deletedCursors.get(name);
    core.deletedCursors.delete(name);
    if (deletedLast !== undefined) job.lastIssuedFire = deletedLast;
    Fires.scheduleNext(core, job, Math.max(core.now, deletedLast ?? core.now));
    core.emit("job.created", `job ${name} created with ${spec.shards} shards`, { job: name });
  } else {
    const previous = existing.record;
    const before = previous.spec;
    existing.record = record;
    Revisions.add(core, existing, revision);
    Rollouts.onApply(core, existing, previous, options.undoOf !== undefined);
    core.outbox.saveJob(existing.record);
    Revisions.forgetUnused(core, existing);
    if (spec.onFireComplete === undefined) FireComplete.stopFireCompletes(core, name, "the job no longer has spec.onFireComplete");
    resizeShards(core, existing, spec.shards);
    if (before.schedule !== spec.schedule || before.timeZone !== spec.timeZone || before.suspend !== spec.suspend) {
      Fires.scheduleNext(core, existing, Math.max(core.now, existing.cursor ?? core.now));
    }
    core.emit("job.updated", `job ${name} updated to revision ${record.revision}${options.undoOf === undefined ? "" : ` (undo to revision ${options.undoOf})`}${options.appliedBy ? ` by ${options.appliedBy}` : ""}`, { job: name });
  }
  Placement.reconcileSoon(core);
  return { record: core.jobs.get(name)!.record, changed: true };
}

/**
 * Deletes a job. Its waiting executions are cancelled here; running ones are asked to stop on
 * their agents and are recorded as their agents report them.
 */
export function deleteJob(core: CoreState, name: string, now: number): void {
  Clock.advance(core, now);
  const job = core.requireJob(name);
  // First: cancelling the shards' runs below must not count as their fires completing.
  FireComplete.stopFireCompletes(core, name, "job deleted");
  // Shards whose owner still holds them stay fenced for it, as a smaller shard count leaves
  // them, so that the job applied again under this name cannot give them to a second agent.
  const retired = core.deletedJobShards.get(name) ?? new Map<number, ShardEntry>();
  for (const shard of [...job.shards, ...job.retired.values()]) removeShard(core, shard, "job deleted", retired);
  if (retired.size > 0) core.deletedJobShards.set(name, retired);
  core.jobs.delete(name);
  core.deletedCursors.set(name, job.lastIssuedFire);
  core.deletedRevisions.set(name, job.record.revision);
  core.outbox.deleteJob(name);
  core.emit("job.deleted", `job ${name} deleted`, { job: name });
  Placement.reconcileSoon(core);
}

/** Fires a job now; returns the fire instant and the executions created. */
export function triggerJob(core: CoreState,  name: string, shards: readonly number[], parameter: string | undefined, now: number, ): { fireTime: number; executionIds: string[] } {
  Clock.advance(core, now);
  const job = core.requireJob(name);
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
  const fireTime = Math.max(core.now, job.lastIssuedFire + 1);
  const chosen = shards.length === 0 ? job.shards : [...new Set(shards)].map((s) => job.shards[s]!);
  const ids = Fires.fire(core, job, fireTime, "trigger", chosen, parameter);
  return { fireTime, executionIds: ids };
}

export function pauseJob(core: CoreState, name: string, now: number): void {
  Clock.advance(core, now);
  const job = core.requireJob(name);
  if (job.record.paused) return;
  job.record = { ...job.record, paused: true };
  core.outbox.saveJob(job.record);
  Fires.scheduleNext(core, job, core.now);
  for (const shard of job.shards) DaemonRuns.stopDaemonRun(core, job, shard, "the job was paused");
  core.emit("job.paused", `job ${name} paused`, { job: name });
}

export function resumeJob(core: CoreState, name: string, now: number): void {
  Clock.advance(core, now);
  const job = core.requireJob(name);
  if (!job.record.paused) return;
  job.record = { ...job.record, paused: false };
  core.outbox.saveJob(job.record);
  // Fires missed while paused are not made: the schedule restarts from now.
  Fires.scheduleNext(core, job, core.now);
  for (const shard of job.shards) Executions.dispatchShard(core, shard);
  core.emit("job.resumed", `job ${name} resumed`, { job: name });
}

/** Stops firing one shard of a job; its assignment and running executions stay. */
export function disableShard(core: CoreState, name: string, shard: number, now: number): void {
  setShardDisabled(core, name, shard, true, now);
}

export function enableShard(core: CoreState, name: string, shard: number, now: number): void {
  setShardDisabled(core, name, shard, false, now);
}

export function setShardDisabled(core: CoreState, name: string, shard: number, disabled: boolean, now: number): void {
  Clock.advance(core, now);
  const job = core.requireJob(name);
  if (!Number.isInteger(shard) || shard < 0 || shard >= job.shards.length) {
    throw ShardlineError.invalid("shard", shard, `a shard number from 0 to ${job.shards.length - 1}`);
  }
  const set = new Set(job.record.disabledShards);
  if (set.has(shard) === disabled) return;
  if (disabled) set.add(shard);
  else set.delete(shard);
  job.record = { ...job.record, disabledShards: [...set].sort((a, b) => a - b) };
  core.outbox.saveJob(job.record);
  const entry = job.shards[shard]!;
  if (disabled) DaemonRuns.stopDaemonRun(core, job, entry, "the shard was disabled");
  else Executions.dispatchShard(core, entry);
  core.emit(disabled ? "shard.disabled" : "shard.enabled", `${name}/${shard} ${disabled ? "disabled" : "enabled"}`, { job: name, shard });
}

export function addJobEntry(core: CoreState, record: JobRecord): JobEntry {
  // A job applied again under the name of a deleted one takes back its still-held shards.
  const retired = core.deletedJobShards.get(record.name) ?? new Map<number, ShardEntry>();
  core.deletedJobShards.delete(record.name);
  const job: JobEntry = { record, shards: [], fireToken: 0, lastIssuedFire: 0, retired, revisions: new Map() };
  core.jobs.set(record.name, job);
  resizeShards(core, job, record.spec.shards);
  return job;
}

export function resizeShards(core: CoreState, job: JobEntry, count: number): void {
  while (job.shards.length > count) removeShard(core, job.shards.pop()!, "the job's shard count was reduced", job);
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
export function removeShard(core: CoreState, shard: ShardEntry, reason: string, retireIn?: { retired: Map<number, ShardEntry> } | Map<number, ShardEntry>): void {
  for (const execution of shard.queue) Executions.closeExecution(core, execution, "cancelled", { error: reason });
  shard.queue = [];
  const owner = shard.owner === undefined ? undefined : core.agents.get(shard.owner);
  // A replaced process's shard is not with the process on the stream: nothing to tell it.
  if (owner !== undefined && owner.connected && owner.inherited?.shards.has(shard) !== true) {
    if (shard.running.size > 0) {
      core.outbox.send(owner.session, { kind: "cancel", executionIds: [...shard.running], reason });
    }
    core.outbox.send(owner.session, { kind: "assignments", snapshot: false, add: [], revoke: [core.refOf(shard)] });
  }
  if (owner !== undefined && retireIn !== undefined) {
    shard.revoking = true;
    shard.retired = true;
    (retireIn instanceof Map ? retireIn : retireIn.retired).set(shard.shard, shard);
    return;
  }
  Placement.unassign(core, shard);
}
