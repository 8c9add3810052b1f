/**
 * Executions: their lifecycle from dispatch to a terminal state, reports, retries, losses and
 * failover re-runs, cancel, and the slots agents run them in.
 */
import { ShardlineError } from "../../shared/errors.js";
import { DEFAULT_START_TIMEOUT_SECONDS, type JobSpec, type KubernetesSpec, priorityOf, unknownExecutor } from "../../shared/manifest/job-spec.js";
import type { ExecutionRecord, ExecutionStateName } from "./store-port.js";
import { FIRE_COMPLETE_SHARD, TERMINAL_STATES } from "./store-port.js";
import type { ExecutionContext, ExecutionUpdate } from "./messages.js";
import { retryDelayMs } from "./misfire.js";
import type { AgentEntry, ShardEntry, JobEntry } from "./model.js";
import { CoreState } from "./core-state.js";
import * as Fires from "./fires.js";
import * as FireComplete from "./fire-complete.js";
import * as DaemonRuns from "./daemon-runs.js";
import * as Clock from "./clock.js";
import * as DisconnectGrace from "./disconnect-grace.js";
import * as Placement from "./placement.js";
import * as Revisions from "./revisions.js";
import * as Rollouts from "./rollouts.js";
import { NOT_TRACED } from "./execution-tracing.js";

export function executionUpdates(core: CoreState, session: string, reports: readonly ExecutionUpdate[], now: number): void {
  Clock.advance(core, now);
  const agent = core.agentOf(session);
  // An event for each of the first few reports ignored, then one for the rest: a batch of
  // thousands of made-up ids must not flood every watcher of the events.
  const stale = { count: 0, events: 10 };
  for (const report of reports) applyReport(core, agent, report, stale);
  if (stale.count > stale.events) {
    core.emit("execution.stale-report", `ignored ${stale.count - stale.events} more reports from ${agent.id} of executions it does not hold`, {
      agent: agent.id,
    });
  }
}

/**
 * Cancels an open execution: a waiting one at once, a dispatched one by asking its agent to
 * abort it (it is recorded when the agent confirms, and never re-run by failover). Returns
 * the execution's state after the request.
 */
export function cancelExecution(core: CoreState, id: string, reason: string, now: number): ExecutionStateName {
  Clock.advance(core, now);
  const execution = core.open.get(id);
  if (execution === undefined) {
    throw new ShardlineError("failed-precondition", `execution ${JSON.stringify(id)} is not pending or running`, { field: "id", value: id });
  }
  const shard = core.jobs.get(execution.job)?.shards[execution.shard];
  const why = reason || "cancelled by an operator";
  if (execution.agent === "") {
    if (shard !== undefined) shard.queue = shard.queue.filter((e) => e.id !== id);
    core.waitingFireCompletes = core.waitingFireCompletes.filter((e) => e.id !== id);
    closeExecution(core, execution, "cancelled", { error: why });
    core.emit("execution.cancelled", `${id} cancelled: ${why}`, { job: execution.job, shard: execution.shard, executionId: id });
    if (shard !== undefined) dispatchShard(core, shard);
    return "cancelled";
  }
  core.cancelling.add(id);
  const agent = core.agents.get(execution.agent);
  if (agent !== undefined && agent.connected) core.outbox.send(agent.session, { kind: "cancel", executionIds: [id], reason: why });
  core.emit("execution.cancelling", `${id} is being cancelled on ${execution.agent}: ${why}`, {
    job: execution.job,
    shard: execution.shard,
    agent: execution.agent,
    executionId: id,
  });
  return execution.state;
}

/** Marks every run the shard's owner holds as lost (with failover per the job's spec). */
export function loseRunning(core: CoreState, shard: ShardEntry, reason: string, onlyOf?: string): void {
  for (const id of [...shard.running]) {
    const execution = core.open.get(id);
    if (execution !== undefined && (onlyOf === undefined || execution.agent === onlyOf)) loseExecution(core, execution, reason);
  }
}

