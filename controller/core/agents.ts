/**
 * Agents and their leases: Hello (and one process per agent id), heartbeats, leases granted and
 * expired, goodbye, streams lost, drain and uncordon, and the snapshot of an agent's shards.
 */
import { ShardlineError } from "../../shared/errors.js";
import { validateHello } from "./hello-rules.js";
import type { AgentHello, AssignmentRef } from "./messages.js";
import { at } from "./waiting-reasons.js";
import type { AgentEntry, ShardEntry } from "./model.js";
import { CoreState, notFound } from "./core-state.js";
import * as Executions from "./executions.js";
import * as FireComplete from "./fire-complete.js";
import * as Placement from "./placement.js";
import * as Recovery from "./recovery.js";
import * as DisconnectGrace from "./disconnect-grace.js";
import * as Clock from "./clock.js";

/**
 * A new stream said Hello. Refuses a malformed one with a ShardlineError (the shell ends the
 * stream with it), and ends the stream of a second process claiming an id another process holds
 * (see refuseSecondProcess); otherwise welcomes the agent, takes back what it still holds, and
 * sends it its whole set of shards. `peer` is where the stream comes from, for operators.
 */
export function hello(core: CoreState, session: string, hello: AgentHello, now: number, peer = ""): void {
  Clock.advance(core, now);
  validateHello(hello);
  if (core.sessions.has(session)) {
    throw new ShardlineError("failed-precondition", "hello: sent twice on one stream; send it once, first");
  }
  let agent = core.agents.get(hello.agentId);
  const instance = hello.instanceId ?? "";
  if (agent !== undefined && refuseSecondProcess(core, session, agent, instance, peer)) return;
  const returning = agent !== undefined;
  // A new process of an agent whose previous one lost its stream within its lease: what it replaces.
  const replaced =
    agent !== undefined && instance !== "" && agent.instance !== "" && agent.instance !== instance && agent.leaseExpiry > core.now
      ? { leaseEnd: agent.leaseExpiry, instance: agent.instance }
      : undefined;
  if (agent?.connected) {
    // The agent opened a new stream before the old one was seen to die: the new one wins.
    core.sessions.delete(agent.session);
    core.outbox.close(agent.session, "replaced by a new stream of the same agent");
  }
  agent ??= addAgentEntry(core, hello.agentId, { lost: false });
  agent.session = session;
  agent.instance = hello.instanceId ?? "";
  agent.address = peer;
  agent.connected = true;
  agent.lost = false;
  agent.leaving = false;
  agent.labels = { ...hello.labels };
  agent.capacity = hello.capacity;
  agent.handlers = new Set(hello.handlers);
  agent.executors = new Set(hello.executors);
  agent.maxConcurrent = hello.maxConcurrent;
  agent.version = hello.version;
  agent.connectedAt = core.now;
  agent.leaseExpiry = leaseFromNow(core);
  core.sessions.set(session, agent.id);
  armLeaseTimer(core, agent);
  core.outbox.send(session, {
    kind: "welcome",
    sessionId: session,
    heartbeatIntervalMs: core.config.heartbeatIntervalMs,
    leaseTtlMs: grantedTtl(core),
    dispatchAheadMs: core.config.dispatchAheadMs,
  });
  if (replaced !== undefined) takeOver(core, agent, replaced, peer);
  else core.emit(returning ? "agent.reconnected" : "agent.joined", `agent ${agent.id} connected`, { agent: agent.id });

  const { finished, missing } = Recovery.reattachExecutions(core, agent, hello.executions);
  Recovery.adoptHeld(core, agent, hello.held);
  sendSnapshot(core, agent);
  Placement.agentsChanged(core);
  for (const execution of missing) {
    if (core.open.get(execution.id) === execution) Executions.loseExecution(core, execution, `agent ${agent.id} reconnected without it`);
  }
  for (const report of finished) Executions.applyReport(core, agent, report);
  for (const shard of agent.shards) Executions.dispatchShard(core, shard);
  FireComplete.dispatchFireCompletes(core);
}

