/**
 * Rollouts (docs/rollouts.md): a change of what a job runs goes from its stable revision to the
 * new one in the steps of the new revision's spec.rollout. Waves (by selector or by weight) add
 * shards to the new revision from their next fire; pauses wait; analysis steps judge the new
 * revision's own runs since the last wave began and abort the rollout when it does worse than
 * its limits. An abort puts every shard back on the stable revision from its next fire.
 *
 * The state is the job record's `rollout`, replaced (never changed in place) and saved with the
 * job on every change, so a restarted controller or a new leader resumes the same step.
 */
import { createHash } from "node:crypto";
import { ShardlineError } from "../../shared/errors.js";
import type { AnalysisGate, JobSpec, RolloutStep, WaveSelector } from "../../shared/manifest/job-spec.js";
import { durationMs } from "../../shared/manifest/rollout-schema.js";
import type { ExecutionRecord, RevisionTally, RolloutState, WaveSelectorState } from "./store-port.js";
import { FIRE_COMPLETE_SHARD } from "./store-port.js";
import type { AgentEntry, JobEntry, ShardEntry } from "./model.js";
import type { CoreState } from "./core-state.js";
import * as Placement from "./placement.js";
import * as Revisions from "./revisions.js";

/** The durations an analysis step keeps per revision, the newest, for its p95. */
export const TALLY_DURATIONS = 512;

function emptyTally(): RevisionTally {
  return { runs: 0, failures: 0, durationsMs: [] };
}

/** True while shards may run two revisions: the rollout has started and neither completed nor aborted. */
export function inProgress(rollout: RolloutState | undefined): boolean {
  return rollout !== undefined && (rollout.phase === "progressing" || rollout.phase === "paused");
}

/** The steps of the revision going out. */
function stepsOf(job: JobEntry, rollout: RolloutState): RolloutStep[] {
  return Revisions.specOf(job, rollout.targetRevision).rollout?.steps ?? [];
}

/**
 * After an apply made `job.record` a new revision: decides what its shards run. A change of
 * what runs execute starts a rollout when the new spec has one (and the apply is not an undo);
 * a change of anything else, or a spec without spec.rollout, applies at once.
 */
export function onApply(core: CoreState, job: JobEntry, previous: JobEntry["record"] | undefined, immediate: boolean): void {
  if (previous === undefined) return;
  const before = previous.rollout;
  const spec = job.record.spec;
  const revision = job.record.revision;
  const stable = before !== undefined && (inProgress(before) || before.phase === "aborted") ? before.stableRevision : previous.revision;
  if (Revisions.samePayload(spec, Revisions.specOf(job, stable))) {
    // Nothing new to run (a change of schedule or placement, or the stable spec applied again).
    if (before !== undefined && (inProgress(before) || before.phase === "aborted")) end(core, job, `revision ${revision} runs what stable revision ${stable} runs`);
    else if (before !== undefined) setRollout(job, { ...before, stableRevision: revision, targetRevision: revision });
    return;
  }
  if (before !== undefined && inProgress(before) && Revisions.samePayload(spec, Revisions.specOf(job, before.targetRevision))) {
    // The same change as the one going out, with other fields changed: it goes on.
    setRollout(job, { ...before, targetRevision: revision });
    return;
  }
  if (spec.rollout === undefined || immediate) {
    const why = immediate ? `revision ${revision} applied at once (undo)` : `revision ${revision} has no spec.rollout`;
    if (before !== undefined && (inProgress(before) || before.phase === "aborted")) end(core, job, why);
    // After a completed rollout, the record says the new revision is the stable one now.
    else if (before !== undefined) setRollout(job, { ...before, stableRevision: revision, targetRevision: revision, reason: why });
    return;
  }
  start(core, job, stable, before !== undefined && inProgress(before) ? `revision ${revision} replaced revision ${before.targetRevision}` : undefined);
}

/** Starts a rollout of the job's latest revision from `stable`, at its first step. */
function start(core: CoreState, job: JobEntry, stable: number, replaced?: string): void {
  const target = job.record.revision;
  setRollout(job, {
    stableRevision: stable,
    targetRevision: target,
    phase: "progressing",
    step: 0,
    stepStartedAt: core.now,
    stepFires: 0,
    selectors: [],
    shards: [],
    since: core.now,
    target: emptyTally(),
    stable: emptyTally(),
  });
  core.emit("rollout.started", `${job.record.name}: revision ${target} rolls out from revision ${stable}${replaced === undefined ? "" : ` (${replaced})`}`, { job: job.record.name });
  advance(core, job);
}

