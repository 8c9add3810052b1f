/** How a job's rollout stands, for `shardline rollout status`, `describe job` and metrics. */
import type { RolloutStep } from "../../shared/manifest/job-spec.js";
import { durationMs } from "../../shared/manifest/rollout-schema.js";
import type { CoreState } from "./core-state.js";
import { notFound } from "./core-state.js";
import type { JobEntry } from "./model.js";
import type { RevisionTally, RolloutPhase } from "./store-port.js";
import * as Revisions from "./revisions.js";
import * as Rollouts from "./rollouts.js";
import { whatRunsTake } from "./waiting-reasons.js";

export interface TallyView {
  runs: number;
  failures: number;
  /** The 95th percentile duration of those runs, ms; absent with none timed. */
  p95Ms?: number;
}

export interface RolloutView {
  job: string;
  /** "none" when the job never rolled a change out in steps (every shard runs `currentRevision`). */
  phase: RolloutPhase | "none";
  /** The job's latest revision. */
  currentRevision: number;
  stableRevision: number;
  targetRevision: number;
  /** Each step of the target revision's spec.rollout, described. */
  steps: string[];
  /** The step running now, from 1; steps.length + 1 once past the last. 0 with no rollout. */
  step: number;
  stepStartedAt: number;
  /** Which revision each shard's next fire runs, by revision, shards ascending. */
  shardsByRevision: { revision: number; shards: number[] }[];
  /** Runs since the last wave began, per revision. */
  since: number;
  target: TallyView;
  stable: TallyView;
  /** Why it was aborted or ended. */
  reason?: string;
  endedAt?: number;
  /** What it waits for now, or why it cannot go on ("wave 1 reaches no shard: ..."). */
  waiting?: string;
}

export function describeStep(step: RolloutStep): string {
  if ("wave" in step) return `wave: ${Rollouts.describeSelector(step.wave)}`;
  if ("weight" in step) return `weight: ${step.weight}% of the shards`;
  if ("pause" in step) {
    if (step.pause.duration !== undefined) return `pause: ${step.pause.duration}${typeof step.pause.duration === "number" ? " s" : ""}`;
    if (step.pause.fires !== undefined) return `pause: ${step.pause.fires} fires`;
    return "pause: until promoted";
  }
  const gate = step.analysis;
  const limits = [
    `at least ${gate.minExecutions} runs`,
    ...(gate.maxFailures === undefined ? [] : [`at most ${gate.maxFailures} failed`]),
    ...(gate.maxFailureRate === undefined ? [] : [`failure rate at most ${Number((gate.maxFailureRate * 100).toFixed(2))}%`]),
    ...(gate.noWorseThanStable === true ? ["no worse than stable"] : []),
    ...(gate.maxP95DurationSeconds === undefined ? [] : [`p95 at most ${gate.maxP95DurationSeconds} s`]),
  ];
  return `analysis: ${limits.join(", ")}`;
}

function tallyView(tally: RevisionTally): TallyView {
  const p95 = Rollouts.percentile95(tally.durationsMs);
  return { runs: tally.runs, failures: tally.failures, ...(p95 === undefined ? {} : { p95Ms: p95 }) };
}

export function rolloutView(core: CoreState, name: string): RolloutView {
  const job = core.jobs.get(name);
  if (job === undefined) throw notFound("job", name);
  const rollout = job.record.rollout;
  const byRevision = new Map<number, number[]>();
  for (const shard of job.shards) {
    const revision = Rollouts.revisionFor(core, job, shard);
    const shards = byRevision.get(revision);
    if (shards === undefined) byRevision.set(revision, [shard.shard]);
    else shards.push(shard.shard);
  }
  const shardsByRevision = [...byRevision].sort(([a], [b]) => a - b).map(([revision, shards]) => ({ revision, shards }));
  if (rollout === undefined) {
    const empty = { runs: 0, failures: 0 };
    return { job: name, phase: "none", currentRevision: job.record.revision, stableRevision: job.record.revision, targetRevision: job.record.revision, steps: [], step: 0, stepStartedAt: 0, shardsByRevision, since: 0, target: empty, stable: empty };
  }
  const steps = (Revisions.specOf(job, rollout.targetRevision).rollout?.steps ?? []).map(describeStep);
  const waiting = Rollouts.inProgress(rollout) ? waitingFor(core, job, shardsByRevision) : undefined;
  return {
    job: name,
    phase: rollout.phase,
    currentRevision: job.record.revision,
    stableRevision: rollout.stableRevision,
    targetRevision: rollout.targetRevision,
    steps,
    step: rollout.step + 1,
    stepStartedAt: rollout.stepStartedAt,
    shardsByRevision,
    since: rollout.since,
    target: tallyView(rollout.target),
    stable: tallyView(rollout.stable),
    ...(rollout.reason === undefined ? {} : { reason: rollout.reason }),
    ...(rollout.endedAt === undefined ? {} : { endedAt: rollout.endedAt }),
    ...(waiting === undefined ? {} : { waiting }),
  };
}

/** What the current step waits for, and whether it can get it. */
function waitingFor(core: CoreState, job: JobEntry, shardsByRevision: { revision: number; shards: number[] }[]): string | undefined {
  const rollout = job.record.rollout!;
  const step = Revisions.specOf(job, rollout.targetRevision).rollout?.steps[rollout.step];
  if (step === undefined) return undefined;
  const onTarget = shardsByRevision.find((entry) => entry.revision === rollout.targetRevision)?.shards.length ?? 0;
  const runs = whatRunsTake(Revisions.specOf(job, rollout.targetRevision).runs);
  const stuck = onTarget === 0 ? `; no shard runs revision ${rollout.targetRevision} now: no shard's owner is in a wave reached so far and ${runs}` : "";
  if ("pause" in step) {
    if (step.pause.duration !== undefined) return `paused until ${new Date(rollout.stepStartedAt + durationMs(step.pause.duration)!).toISOString()}${stuck}`;
    if (step.pause.fires !== undefined) return `paused for ${step.pause.fires} fires (${rollout.stepFires} so far)${stuck}`;
    return `paused until promoted (shardline rollout promote)${stuck}`;
  }
  if ("analysis" in step) {
    return `analysis waits for ${step.analysis.minExecutions} finished runs of revision ${rollout.targetRevision} since ${new Date(rollout.since).toISOString()} (${rollout.target.runs} so far)${stuck}`;
  }
  return undefined;
}