/**
 * One process holds an agent id at a time (invariant 7). While the id's lease is valid under a
 * connected process, a Hello from another (a copy-pasted id, a replacement pod started early)
 * ends with ALREADY_EXISTS naming the holder, and nothing of the holder changes. A Hello that
 * names no instance, or the holder's own, is the same process reconnecting; one that comes
 * after the holder lost its stream takes the id over (see takeOver). Returns true when refused.
 */
export function refuseSecondProcess(core: CoreState, session: string, holder: AgentEntry, instance: string, peer: string): boolean {
  if (instance === "" || holder.instance === "" || instance === holder.instance || holder.leaseExpiry <= core.now || !holder.connected) return false;
  const left = `${((holder.leaseExpiry - core.now) / 1000).toFixed(1)} s`;
  const from = peer === "" ? "" : ` from ${peer}`;
  holder.refusedHellos++;
  holder.lastRefusal = `${at(core.now)}${from} (instance ${shortInstance(instance)})`;
  const reason =
    `agent id ${JSON.stringify(holder.id)} is held by another process (instance ${shortInstance(holder.instance)}, connected` +
    `${holder.address === "" ? "" : ` from ${holder.address}`}); its lease runs for another ${left}. ` +
    "Two processes cannot share an agent id: give each its own --id, or start this one with --wait-for-id to take the id over once the other stops";
  core.outbox.close(session, reason, "already-exists");
  core.emit("agent.refused", `refused a second process${from} under agent id ${holder.id}: ${reason}`, { agent: holder.id });
  return true;
}

/**
 * A new process (a restarted container, a replacement pod) takes over the id of one that lost
 * its stream while its lease still runs. That one may be dead, or alive behind a partition and
 * still running its shards until its lease ends: so its shards stay fenced for the new process
 * until then (not sent, not dispatched, not moved), and its runs the new one does not report
 * stay its own until then too (a Kubernetes Job the new process finds and reports is adopted at
 * once). Called once the entry speaks for the new process, before its Hello's runs are read.
 */
export function takeOver(core: CoreState, agent: AgentEntry, replaced: { leaseEnd: number; instance: string }, peer: string): void {
  const until = Math.max(agent.inherited?.until ?? 0, replaced.leaseEnd);
  const previous = replaced.instance;
  agent.inherited = { shards: new Set(agent.shards), runs: new Set(agent.executions), until, instance: previous };
  core.timers.push(until, { kind: "inherited", agent: agent.id, incarnation: agent.incarnation });
  core.emit(
    "agent.replaced",
    `agent ${agent.id}: a new process (instance ${shortInstance(agent.instance)}${peer === "" ? "" : ` from ${peer}`}) replaces one that lost its stream ` +
      `(instance ${shortInstance(previous)}); its ${agent.shards.size} shards and ${agent.executions.size} runs stay that one's until its lease expires at ${at(until)}`,
    { agent: agent.id },
  );
}

/**
 * The previous process's lease is over: its shards go to the new one, and its runs nobody
 * reported go on as unknown for their disconnect grace (that process may still run them).
 */
export function endInheritedFence(core: CoreState, agent: AgentEntry): void {
  const inherited = agent.inherited!;
  agent.inherited = undefined;
  for (const id of inherited.runs) {
    const execution = core.open.get(id);
    if (execution !== undefined && execution.agent === agent.id) {
      const reason = `agent ${agent.id}'s previous process (instance ${shortInstance(inherited.instance)}) lost its stream and its lease expired before the run finished`;
      DisconnectGrace.presumeGoing(core, execution, agent, inherited.until, reason, inherited.instance);
    }
  }
  const handed: AssignmentRef[] = [];
  for (const shard of inherited.shards) {
    if (shard.owner !== agent.id) continue;
    // Being moved away from the old process when it was lost: its lease is over, so it moves now.
    if (shard.revoking) {
      Placement.unassign(core, shard);
      continue;
    }
    // A new generation: the shard now belongs to the new process, never to the one fenced.
    Placement.assign(core, shard, agent);
    handed.push(core.refOf(shard));
  }
  if (agent.connected && handed.length > 0) core.outbox.send(agent.session, { kind: "assignments", snapshot: false, add: handed, revoke: [] });
  for (const shard of inherited.shards) Executions.dispatchShard(core, shard);
  Placement.reconcileSoon(core);
}

