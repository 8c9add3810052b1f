/**
 * Why things wait: pending executions, unowned shards and jobs, each with the reason the CLI
 * shows.
 */
import { FIRE_COMPLETE_SHARD } from "./store-port.js";
import { at, whatRunsTake, whyNoAgentCanRun, whyNoAgentForHook, whyNoScheduledFires } from "./waiting-reasons.js";
import type { ShardEntry, JobEntry } from "./model.js";
import { CoreState } from "./core-state.js";
import * as Executions from "./executions.js";
import * as DisconnectGrace from "./disconnect-grace.js";
import * as Placement from "./placement.js";
import * as Revisions from "./revisions.js";

/**
 * Why a pending execution is not running yet, or what an unknown one waits for, for operators;
 * undefined when it is not waiting in a queue (dispatched, and only waiting for its fire instant
 * on its agent, or finished).
 */
export function waitingReason(core: CoreState, id: string): string | undefined {
  const execution = core.open.get(id);
  if (execution?.state === "unknown") return DisconnectGrace.unknownReason(core, execution);
  if (execution === undefined || !core.queuedAt.has(id)) return undefined;
  const job = core.jobs.get(execution.job);
  if (job === undefined) return "its job is being deleted";
  if ((execution.notBefore ?? 0) > core.now) {
    return `${execution.cause === "daemon" ? "restarts" : "retries"} at ${at(execution.notBefore!)} (spec.retries.backoffSeconds)`;
  }
  if (execution.shard === FIRE_COMPLETE_SHARD) {
    const hook = job.record.spec.onFireComplete;
    if (hook === undefined) return "spec.onFireComplete was removed";
    return (
      whyNoAgentForHook(hook.handler, job.record.spec, core.agents.values()) ??
      `every agent that declares handler ${JSON.stringify(hook.handler)} runs its --max-concurrent executions`
    );
  }
  const shard = job.shards[execution.shard] ?? job.retired.get(execution.shard);
  if (shard === undefined) return `shard ${execution.shard} was removed by a smaller spec.shards`;
  const wait = shardWait(core, job, shard, execution.id);
  return wait === undefined ? undefined : `shard ${shard.shard}: ${wait}`;
}

/** The enabled shards of a job that no agent owns. */
export function unownedShards(core: CoreState, job: JobEntry): ShardEntry[] {
  const disabled = new Set(job.record.disabledShards);
  return job.shards.filter((s) => s.owner === undefined && !disabled.has(s.shard));
}

/** Why a job's shards have no owner (the same for all of them: placement looks at the job, not the shard). */
export function whyUnowned(core: CoreState, job: JobEntry): string {
  if (core.now < core.startupGraceUntil) {
    return `the controller restarted and gives no shard away until ${at(core.startupGraceUntil)}, while the previous owners reconnect and claim theirs`;
  }
  return whyNoAgentCanRun(job.record.spec, core.agents.values()) ?? "not placed yet";
}

/**
 * Why the shard cannot start its next execution now (`head`, or whatever heads its queue),
 * worded without the shard's number or any execution id, so that one cause reads the same
 * for every shard and fire; undefined when nothing stops it.
 */
export function shardWait(core: CoreState, job: JobEntry, shard: ShardEntry, head?: string): string | undefined {
  if (shard.owner === undefined) return `no owner (${whyUnowned(core, job)})`;
  const owner = core.agents.get(shard.owner);
  if (owner === undefined || owner.lost || !owner.connected) {
    return `fenced until the lease of its owner ${shard.owner}, which lost its stream, expires at ${at(owner?.leaseExpiry ?? core.now)}`;
  }
  if (owner.inherited?.shards.has(shard) === true) {
    return `fenced until the lease of ${owner.id}'s previous process, which lost its stream, expires at ${at(owner.inherited.until)}`;
  }
  if (shard.revoking) return `moving away from ${owner.id}, which has not released it yet`;
  if (owner.leaving) return `its owner ${owner.id} is leaving (it said goodbye): the shard moves to another agent`;
  if (shard.running.size > 0 && job.record.spec.overlap === "forbid") {
    const unknown = [...shard.running].map((id) => core.unknownRuns.get(id)).find((u) => u !== undefined);
    if (unknown !== undefined) {
      return `busy with its previous run, which may still be going on an agent out of reach until ${at(unknown.until)} (its disconnect grace; spec.overlap: forbid)`;
    }
    return "busy with its previous run (spec.overlap: forbid)";
  }
  if (!Executions.hasSlot(core, owner)) return `its owner ${owner.id} runs its --max-concurrent ${owner.maxConcurrent} executions`;
  const first = shard.queue[0];
  if (first !== undefined && (head === undefined || first.id === head)) {
    const runs = Revisions.specOf(job, first.revision).runs;
    if (!Placement.runsIt(owner, runs)) {
      return `its run is pinned to revision ${first.revision}, which needs an agent that ${whatRunsTake(runs)}, and its owner ${owner.id} is not one: it waits for an owner that is`;
    }
  }
  if (head !== undefined && shard.queue.length > 0 && shard.queue[0]!.id !== head) return "behind its earlier executions";
  return undefined;
}

/** Why the job, or some of its shards, cannot run now; undefined when nothing stops it. */
export function jobWaitingReason(core: CoreState, job: JobEntry): string | undefined {
  const { name, spec } = job.record;
  const parts: string[] = [];
  if (spec.schedule !== undefined || spec.daemon === true) {
    const noFires = whyNoScheduledFires(name, spec, job.record.paused);
    if (noFires !== undefined) parts.push(noFires);
  }
  const unowned = unownedShards(core, job);
  if (unowned.length > 0) {
    const count = unowned.length === job.shards.length ? `none of its ${unowned.length} shards has` : `${unowned.length} of its ${job.shards.length} shards have`;
    parts.push(`${count} an owner: ${whyUnowned(core, job)}`);
  }
  const disabled = job.record.disabledShards;
  if (disabled.length > 0) {
    const which = disabled.length === 1 ? `shard ${disabled[0]} is` : `shards ${disabled.slice(0, 10).join(", ")}${disabled.length > 10 ? ", ..." : ""} are`;
    parts.push(`${which} disabled (shardline enable ${name} ${disabled[0]})`);
  }
  const fenced = job.shards.filter((s) => {
    const owner = s.owner === undefined ? undefined : core.agents.get(s.owner);
    return owner !== undefined && (owner.lost || owner.inherited?.shards.has(s) === true);
  });
  if (fenced.length > 0) parts.push(`${fenced.length} shard${fenced.length === 1 ? " is" : "s are"} fenced until a lost owner's lease expires`);
  const rollout = job.record.rollout;
  if (rollout?.phase === "aborted") {
    parts.push(
      `degraded: the rollout of revision ${rollout.targetRevision} was aborted (${rollout.reason ?? "no reason recorded"}); every shard runs revision ${rollout.stableRevision} until a new revision is applied or shardline rollout retry ${name}`,
    );
  }
  return parts.length === 0 ? undefined : parts.join("; ");
}