/** The rollout is over without the new revision: every shard runs the latest spec (which runs what stable ran). */
function end(core: CoreState, job: JobEntry, why: string): void {
  const before = job.record.rollout!;
  setRollout(job, { ...before, phase: "completed", stableRevision: job.record.revision, targetRevision: job.record.revision, step: stepsOf(job, before).length, endedAt: core.now, reason: why });
  core.emit("rollout.ended", `${job.record.name}: rollout of revision ${before.targetRevision} ended: ${why}`, { job: job.record.name });
}

function setRollout(job: JobEntry, rollout: RolloutState): void {
  job.record = { ...job.record, rollout };
}

function save(core: CoreState, job: JobEntry, rollout: RolloutState): void {
  setRollout(job, rollout);
  core.outbox.saveJob(job.record);
  // Which agents may hold the shards follows which revisions run (placement.ts, runsOf).
  Placement.reconcileSoon(core);
}

/**
 * Runs the rollout's steps from the current one until one has to wait: waves take effect at
 * once, pauses and analysis steps wait (a timer, fires, runs, or a promote), and after the last
 * step the new revision is the stable one.
 */
export function advance(core: CoreState, job: JobEntry): void {
  const start = job.record.rollout;
  if (start === undefined || start.phase !== "progressing") return;
  let rollout: RolloutState = start;
  const steps = stepsOf(job, rollout);
  const name = job.record.name;
  const next = (from: RolloutState): RolloutState => ({ ...from, step: from.step + 1, stepStartedAt: core.now, stepFires: 0 });
  while (rollout.step < steps.length) {
    const step: RolloutStep = steps[rollout.step]!;
    if ("wave" in step) {
      core.emit("rollout.wave", `${name}: revision ${rollout.targetRevision} reaches ${describeSelector(step.wave)} (step ${rollout.step + 1})`, { job: name });
      rollout = next({ ...rollout, selectors: [...rollout.selectors, selectorState(step.wave)], ...newWindow(core) });
      continue;
    }
    if ("weight" in step) {
      core.emit("rollout.wave", `${name}: revision ${rollout.targetRevision} reaches ${step.weight}% of the shards (step ${rollout.step + 1})`, { job: name });
      rollout = next({ ...rollout, shards: chooseShards(core, job, rollout, step.weight), ...newWindow(core) });
      continue;
    }
    if ("pause" in step) {
      const { duration, fires } = step.pause;
      if (duration !== undefined) {
        const until = rollout.stepStartedAt + durationMs(duration)!;
        if (core.now >= until) {
          rollout = next(rollout);
          continue;
        }
        if (core.rolloutTimers.get(name) !== until) {
          core.rolloutTimers.set(name, until);
          core.timers.push(until, { kind: "rollout", job: name });
        }
        break;
      }
      if (fires !== undefined) {
        if (rollout.stepFires >= fires) {
          rollout = next(rollout);
          continue;
        }
        break;
      }
      rollout = { ...rollout, phase: "paused" };
      core.emit("rollout.paused", `${name}: rollout of revision ${rollout.targetRevision} paused at step ${rollout.step + 1} until promoted`, { job: name });
      break;
    }
    const verdict = judge(step.analysis, rollout);
    if (verdict.failed !== undefined) {
      setRollout(job, rollout);
      abort(core, job, `analysis at step ${rollout.step + 1}: ${verdict.failed}`);
      return;
    }
    if (!verdict.passed) break;
    core.emit("rollout.analysis-passed", `${name}: revision ${rollout.targetRevision} passed the analysis at step ${rollout.step + 1}: ${verdict.figures}`, { job: name });
    rollout = next(rollout);
  }
  if (rollout.step >= steps.length && rollout.phase === "progressing") {
    rollout = { ...rollout, phase: "completed", stableRevision: rollout.targetRevision, endedAt: core.now };
    core.emit("rollout.completed", `${name}: revision ${rollout.targetRevision} runs on every shard`, { job: name });
  }
  if (rollout !== start) save(core, job, rollout);
}

/** A new wave's analysis window: runs of fires from now on. */
function newWindow(core: CoreState): Pick<RolloutState, "since" | "target" | "stable"> {
  return { since: core.now, target: emptyTally(), stable: emptyTally() };
}