/**
 * When an agent's lease ends in the controller's view, renewed now: the lease granted (one
 * TTL, or less under limitLeases), plus a margin for the agent's clock running slow and its
 * fence timer firing late, so that the agent has always fenced itself before its shards move.
 */
export function leaseFromNow(core: CoreState): number {
  return core.now + grantedTtl(core) + core.config.leaseMarginMs;
}

/**
 * The controller could not run for `stalledMs` just before `now` (a long pause for garbage
 * collection, a starved CPU): it could not have read any agent's heartbeat meanwhile, so no lease
 * may lapse for that time. Every lease still valid when the stall began (a replaced process's
 * fence, and an unknown run's disconnect grace, too) is extended by the stall, before any timer
 * due now runs: the report that would have settled it may be waiting unread. Extending the
 * controller's view is always safe: it only delays giving a shard or a fire to another agent;
 * the agent still fences itself, and aborts its runs, by its own clock.
 */
export function noteStall(core: CoreState, stalledMs: number, now: number): void {
  const began = now - stalledMs;
  let extended = 0;
  for (const agent of core.agents.values()) {
    if (agent.leaseExpiry > began) {
      agent.leaseExpiry += stalledMs;
      extended++;
    }
    const inherited = agent.inherited;
    if (inherited !== undefined && inherited.until > began) {
      inherited.until += stalledMs;
      core.timers.push(inherited.until, { kind: "inherited", agent: agent.id, incarnation: agent.incarnation });
    }
  }
  DisconnectGrace.extendGraces(core, began, stalledMs);
  core.emit("controller.stalled", `the controller could not run for ${Math.round(stalledMs)} ms; ${extended} agent lease${extended === 1 ? "" : "s"} extended by as much`, {
    stall: { ms: stalledMs, leasesExtended: extended },
  });
  Clock.advance(core, now);
}

export function heartbeat(core: CoreState, session: string, seq: number, now: number): void {
  Clock.advance(core, now);
  const agent = core.agentOf(session);
  agent.leaseExpiry = leaseFromNow(core);
  core.outbox.send(session, { kind: "heartbeat-ack", seq, leaseExpiresAt: agent.leaseExpiry, leaseTtlMs: grantedTtl(core) });
}

/**
 * Bounds the leases granted from now on: none lasts past `until` (Unix ms), this controller's
 * own leadership lease when several replicas share an etcd store; undefined lifts the bound.
 * A new leader is elected only after that lease ended, so it finds no agent lease of this
 * controller still valid.
 */
export function limitLeases(core: CoreState, until: number | undefined, now: number): void {
  Clock.advance(core, now);
  core.leaseCap = until;
}

/**
 * How long, from now, until every agent lease this controller granted has ended in its view
 * (lease plus margin), and every lease of its predecessors too (its startup grace): what a
 * leader stepping down records for the next one.
 */
export function leasesEndWithin(core: CoreState, now: number): number {
  Clock.advance(core, now);
  let latest = Math.max(core.now, core.startupGraceUntil);
  for (const agent of core.agents.values()) latest = Math.max(latest, agent.leaseExpiry, agent.inherited?.until ?? 0);
  return latest - core.now;
}

/** The lease an ack grants now, in ms from the agent's heartbeat: one TTL, or less under limitLeases. */
export function grantedTtl(core: CoreState): number {
  if (core.leaseCap === undefined) return core.config.leaseTtlMs;
  // At least 1 ms: 0 would mean "the Welcome's TTL" on the wire.
  return Math.max(1, Math.min(core.config.leaseTtlMs, core.leaseCap - core.now));
}