export function loseExecution(core: CoreState, execution: ExecutionRecord, reason: string): void {
  if (core.cancelling.has(execution.id)) {
    // It was being cancelled: a lost agent does not bring it back.
    closeExecution(core, execution, "cancelled", { error: `cancelled; its agent could not confirm (${reason})` });
    return;
  }
  const job = core.jobs.get(execution.job);
  const shard = job?.shards[execution.shard];
  const fireComplete = execution.shard === FIRE_COMPLETE_SHARD;
  if (job === undefined || (shard === undefined && !fireComplete)) {
    // Its job or shard was removed while it ran: removal cancels runs, this one included.
    closeExecution(core, execution, "cancelled", { error: `cancelled: its ${job === undefined ? "job was deleted" : "shard was removed"}; ${reason}` });
    return;
  }
  // A daemon run is not re-run: the shard's next owner starts its own.
  const rerun = job.record.spec.failover !== "off" && execution.cause !== "daemon";
  closeExecution(core, execution, "lost", { error: reason }, rerun);
  core.emit("execution.lost", `${execution.id} lost: ${reason}`, {
    job: execution.job,
    shard: execution.shard,
    agent: execution.agent,
    executionId: execution.id,
  });
  if (!rerun) return;
  const retry = Fires.newExecution(core, job, execution.shard, execution.fireTime, execution.attempt + 1, "failover", execution.parameter, execution.revision ?? job.record.revision);
  Fires.trace(core, job, retry, execution.traceContext);
  core.emit("execution.failover", `${execution.id} runs again as ${retry.id}`, {
    job: job.record.name,
    shard: execution.shard,
    executionId: retry.id,
  });
  if (shard !== undefined) {
    Fires.enqueue(core, job, shard, retry);
  } else {
    retry.fireOutcome = execution.fireOutcome;
    FireComplete.queueFireComplete(core, retry);
  }
}

/** `stale` counts the reports ignored; past `stale.events` of them, no event is emitted for each. */
export function applyReport(core: CoreState, agent: AgentEntry, report: ExecutionUpdate, stale?: { count: number; events: number }): void {
  const execution = core.open.get(report.executionId);
  if (execution === undefined || execution.agent !== agent.id) {
    // A report of a run already closed (for example lost after a lease expiry), or of another
    // agent's, changes nothing.
    if (stale !== undefined && ++stale.count > stale.events) return;
    core.emit("execution.stale-report", `ignored a report of ${report.executionId} from ${agent.id}`, {
      agent: agent.id,
      executionId: report.executionId,
    });
    return;
  }
  // Before the state: a terminal report carries its run's last lines.
  if (report.log !== undefined) core.outbox.appendLog({ executionId: execution.id, ...report.log });
  if (report.state === "running") {
    if (execution.state !== "running") {
      if (DisconnectGrace.reported(core, execution.id)) {
        core.emit("execution.reattached", `${execution.id} is still running on ${agent.id}, which is back within its disconnect grace`, {
          job: execution.job,
          shard: execution.shard,
          agent: agent.id,
          executionId: execution.id,
          state: "running",
        });
      }
      execution.state = "running";
      execution.startedAt = report.startedAt ?? execution.startedAt ?? core.now;
      core.outbox.saveExecution(execution);
    }
    return;
  }
  if (report.state === "lost") {
    loseExecution(core, execution, report.error || `agent ${agent.id} could not finish it`);
    return;
  }
  if (!TERMINAL_STATES.has(report.state) || report.state === "misfired") {
    throw ShardlineError.invalid(
      "execution_updates.state",
      report.state,
      "RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED or LOST",
    );
  }
  const startedAt = execution.startedAt ?? report.startedAt;
  const job = core.jobs.get(execution.job);
  const shard = job?.shards[execution.shard];
  const retrying =
    job !== undefined &&
    (shard !== undefined || execution.shard === FIRE_COMPLETE_SHARD) &&
    (report.state === "failed" || report.state === "timed-out") &&
    execution.attempt <= Revisions.specOf(job, execution.revision).retries.limit;
  closeExecution(
    core,
    execution,
    report.state,
    { startedAt, finishedAt: report.finishedAt, error: report.error, result: report.result },
    retrying,
  );
  core.emit("execution.finished", `${execution.id} ${report.state} on ${agent.id}`, {
    job: execution.job,
    shard: execution.shard,
    agent: agent.id,
    executionId: execution.id,
    state: report.state,
  });
  if (retrying) {
    scheduleRetry(core, job, shard, execution);
    if (shard !== undefined) dispatchShard(core, shard);
  }
}

