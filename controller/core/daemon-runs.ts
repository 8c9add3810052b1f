/** Daemon jobs' runs: one per owned shard, for as long as the agent owns it. */
import type { ShardEntry, JobEntry } from "./model.js";
import { CoreState } from "./core-state.js";
import * as Fires from "./fires.js";
import * as Executions from "./executions.js";

/**
 * A daemon job's shard runs one execution for as long as its owner keeps it: queue one when
 * none runs or waits. After a run ends under the same owner, the next waits the job's backoff.
 */
export function ensureDaemonRun(core: CoreState, job: JobEntry, shard: ShardEntry): void {
  const spec = job.record.spec;
  if (spec.daemon !== true || job.record.paused || spec.suspend || job.record.disabledShards.includes(shard.shard)) return;
  if (shard.running.size > 0 || shard.queue.length > 0) return;
  const fireTime = Math.max(core.now, job.lastIssuedFire + 1);
  job.lastIssuedFire = fireTime;
  const run = Fires.newExecution(core, job, shard.shard, fireTime, 1, "daemon", spec.parameter, job.record.revision);
  Fires.trace(core, job, run);
  if (shard.daemonEndedAt !== undefined) {
    run.notBefore = shard.daemonEndedAt + Math.max(1, spec.retries.backoffSeconds) * 1000;
    core.timers.push(run.notBefore, { kind: "retry", job: job.record.name, shard: shard.shard });
  }
  core.open.set(run.id, run);
  shard.queue.push(run);
  core.queuedAt.set(run.id, ++core.queueSeq);
  core.outbox.saveExecution(run);
}

/** Asks the owner to stop the shard's daemon run (a revoke, a pause, a disable). */
export function stopDaemonRun(core: CoreState, job: JobEntry, shard: ShardEntry, reason: string): void {
  if (job.record.spec.daemon !== true) return;
  for (const execution of shard.queue) Executions.closeExecution(core, execution, "cancelled", { error: reason });
  shard.queue = [];
  const owner = shard.owner === undefined ? undefined : core.agents.get(shard.owner);
  const running = [...shard.running].filter((id) => !core.cancelling.has(id));
  if (owner === undefined || !owner.connected || running.length === 0) return;
  for (const id of running) core.cancelling.add(id);
  core.outbox.send(owner.session, { kind: "cancel", executionIds: running, reason });
}