/** The agent stopped running these shards after a revoke. */
export function release(core: CoreState, session: string, released: readonly AssignmentRef[], now: number): void {
  Clock.advance(core, now);
  const agent = core.agentOf(session);
  const touched = new Set<string>();
  // Not held by this agent at that (term, generation): normal after a race (a revoke of a shard
  // the agent no longer held, a release overtaken by a newer assignment), and never a reason to
  // touch the shard, which may be another agent's.
  const ignored: AssignmentRef[] = [];
  for (const ref of released) {
    const job = core.jobs.get(ref.job);
    const shard = job?.shards[ref.shard] ?? job?.retired.get(ref.shard) ?? core.deletedJobShards.get(ref.job)?.get(ref.shard);
    // A replaced process's shard is not this process's to give back: it moves when that one's lease ends.
    const inherited = shard !== undefined && agent.inherited?.shards.has(shard) === true;
    if (shard === undefined || inherited || shard.owner !== agent.id || shard.term !== ref.term || shard.generation !== ref.generation) {
      ignored.push(ref);
      continue;
    }
    // Only its own runs: a run still held for another agent (restored after a failover, its
    // agent not back yet) is that agent's to report.
    Executions.loseRunning(core, shard, "its agent released the shard before the run finished", agent.id);
    Placement.unassign(core, shard);
    core.emit("shard.released", `${agent.id} released ${ref.job}/${ref.shard}`, {
      job: ref.job,
      shard: ref.shard,
      agent: agent.id,
    });
    touched.add(ref.job);
  }
  if (touched.size > 0) Placement.reconcileSoon(core);
  if (ignored.length > 0) {
    const shown = ignored.slice(0, 5).map((r) => `${r.job}/${r.shard} @ (${r.term}, ${r.generation})`);
    core.emit(
      "shard.release-ignored",
      `ignored ${ignored.length} release${ignored.length === 1 ? "" : "s"} from ${agent.id} of shards it does not hold at that (term, generation): ` +
        `${shown.join(", ")}${ignored.length > shown.length ? ", ..." : ""}`,
      { agent: agent.id },
    );
  }
}

/** The agent is leaving on purpose: move its shards away now. */
export function goodbye(core: CoreState, session: string, reason: string, now: number): void {
  Clock.advance(core, now);
  const agent = core.agentOf(session);
  agent.leaving = true;
  core.emit("agent.draining", `agent ${agent.id} is leaving (${reason || "no reason given"})`, { agent: agent.id });
  Placement.agentsChanged(core);
}

/** The stream ended, for whatever reason. Unknown sessions are ignored. */
export function streamClosed(core: CoreState, session: string, now: number): void {
  Clock.advance(core, now);
  const id = core.sessions.get(session);
  if (id === undefined) return;
  core.sessions.delete(session);
  const agent = core.agents.get(id)!;
  agent.connected = false;
  if (agent.shards.size === 0 && agent.executions.size === 0) {
    core.agents.delete(agent.id);
    core.emit("agent.left", `agent ${agent.id} left`, { agent: agent.id });
    return;
  }
  agent.lost = true;
  core.emit(
    "agent.lost",
    `agent ${agent.id} lost its stream; its shards are fenced until its lease expires at ${new Date(agent.leaseExpiry).toISOString()}`,
    { agent: agent.id },
  );
  // failover: fast trades the no-duplicate guarantee for speed: move at once.
  for (const shard of [...agent.shards]) {
    if (core.jobs.get(shard.job)?.record.spec.failover !== "fast") continue;
    Executions.loseRunning(core, shard, `agent ${agent.id} lost its stream (failover: fast)`, agent.id);
    Placement.unassign(core, shard);
  }
  if (agent.shards.size === 0 && agent.executions.size === 0) core.agents.delete(agent.id);
  Placement.agentsChanged(core);
}