/**
 * Queues the next attempt of a failed execution after its backoff: a shard's ahead of later
 * fires, a completion hook's among the waiting hooks (`shard` undefined).
 */
export function scheduleRetry(core: CoreState, job: JobEntry, shard: ShardEntry | undefined, failed: ExecutionRecord): void {
  const retry = Fires.newExecution(core, job, failed.shard, failed.fireTime, failed.attempt + 1, "retry", failed.parameter, failed.revision ?? job.record.revision);
  Fires.trace(core, job, retry, failed.traceContext);
  retry.notBefore = core.now + retryDelayMs(Revisions.specOf(job, failed.revision).retries.backoffSeconds, failed.attempt);
  if (shard === undefined) {
    retry.fireOutcome = failed.fireOutcome;
    FireComplete.queueFireComplete(core, retry);
  } else {
    core.open.set(retry.id, retry);
    shard.queue.unshift(retry);
    core.queuedAt.set(retry.id, ++core.queueSeq);
    core.outbox.saveExecution(retry);
    core.timers.push(retry.notBefore, { kind: "retry", job: job.record.name, shard: shard.shard });
  }
  core.emit("execution.retry", `${failed.id} ${failed.state}; retrying as ${retry.id} at ${new Date(retry.notBefore).toISOString()}`, {
    job: job.record.name,
    shard: failed.shard,
    executionId: retry.id,
  });
}

/**
 * Moves an open execution to a terminal state and forgets it. `followedUp`: another attempt
 * of the same fire and shard comes next (a retry or a failover run), so the shard's part of
 * the fire is not over yet.
 */
export function closeExecution(core: CoreState,  execution: ExecutionRecord, state: ExecutionStateName, fields: { startedAt?: number; finishedAt?: number; error?: string; result?: string }, followedUp = false, ): void {
  execution.state = state;
  if (fields.startedAt !== undefined) execution.startedAt = fields.startedAt;
  execution.finishedAt = fields.finishedAt || core.now;
  if (fields.error) execution.error = fields.error;
  if (fields.result) execution.result = fields.result;
  core.outbox.saveExecution(execution);
  core.open.delete(execution.id);
  core.queuedAt.delete(execution.id);
  Rollouts.countRun(core, execution);
  const ofJob = core.jobs.get(execution.job);
  if (ofJob !== undefined && execution.revision !== undefined && execution.revision !== ofJob.record.revision) Revisions.forgetUnused(core, ofJob);
  core.cancelling.delete(execution.id);
  core.unknownRuns.delete(execution.id);
  const agent = core.agents.get(execution.agent);
  const freed = agent !== undefined && agent.executions.delete(execution.id);
  const shard = core.jobs.get(execution.job)?.shards[execution.shard];
  let shardFreed = false;
  if (shard !== undefined) {
    shardFreed = shard.running.delete(execution.id);
    if (execution.cause === "daemon" && execution.agent !== "" && execution.agent === shard.owner) shard.daemonEndedAt = core.now;
  }
  if (!followedUp) FireComplete.settleFire(core, execution);
  // The shard's next execution may have waited for this one (overlap: forbid), and a daemon
  // shard's next run for its end: also when it ran on an agent other than the shard's owner
  // (restored for an agent not back yet after a failover, now lost). A run followed up (a retry,
  // a failover re-run) is dispatched by the caller once that run is queued ahead of later fires.
  if (shardFreed && !followedUp) dispatchShard(core, shard!);
  if (freed && agent.maxConcurrent > 0) fillSlots(core, agent);
  if (freed) FireComplete.dispatchFireCompletes(core);
}

