/**
 * Revisions: every apply that changes a job's spec is its next revision, and every fire of a
 * shard runs one revision, fixed when the fire makes its first attempt (its retries and failover
 * runs keep it: a run is pinned to the revision it started with). What a revision changes splits
 * in two (docs/rollouts.md): what a run executes (the payload: what it runs, its parameters, its
 * timeout, retries and grace) follows the shard's revision; how the job is scheduled and placed
 * follows the latest revision at once.
 */
import { canonicalJson, specHash } from "../../shared/manifest/index.js";
import type { JobSpec } from "../../shared/manifest/job-spec.js";
import type { CoreState } from "./core-state.js";
import type { JobEntry } from "./model.js";
import type { RevisionRecord } from "./store-port.js";

/** What a run of a spec executes: the fields a rollout moves shard by shard. */
function payloadOf(spec: JobSpec): unknown {
  return {
    runs: spec.runs,
    parameter: spec.parameter,
    shardParameters: spec.shardParameters,
    timeoutSeconds: spec.timeoutSeconds,
    retries: spec.retries,
    disconnectGraceSeconds: spec.disconnectGraceSeconds ?? null,
  };
}

/** True when runs of the two specs execute the same thing: a change between them needs no rollout. */
export function samePayload(a: JobSpec, b: JobSpec): boolean {
  return a === b || canonicalJson(payloadOf(a)) === canonicalJson(payloadOf(b));
}

/** The record of a new revision of `job`, as applyJob makes it. */
export function newRevision(job: string, revision: number, spec: JobSpec, manifest: string, now: number, appliedBy: string, undoOf?: number): RevisionRecord {
  return { job, revision, manifest, spec, hash: specHash(spec), appliedAt: now, appliedBy, ...(undoOf === undefined ? {} : { undoOf }) };
}

/** Makes `record` the job's newest revision: stored, and kept in memory while something runs it. */
export function add(core: CoreState, job: JobEntry, record: RevisionRecord): void {
  job.revisions.set(record.revision, record);
  core.outbox.saveRevision(record);
}

/**
 * The spec a run of `revision` executes. A revision the core no longer holds (a record from
 * before revisions were kept names none) runs the job's latest spec.
 */
export function specOf(job: JobEntry, revision: number | undefined): JobSpec {
  if (revision === undefined || revision === job.record.revision) return job.record.spec;
  return job.revisions.get(revision)?.spec ?? job.record.spec;
}

/**
 * Forgets the revisions nothing needs any more: not the latest, not the rollout's stable one,
 * and no open execution's. The store keeps them for history; the core only needs what runs.
 */
export function forgetUnused(core: CoreState, job: JobEntry): void {
  if (job.revisions.size <= 1) return;
  const needed = new Set([job.record.revision]);
  if (job.record.rollout !== undefined) needed.add(job.record.rollout.stableRevision).add(job.record.rollout.targetRevision);
  if ([...job.revisions.keys()].every((revision) => needed.has(revision))) return;
  for (const execution of core.open.values()) {
    if (execution.job === job.record.name && execution.revision !== undefined) needed.add(execution.revision);
  }
  for (const revision of [...job.revisions.keys()]) if (!needed.has(revision)) job.revisions.delete(revision);
}