export function drainAgent(core: CoreState, id: string, now: number): void {
  Clock.advance(core, now);
  const agent = core.agents.get(id);
  if (agent === undefined) throw notFound("agent", id);
  agent.cordoned = true;
  core.emit("agent.cordoned", `agent ${id} drained: its shards move away`, { agent: id });
  Placement.agentsChanged(core);
}

export function uncordonAgent(core: CoreState, id: string, now: number): void {
  Clock.advance(core, now);
  const agent = core.agents.get(id);
  if (agent === undefined) throw notFound("agent", id);
  agent.cordoned = false;
  core.emit("agent.uncordoned", `agent ${id} may receive shards again`, { agent: id });
  Placement.agentsChanged(core);
}

export function armLeaseTimer(core: CoreState, agent: AgentEntry): void {
  if (agent.leaseTimerArmed) return;
  agent.leaseTimerArmed = true;
  core.timers.push(agent.leaseExpiry, { kind: "lease", agent: agent.id, incarnation: agent.incarnation });
}

export function expireLease(core: CoreState, agent: AgentEntry): void {
  if (agent.connected) {
    core.sessions.delete(agent.session);
    core.outbox.close(agent.session, "lease expired: no heartbeat within the lease");
    agent.connected = false;
  }
  core.emit("agent.lease-expired", `agent ${agent.id}'s lease expired; its shards move`, { agent: agent.id });
  // Its runs go on as unknown for their disconnect grace (or are lost now, without one); the
  // entry stays while it holds any, so that the agent can report them when it comes back.
  const reason = `agent ${agent.id}'s lease expired before the run finished`;
  for (const id of [...agent.executions]) {
    const execution = core.open.get(id);
    if (execution !== undefined) DisconnectGrace.presumeGoing(core, execution, agent, agent.leaseExpiry, reason);
  }
  for (const shard of [...agent.shards]) Placement.unassign(core, shard);
  agent.lost = true;
  if (agent.executions.size === 0) core.agents.delete(agent.id);
  Placement.agentsChanged(core);
}

/**
 * Tells an agent its whole set of shards; revoking ones are revoked again after it. A replaced
 * process's shards are left out while fenced, except one on which this process reported a run
 * it took over (a Kubernetes Job): an agent stops the runs of a shard its snapshot leaves out,
 * so leaving it out would stop the very run the controller adopted. It stays fenced all the same.
 */
export function sendSnapshot(core: CoreState, agent: AgentEntry): void {
  const inherited = agent.inherited;
  const fencedOut = (s: ShardEntry): boolean =>
    inherited !== undefined && inherited.shards.has(s) && ![...s.running].some((id) => agent.executions.has(id) && !inherited.runs.has(id));
  const owned = [...agent.shards].filter((s) => !fencedOut(s));
  core.outbox.send(agent.session, {
    kind: "assignments",
    snapshot: true,
    add: owned.map((s) => core.refOf(s)),
    revoke: owned.filter((s) => s.revoking).map((s) => core.refOf(s)),
  });
}

/** Registers an agent that has no stream yet; hello() fills in what it declares. */
export function addAgentEntry(core: CoreState, id: string, state: { lost: boolean; leaseExpiry?: number }): AgentEntry {
  const agent: AgentEntry = {
    id,
    incarnation: ++core.incarnations,
    session: "",
    instance: "",
    address: "",
    refusedHellos: 0,
    connected: false,
    lost: state.lost,
    leaving: false,
    cordoned: false,
    labels: {},
    capacity: 1,
    handlers: new Set(),
    executors: new Set(),
    maxConcurrent: 0,
    version: "",
    leaseExpiry: state.leaseExpiry ?? 0,
    leaseTimerArmed: false,
    connectedAt: 0,
    shards: new Set(),
    executions: new Set(),
  };
  core.agents.set(id, agent);
  return agent;
}

/** The start of an instance id, enough to tell two processes apart in a message. */
export function shortInstance(instance: string): string {
  return instance.length <= 12 ? instance : `${instance.slice(0, 8)}...`;
}