/** True when the agent may start one more execution. */
export function hasSlot(core: CoreState, agent: AgentEntry): boolean {
  return agent.maxConcurrent === 0 || agent.executions.size < agent.maxConcurrent;
}

/**
 * Gives an agent's free slots to its waiting executions: highest job priority first, then
 * first in, first out.
 */
export function fillSlots(core: CoreState, agent: AgentEntry): void {
  while (agent.connected && !agent.lost && hasSlot(core, agent)) {
    let best: ShardEntry | undefined;
    let bestPriority = -Infinity;
    let bestSeq = Infinity;
    for (const shard of agent.shards) {
      const head = shard.queue[0];
      if (head === undefined || !headCanStart(core, shard)) continue;
      const priority = priorityOf(core.jobs.get(shard.job)!.record.spec);
      const seq = core.queuedAt.get(head.id) ?? 0;
      if (priority > bestPriority || (priority === bestPriority && seq < bestSeq)) {
        best = shard;
        bestPriority = priority;
        bestSeq = seq;
      }
    }
    if (best === undefined) return;
    dispatchShard(core, best, 1);
  }
}

/** True when the shard's first waiting execution may go to its owner now (slots aside). */
export function headCanStart(core: CoreState, shard: ShardEntry): boolean {
  const head = shard.queue[0];
  if (head === undefined || (head.notBefore ?? 0) > core.now || dispatchTarget(core, shard) === undefined) return false;
  return shard.running.size === 0 || core.jobs.get(shard.job)!.record.spec.overlap !== "forbid";
}

export function canStartNow(core: CoreState, job: JobEntry, shard: ShardEntry): boolean {
  const target = dispatchTarget(core, shard);
  if (shard.queue.length > 0 || target === undefined || !hasSlot(core, target)) return false;
  return job.record.spec.overlap !== "forbid" || shard.running.size === 0;
}

/** The agent the shard's work can be sent to now, if any. */
export function dispatchTarget(core: CoreState, shard: ShardEntry): AgentEntry | undefined {
  if (shard.owner === undefined || shard.revoking) return undefined;
  const agent = core.agents.get(shard.owner);
  if (agent === undefined || !agent.connected || agent.lost || agent.inherited?.shards.has(shard) === true) return undefined;
  // A leaving agent (it said Goodbye) starts nothing new and refuses what it is sent; a run sent
  // to it would come back lost and be sent to it again. The shard waits for its next owner,
  // which placement gives it (after a restarted controller's startup grace, at the latest).
  if (agent.leaving) return undefined;
  return agent;
}

