/**
 * Completion hooks (spec.onFireComplete): each fire's progress, and the one run made once every
 * shard of it has finished.
 */
import { type JobSpec } from "../../shared/manifest/job-spec.js";
import type { ExecutionRecord, ShardOutcome } from "./store-port.js";
import { FIRE_COMPLETE_SHARD } from "./store-port.js";
import type { ExecutionContext } from "./messages.js";
import type { AgentEntry } from "./model.js";
import { CoreState, push } from "./core-state.js";
import * as Fires from "./fires.js";
import * as Rollouts from "./rollouts.js";
import * as Executions from "./executions.js";
import * as Placement from "./placement.js";
import * as DisconnectGrace from "./disconnect-grace.js";
import { NOT_TRACED } from "./execution-tracing.js";

/**
 * Counts the execution's shard as finished in its fire; when it was the last one, queues the
 * fire's spec.onFireComplete run, unless nothing ran (every shard misfired).
 */
export function settleFire(core: CoreState, execution: ExecutionRecord): void {
  if (execution.shard === FIRE_COMPLETE_SHARD) return;
  const key = fireKey(execution.job, execution.fireTime);
  const progress = core.fires.get(key);
  if (progress === undefined || !progress.pending.delete(execution.shard)) return;
  progress.outcomes.set(execution.shard, outcomeOf(execution));
  if (progress.pending.size > 0) return;
  core.fires.delete(key);
  const job = core.jobs.get(execution.job);
  if (job?.record.spec.onFireComplete === undefined) return;
  const outcomes = [...progress.outcomes.values()].sort((a, b) => a.shard - b.shard);
  if (outcomes.every((o) => o.state === "misfired")) return;
  const run = Fires.newExecution(core, job, FIRE_COMPLETE_SHARD, execution.fireTime, 1, "fire-complete", execution.parameter, Rollouts.revisionFor(core, job, undefined));
  Fires.trace(core, job, run);
  run.fireOutcome = outcomes;
  const succeeded = outcomes.filter((o) => o.state === "succeeded").length;
  core.emit(
    "fire.completed",
    `every shard of ${job.record.name}'s fire at ${new Date(execution.fireTime).toISOString()} finished ` +
      `(${succeeded} of ${outcomes.length} succeeded); its completion hook runs as ${run.id}`,
    { job: job.record.name, executionId: run.id },
  );
  queueFireComplete(core, run);
}

/** Makes a completion hook run open and waiting, and sends it out if an agent can take it. */
export function queueFireComplete(core: CoreState, run: ExecutionRecord): void {
  core.open.set(run.id, run);
  core.waitingFireCompletes.push(run);
  core.queuedAt.set(run.id, ++core.queueSeq);
  core.outbox.saveExecution(run);
  if (run.notBefore !== undefined) core.timers.push(run.notBefore, { kind: "retry", job: run.job, shard: FIRE_COMPLETE_SHARD });
  dispatchFireCompletes(core);
}

/**
 * Sends each waiting completion hook run whose time has come to the agent, among those that
 * declare its handler and match the job's placement, that runs the fewest executions and has
 * a free slot. It belongs to no shard, so it runs under that agent's lease alone: if the agent
 * is lost it runs again elsewhere only once its lease has expired, like a fenced shard's run.
 */
export function dispatchFireCompletes(core: CoreState): void {
  if (core.waitingFireCompletes.length === 0) return;
  const waiting: ExecutionRecord[] = [];
  const sends = new Map<AgentEntry, ExecutionContext[]>();
  for (const run of core.waitingFireCompletes) {
    const spec = core.jobs.get(run.job)?.record.spec;
    const hook = spec?.onFireComplete;
    const agent = spec === undefined || hook === undefined || (run.notBefore ?? 0) > core.now ? undefined : fireCompleteTarget(core, spec, hook.handler);
    if (agent === undefined) {
      waiting.push(run);
      continue;
    }
    core.queuedAt.delete(run.id);
    run.agent = agent.id;
    agent.executions.add(run.id);
    const disconnectGraceMs = DisconnectGrace.atDispatch(core, run, spec);
    core.outbox.saveExecution(run);
    push(sends, agent, {
      executionId: run.id,
      job: run.job,
      shard: 0,
      shardCount: spec!.shards,
      shardParameter: "",
      parameter: run.parameter,
      fireTime: run.fireTime,
      attempt: run.attempt,
      revision: run.revision ?? core.jobs.get(run.job)!.record.revision,
      handler: hook!.handler,
      timeoutMs: spec!.timeoutSeconds * 1000,
      disconnectGraceMs,
      // A hook run holds no assignment: the newest one made so far fences it against earlier runs.
      fencingToken: DisconnectGrace.fencingToken(core.term, core.generation),
      traceContext: run.traceContext ?? NOT_TRACED,
      fireOutcome: run.fireOutcome ?? [],
    });
  }
  core.waitingFireCompletes = waiting;
  for (const [agent, executions] of sends) core.outbox.send(agent.session, { kind: "dispatch", executions });
}

export function fireCompleteTarget(core: CoreState, spec: JobSpec, handler: string): AgentEntry | undefined {
  let best: AgentEntry | undefined;
  for (const agent of core.agents.values()) {
    if (!Placement.placeable(core, agent, spec) || !agent.handlers.has(handler) || !Executions.hasSlot(core, agent)) continue;
    if (best === undefined || agent.executions.size < best.executions.size || (agent.executions.size === best.executions.size && agent.id < best.id)) {
      best = agent;
    }
  }
  return best;
}

/** Cancels a job's completion hook runs, waiting or running, and forgets its fires' progress. */
export function stopFireCompletes(core: CoreState, job: string, reason: string): void {
  for (const key of [...core.fires.keys()]) {
    if (key.startsWith(`${job}\n`)) core.fires.delete(key);
  }
  const mine = core.waitingFireCompletes.filter((run) => run.job === job);
  core.waitingFireCompletes = core.waitingFireCompletes.filter((run) => run.job !== job);
  for (const run of mine) Executions.closeExecution(core, run, "cancelled", { error: reason });
  for (const run of core.open.values()) {
    if (run.job !== job || run.shard !== FIRE_COMPLETE_SHARD || run.agent === "" || core.cancelling.has(run.id)) continue;
    const agent = core.agents.get(run.agent);
    core.cancelling.add(run.id);
    if (agent !== undefined && agent.connected) core.outbox.send(agent.session, { kind: "cancel", executionIds: [run.id], reason });
  }
}

/** Identifies one fire of one job. */
export function fireKey(job: string, fireTime: number): string {
  return `${job}\n${fireTime}`;
}

export function outcomeOf(execution: ExecutionRecord): ShardOutcome {
  const outcome: ShardOutcome = { shard: execution.shard, state: execution.state, executionId: execution.id };
  if (execution.error) outcome.error = execution.error;
  return outcome;
}