/** What an analysis step makes of the runs so far: failed (why), passed, or still waiting. */
export function judge(gate: AnalysisGate, rollout: RolloutState): { failed?: string; passed: boolean; figures: string } {
  const { target, stable } = rollout;
  const rate = target.runs === 0 ? 0 : target.failures / target.runs;
  const p95 = percentile95(target.durationsMs);
  const figures = `${target.failures} of ${target.runs} runs failed${p95 === undefined ? "" : `, p95 ${(p95 / 1000).toFixed(3)} s`}`;
  if (gate.maxFailures !== undefined && target.failures > gate.maxFailures) {
    return { failed: `${target.failures} runs of revision ${rollout.targetRevision} failed, more than maxFailures ${gate.maxFailures}`, passed: false, figures };
  }
  if (target.runs < gate.minExecutions) return { passed: false, figures };
  if (gate.maxFailureRate !== undefined && rate > gate.maxFailureRate) {
    return { failed: `failure rate ${percent(rate)} (${target.failures} of ${target.runs}) is above maxFailureRate ${percent(gate.maxFailureRate)}`, passed: false, figures };
  }
  if (gate.noWorseThanStable === true) {
    const stableRate = stable.runs === 0 ? 0 : stable.failures / stable.runs;
    if (rate > stableRate) {
      return {
        failed: `failure rate ${percent(rate)} (${target.failures} of ${target.runs}) is above stable revision ${rollout.stableRevision}'s ${percent(stableRate)} (${stable.failures} of ${stable.runs}) over the same fires`,
        passed: false,
        figures,
      };
    }
  }
  if (gate.maxP95DurationSeconds !== undefined && p95 !== undefined && p95 > gate.maxP95DurationSeconds * 1000) {
    return { failed: `p95 duration ${(p95 / 1000).toFixed(3)} s is above maxP95DurationSeconds ${gate.maxP95DurationSeconds}`, passed: false, figures };
  }
  return { passed: true, figures };
}

function percent(rate: number): string {
  return `${Number((rate * 100).toFixed(2))}%`;
}

/** The nearest-rank 95th percentile, or undefined with no durations. */
export function percentile95(durations: readonly number[]): number | undefined {
  if (durations.length === 0) return undefined;
  const sorted = [...durations].sort((a, b) => a - b);
  return sorted[Math.ceil(0.95 * sorted.length) - 1];
}

/** A fire of the job was made: a pause by fires counts it. */
export function countFire(core: CoreState, job: JobEntry): void {
  const rollout = job.record.rollout;
  if (rollout?.phase !== "progressing") return;
  const step = stepsOf(job, rollout)[rollout.step];
  if (step === undefined || !("pause" in step) || step.pause.fires === undefined) return;
  save(core, job, { ...rollout, stepFires: rollout.stepFires + 1 });
  advance(core, job);
}

/**
 * An execution reached a terminal state: a run of either revision, of a fire since the last
 * wave began, counts towards the analysis (succeeded, failed, timed out; a lost, cancelled or
 * misfired run says nothing about the revision).
 */
export function countRun(core: CoreState, execution: ExecutionRecord): void {
  if (execution.state !== "succeeded" && execution.state !== "failed" && execution.state !== "timed-out") return;
  const job = core.jobs.get(execution.job);
  const rollout = job?.record.rollout;
  if (job === undefined || rollout === undefined || !inProgress(rollout) || execution.fireTime < rollout.since || execution.shard === FIRE_COMPLETE_SHARD) return;
  const which = execution.revision === rollout.targetRevision ? "target" : execution.revision === rollout.stableRevision ? "stable" : undefined;
  if (which === undefined) return;
  const tally = rollout[which];
  const durationMs = execution.startedAt !== undefined && execution.finishedAt !== undefined ? Math.max(0, execution.finishedAt - execution.startedAt) : undefined;
  const durations = durationMs === undefined ? tally.durationsMs : [...tally.durationsMs, durationMs].slice(-TALLY_DURATIONS);
  const failed = execution.state !== "succeeded";
  save(core, job, { ...rollout, [which]: { runs: tally.runs + 1, failures: tally.failures + (failed ? 1 : 0), durationsMs: durations } });
  advance(core, job);
}

/**
 * The revision a new fire of `shard` runs (the job's completion hook: `shard` undefined): the
 * new revision when the shard is in a wave reached and its owner can run it, else the stable one.
 */