/** Sends the shard's waiting executions to its owner, as its overlap policy allows. */
export function dispatchShard(core: CoreState, shard: ShardEntry, max = Infinity): void {
  const agent = dispatchTarget(core, shard);
  const job = core.jobs.get(shard.job);
  if (agent !== undefined && job !== undefined) DaemonRuns.ensureDaemonRun(core, job, shard);
  if (agent === undefined || job === undefined || shard.queue.length === 0) return;
  const spec = job.record.spec;
  const contexts: ExecutionContext[] = [];
  while (shard.queue.length > 0 && contexts.length < max && hasSlot(core, agent)) {
    if ((shard.queue[0]!.notBefore ?? 0) > core.now) break;
    // A run pinned to a revision its shard's owner cannot run (a handler only some agents
    // declare, after the shard moved) waits for an owner that can (Waiting says so).
    const runSpec = Revisions.specOf(job, shard.queue[0]!.revision);
    if (!Placement.runsIt(agent, runSpec.runs)) break;
    if (shard.running.size > 0 && spec.overlap === "forbid") break;
    if (shard.running.size > 0 && spec.overlap === "replace") {
      const stale = [...shard.running].filter((id) => !core.cancelling.has(id));
      for (const id of stale) core.cancelling.add(id);
      // Each to the agent running it: after a failover, an unknown run is another agent's.
      for (const [holder, ids] of byAgent(core, stale)) {
        const on = core.agents.get(holder);
        if (on?.connected === true) core.outbox.send(on.session, { kind: "cancel", executionIds: ids, reason: "replaced by a newer fire (overlap: replace)" });
      }
    }
    const execution = shard.queue.shift()!;
    core.queuedAt.delete(execution.id);
    execution.agent = agent.id;
    shard.running.add(execution.id);
    agent.executions.add(execution.id);
    const disconnectGraceMs = DisconnectGrace.atDispatch(core, execution, runSpec);
    core.outbox.saveExecution(execution);
    contexts.push({
      executionId: execution.id,
      job: execution.job,
      shard: execution.shard,
      shardCount: spec.shards,
      shardParameter: runSpec.shardParameters[execution.shard] ?? "",
      parameter: execution.parameter,
      fireTime: execution.fireTime,
      attempt: execution.attempt,
      revision: execution.revision ?? job.record.revision,
      timeoutMs: runSpec.timeoutSeconds * 1000,
      disconnectGraceMs,
      fencingToken: DisconnectGrace.fencingToken(shard.term, shard.generation),
      assignment: { job: shard.job, shard: shard.shard, term: shard.term, generation: shard.generation },
      traceContext: execution.traceContext ?? NOT_TRACED,
      ...executorOf(runSpec),
      ...(execution.cause === "daemon" ? { daemon: true } : {}),
    });
  }
  if (contexts.length > 0) core.outbox.send(agent.session, { kind: "dispatch", executions: contexts });
}

type ExecutorPart = Pick<ExecutionContext, "handler" | "script" | "http" | "kubernetes">;

/**
 * Each spec's executor part, made once per `runs` of a spec rather than per dispatched
 * execution: a fire's executions then carry one object, which the Dispatch encoder compares by
 * identity to encode the fire's part once (controller/shell/dispatch-encoding.ts), and a pod
 * template is turned into JSON once.
 */
const executorParts = new WeakMap<JobSpec["runs"], ExecutorPart>();

/**
 * The executor part of an execution's context, from what the job runs. `handler` is "" for the
 * other kinds, as the proto's ExecutionContext has always carried it.
 */
export function executorOf(spec: JobSpec): ExecutorPart {
  let part = executorParts.get(spec.runs);
  if (part === undefined) {
    part = executorPart(spec.runs);
    executorParts.set(spec.runs, part);
  }
  return part;
}

function executorPart(runs: JobSpec["runs"]): ExecutorPart {
  switch (runs.kind) {
    case "handler":
      return { handler: runs.handler };
    case "script": {
      const { command, args, env, killGraceSeconds } = runs.script;
      return { handler: "", script: { command, args, env, killGraceMs: killGraceSeconds * 1000 } };
    }
    case "http": {
      const { method, url, headers, body, connectTimeoutSeconds, readTimeoutSeconds } = runs.http;
      return { handler: "", http: { method, url, headers, body, connectTimeoutMs: connectTimeoutSeconds * 1000, readTimeoutMs: readTimeoutSeconds * 1000 } };
    }
    case "kubernetes":
      return { handler: "", kubernetes: kubernetesContext(runs.kubernetes) };
    default:
      return unknownExecutor(runs);
  }
}

function kubernetesContext(kubernetes: KubernetesSpec): NonNullable<ExecutionContext["kubernetes"]> {
  const { template, backoffLimit, ttlSecondsAfterFinished, logContainer } = kubernetes;
  // Specs stored before startTimeoutSeconds existed get its default.
  const startTimeoutSeconds = kubernetes.startTimeoutSeconds ?? DEFAULT_START_TIMEOUT_SECONDS;
  return { podTemplateJson: JSON.stringify(template), backoffLimit, ttlSecondsAfterFinished, logContainer, startTimeoutSeconds };
}

/** Open executions' ids by the agent they were dispatched to. */
function byAgent(core: CoreState, ids: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const id of ids) {
    const holder = core.open.get(id)?.agent ?? "";
    out.set(holder, [...(out.get(holder) ?? []), id]);
  }
  return out;
}