export function revisionFor(core: CoreState, job: JobEntry, shard: ShardEntry | undefined): number {
  const rollout = job.record.rollout;
  if (rollout === undefined || rollout.phase === "completed") return job.record.revision;
  if (rollout.phase === "aborted" || shard === undefined) return rollout.stableRevision;
  return inWave(core, job, rollout, shard) ? rollout.targetRevision : rollout.stableRevision;
}

/**
 * Whether the shard runs the new revision: chosen by a weight step, or owned by an agent a
 * reached wave's selector matches; either way only when that owner declares what the new
 * revision runs. Selector waves follow the owner at each fire (docs/rollouts.md, "Waves and
 * agents that come and go").
 */
export function inWave(core: CoreState, job: JobEntry, rollout: RolloutState, shard: ShardEntry): boolean {
  const owner = shard.owner === undefined ? undefined : core.agents.get(shard.owner);
  const chosen = rollout.shards.includes(shard.shard) || (owner !== undefined && rollout.selectors.some((selector) => matches(selector, owner.labels)));
  return chosen && (owner === undefined || Placement.runsIt(owner, Revisions.specOf(job, rollout.targetRevision).runs));
}

/** What the job's shards may run, for placement: both revisions while a rollout is in progress. */
export function runsOf(job: JobEntry): JobSpec["runs"][] {
  const rollout = job.record.rollout;
  if (rollout === undefined || rollout.phase === "completed") return [job.record.spec.runs];
  const stable = Revisions.specOf(job, rollout.stableRevision).runs;
  if (rollout.phase === "aborted") return [stable];
  return [stable, Revisions.specOf(job, rollout.targetRevision).runs];
}

export function matches(selector: WaveSelectorState, labels: Readonly<Record<string, string>>): boolean {
  for (const [key, value] of Object.entries(selector.matchLabels)) if (labels[key] !== value) return false;
  for (const { key, operator, values } of selector.matchExpressions) {
    const has = Object.hasOwn(labels, key);
    const ok =
      operator === "In" ? has && values.includes(labels[key]!) : operator === "NotIn" ? !has || !values.includes(labels[key]!) : operator === "Exists" ? has : !has;
    if (!ok) return false;
  }
  return true;
}

/** The label an agent's cluster is read from (the kustomize overlays set it). */
export const CLUSTER_LABEL = "cluster";

export function selectorState(wave: WaveSelector): WaveSelectorState {
  const expressions = (wave.matchExpressions ?? []).map(({ key, operator, values }) => ({ key, operator, values: values ?? [] }));
  if (wave.clusters !== undefined) expressions.unshift({ key: CLUSTER_LABEL, operator: "In", values: wave.clusters });
  return { matchLabels: wave.matchLabels ?? {}, matchExpressions: expressions };
}

export function describeSelector(wave: WaveSelector | WaveSelectorState): string {
  const parts = Object.entries(wave.matchLabels ?? {}).map(([key, value]) => `${key}=${value}`);
  const expressions = "clusters" in wave && wave.clusters !== undefined ? [{ key: CLUSTER_LABEL, operator: "In", values: wave.clusters }, ...(wave.matchExpressions ?? [])] : (wave.matchExpressions ?? []);
  for (const { key, operator, values } of expressions) {
    parts.push(operator === "In" || operator === "NotIn" ? `${key} ${operator === "In" ? "in" : "notin"} (${(values ?? []).join(",")})` : operator === "Exists" ? key : `!${key}`);
  }
  return parts.join(", ");
}

/**
 * The shards a weight step puts on the new revision: `percent` of the job's shards (rounded
 * up), keeping those already chosen, the rest picked in a fixed pseudo-random order (by job,
 * revision and shard) spread round-robin across their owners' clusters and zones first, so
 * that a wave of 10% is not ten shards of one cluster.
 */
export function chooseShards(core: CoreState, job: JobEntry, rollout: RolloutState, percent: number): number[] {
  const count = Math.min(job.shards.length, Math.ceil((job.shards.length * percent) / 100));
  const chosen = new Set(rollout.shards.filter((shard) => shard < job.shards.length));
  if (chosen.size >= count) return [...chosen].sort((a, b) => a - b);
  const domainOf = (shard: ShardEntry): string => {
    const owner: AgentEntry | undefined = shard.owner === undefined ? undefined : core.agents.get(shard.owner);
    return owner === undefined ? "" : [owner.labels[CLUSTER_LABEL] ?? "", owner.labels["zone"] ?? owner.labels["topology.kubernetes.io/zone"] ?? ""].join("/");
  };
  const rank = (shard: number): string => createHash("sha256").update(`${job.record.name}/${rollout.targetRevision}/${shard}`).digest("hex");
  const domains = new Map<string, ShardEntry[]>();
  for (const shard of job.shards) {
    if (chosen.has(shard.shard)) continue;
    const domain = domainOf(shard);
    domains.set(domain, [...(domains.get(domain) ?? []), shard]);
  }
  const queues = [...domains.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, shards]) => shards.map((s) => ({ shard: s.shard, rank: rank(s.shard) })).sort((a, b) => (a.rank < b.rank ? -1 : 1)));
  // Domains that already have chosen shards come after those that have none.
  const had = new Map<string, number>();
  for (const shard of chosen) {
    const domain = domainOf(job.shards[shard]!);
    had.set(domain, (had.get(domain) ?? 0) + 1);
  }
  while (chosen.size < count) {
    let best: { shard: number; rank: string } | undefined;
    let bestQueue = -1;
    let bestLoad = Infinity;
    queues.forEach((queue, index) => {
      const head = queue[0];
      if (head === undefined) return;
      const domain = domainOf(job.shards[head.shard]!);
      const load = had.get(domain) ?? 0;
      if (load < bestLoad) {
        best = head;
        bestQueue = index;
        bestLoad = load;
      }
    });
    if (best === undefined) break;
    queues[bestQueue]!.shift();
    chosen.add(best.shard);
    const domain = domainOf(job.shards[best.shard]!);
    had.set(domain, (had.get(domain) ?? 0) + 1);
  }
  return [...chosen].sort((a, b) => a - b);
}

/** Aborts the rollout: every shard runs the stable revision from its next fire. */
export function abort(core: CoreState, job: JobEntry, reason: string): void {
  const rollout = job.record.rollout!;
  save(core, job, { ...rollout, phase: "aborted", reason, endedAt: core.now });
  core.emit("rollout.aborted", `${job.record.name}: rollout of revision ${rollout.targetRevision} aborted: ${reason}; every shard runs revision ${rollout.stableRevision} from its next fire`, {
    job: job.record.name,
  });
}

function requireRollout(core: CoreState, name: string, allowed: RolloutState["phase"][], what: string): { job: JobEntry; rollout: RolloutState } {
  const job = core.requireJob(name);
  const rollout = job.record.rollout;
  if (rollout === undefined || !allowed.includes(rollout.phase)) {
    const now = rollout === undefined ? "has never rolled out a change" : `has no rollout ${rollout.phase === "aborted" ? "in progress (the last one was aborted; rollout retry starts it again)" : "in progress"}`;
    throw new ShardlineError("failed-precondition", `job ${name} ${now}: nothing to ${what}`, { field: "job", value: name });
  }
  return { job, rollout };
}

/** Ends the current pause or analysis and goes on; `full` skips every remaining step. */
export function promote(core: CoreState, name: string, full: boolean, by: string): void {
  const { job, rollout } = requireRollout(core, name, ["progressing", "paused"], "promote");
  const steps = stepsOf(job, rollout);
  const step = full ? steps.length : rollout.step + 1;
  core.emit("rollout.promoted", `${name}: ${full ? "every remaining step" : `step ${rollout.step + 1}`} of revision ${rollout.targetRevision}'s rollout promoted${by === "" ? "" : ` by ${by}`}`, { job: name });
  // Skipped waves still take effect: a full promotion puts every shard on the new revision.
  save(core, job, { ...rollout, phase: "progressing", step: Math.min(step, steps.length), stepStartedAt: core.now, stepFires: 0 });
  advance(core, job);
}

export function abortByHand(core: CoreState, name: string, by: string): void {
  const { job } = requireRollout(core, name, ["progressing", "paused"], "abort");
  abort(core, job, `aborted by ${by === "" ? "an operator" : by}`);
}

/** Starts an aborted rollout again from its first step. */
export function retry(core: CoreState, name: string, by: string): void {
  const { job, rollout } = requireRollout(core, name, ["aborted"], "retry");
  start(core, job, rollout.stableRevision, `retried${by === "" ? "" : ` by ${by}`}`);
}
