import type { ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { AssignmentTable, shardKey, type AssignmentRef, type HeldAssignment } from "./assignment-table.js";
import { restoreRun, startDue, takeDispatch, type DispatchPort } from "./dispatch.js";
import { Drain, type DrainPort } from "./drain.js";
import type { AgentEffect, AgentInput, AgentMessage, ControllerMessage, StopState, StreamClose } from "./events.js";
import { Fence } from "./fence.js";
import { Lease } from "./lease.js";
import { HELLO_SEQ, ReportBook } from "./report-book.js";
import { ReconnectPlan } from "./reconnect.js";
import { RunBook, type HeldRun } from "./run-book.js";

export { HALF_CLOSE_WAIT_MS } from "./drain.js";

/** Defaults the controller would send; used only when a Welcome leaves a field at 0. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 500;
export const DEFAULT_LEASE_TTL_MS = 2_000;

/** Settings of an AgentCore. */
export interface AgentCoreOptions {
  /** How long a drain lets runs finish before it aborts them. */
  drainGraceMs: number;
  /** How long a stream may go without a Welcome before the agent gives up on it. */
  welcomeTimeoutMs: number;
  /** The controller replicas, tried in turn while none answers; at least one. */
  addresses: readonly string[];
  /** The reconnect backoff: full jitter from initialMs, doubling up to maxMs. */
  reconnect: { initialMs: number; maxMs: number };
  /** A number in [0, 1), for the backoff's jitter. */
  random: () => number;
}

/**
 * The agent's rules (docs/protocol.md, steps 1-10) as a pure state machine: step(input, now)
 * applies one input, take() hands out what the agent must do, in order, and nextDeadline() says
 * when to step `tick` next. `now` is the agent's monotonic clock in ms; nothing here reads a
 * clock, opens a socket or sets a timer. A driver (agent/runtime/agent.ts, controller/sim/world.ts)
 * carries the effects out and feeds back what happens: the stream's messages and its end, the
 * executors' reports, the start instants it was asked to wait for.
 *
 * Reconnecting is decided here too (reconnect.ts): when, with a backoff that a Welcome or a
 * Redirect resets, and to which controller replica. Taking a Dispatch is dispatch.ts's, and
 * leaving gracefully drain.ts's: both act on the core through a port of its books and steps.
 */
export class AgentCore {
  readonly #options: AgentCoreOptions;
  readonly #table = new AssignmentTable();
  readonly #lease = new Lease();
  readonly #runs = new RunBook();
  readonly #reports = new ReportBook();
  #effects: AgentEffect[] = [];

  #streamOpen = false;
  /** A close-stream effect went out for the open stream: it takes nothing more. */
  #closing = false;
  #welcomed = false;
  /** The last `now` stepped, for decisions made on a report (which carries no time of its own). */
  #lastStepAt = 0;
  #welcomeDeadline: number | undefined;
  #seq = 0n;
  /** The highest heartbeat sequence number acked on the open stream. */
  #ackedSeq = 0n;
  #heartbeatIntervalMs = DEFAULT_HEARTBEAT_INTERVAL_MS;
  #leaseTtlMs = DEFAULT_LEASE_TTL_MS;
  /** The longest the controller dispatches ahead of a fire instant (Welcome.dispatch_ahead_ms). */
  #dispatchAheadMs = 0;
  #nextHeartbeatAt: number | undefined;
  #lastAckAt = 0;
  #drain: Drain | undefined;
  #stopped = false;

  readonly #reconnect: ReconnectPlan;
  readonly #fence: Fence;
  readonly #port: DrainPort & DispatchPort;

  constructor(options: AgentCoreOptions) {
    this.#options = options;
    this.#reconnect = new ReconnectPlan({ addresses: options.addresses, ...options.reconnect, random: options.random });
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the port's getters read the core's private state
    const core = this;
    this.#port = {
      table: this.#table,
      runs: this.#runs,
      reports: this.#reports,
      get welcomed() { return core.#welcomed; },
      get awaitingWelcome() { return core.#streamOpen && !core.#welcomed && !core.#closing; },
      get seqSent() { return core.#seq; },
      get seqAcked() { return core.#ackedSeq; },
      get stopped() { return core.#stopped; },
      get lastStepAt() { return core.#lastStepAt; },
      get takesCrossedDispatch() { return core.#drain?.takesCrossedDispatch === true; },
      get shuttingDown() { return core.#stopped || (core.#drain !== undefined && !core.#drain.takesCrossedDispatch); },
      get fenced() { return core.#fence.fenced; },
      get dispatchAheadMs() { return core.#dispatchAheadMs; },
      emit: (effect) => this.#effects.push(effect),
      log: (level, fields, message) => this.#log(level, fields, message),
      flush: () => this.#flush(),
      send: (message) => this.#send(message),
      release: (refs) => this.#release(refs),
      stopAll: (state, reason) => this.#stopAll(state, reason),
      stopHeartbeats: () => (this.#nextHeartbeatAt = undefined),
      heartbeat: (now) => this.#heartbeat(now),
      stop: () => (this.#stopped = true),
      fenceIfLapsed: (now) => this.#fence.ifLapsed(now),
      report: (update) => this.#onReport(update),
    };
    this.#fence = new Fence({
      lease: this.#lease,
      runs: this.#runs,
      table: this.#table,
      get leaseTtlMs() { return core.#leaseTtlMs; },
      emit: (effect) => this.#effects.push(effect),
      log: (level, fields, message) => this.#log(level, fields, message),
      close: (close) => this.#close(close),
    });
  }

  /** Applies one input at `now` (monotonic ms). */
  step(input: AgentInput, now: number): void {
    this.#lastStepAt = now;
    switch (input.kind) {
      case "start":
        if (this.#stopped || this.#streamOpen) return;
        this.#reconnect.start(now);
        return this.#tick(now);
      case "stream-opened":
        return this.#streamOpened(now);
      case "stream-closed":
        return this.#streamClosed(now);
      case "run-report":
        return this.#onReport(input.update);
      case "start-due":
        return startDue(this.#port, input.executionId, now);
      case "restore-run":
        return restoreRun(this.#port, input.executionId, input.job, input.assignment);
      case "flush":
        return this.#flush();
      case "tick":
        return this.#tick(now);
      case "drain":
        return this.#startDrain(input.reason, now);
      case "stop":
        return this.#stop();
      default:
        return this.#onMessage(input, now);
    }
  }

  /** The effects decided since the last take(), in order. */
  take(): AgentEffect[] {
    const effects = this.#effects;
    this.#effects = [];
    return effects;
  }

  /** True while effects wait to be taken. */
  get hasEffects(): boolean {
    return this.#effects.length > 0;
  }

  /** When to step `tick` next (monotonic ms), or undefined when nothing is due. */
  nextDeadline(): number | undefined {
    // Asked after every step the driver takes (several per run): no closure, no allocation.
    if (this.#stopped) return undefined;
    let next: number | undefined;
    if (!this.#streamOpen) next = earlier(next, this.#reconnect.connectAt);
    if (!this.#fence.fenced && this.#lease.expiresAt !== Number.NEGATIVE_INFINITY) next = earlier(next, this.#lease.expiresAt);
    next = earlier(next, this.#fence.nextDeadline());
    if (this.#streamOpen && !this.#closing && !this.#welcomed) next = earlier(next, this.#welcomeDeadline);
    if (this.#streamOpen && !this.#closing && this.#welcomed) next = earlier(next, this.#nextHeartbeatAt);
    if (this.#drain !== undefined) next = earlier(earlier(next, this.#drain.graceEndsAt), this.#drain.endAt);
    return next;
  }

  // What the driver reads.

  /** The controller address in use (a Redirect changes it). */
  get address(): string {
    return this.#reconnect.address;
  }

  /** A Redirect closes the open stream: its end is not a failure of the leader's address. */
  get redirecting(): boolean {
    return this.#reconnect.redirecting;
  }

  /** A stream is open (from the core's side: until stream-closed). */
  get streamOpen(): boolean {
    return this.#streamOpen;
  }

  /** A Welcome arrived on the open stream. */
  get welcomed(): boolean {
    return this.#welcomed;
  }

  /** The lease lapsed and no Welcome has renewed it since. */
  get fenced(): boolean {
    return this.#fence.fenced;
  }

  /** Why the lease lapsed, while fenced. */
  get fenceReason(): string {
    return this.#fence.reason;
  }

  get draining(): boolean {
    return this.#drain !== undefined;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** True while the lease holds at `now`. */
  leaseValid(now: number): boolean {
    return this.#lease.valid(now);
  }

  /** The lease TTL in use (the Welcome's). */
  get leaseTtlMs(): number {
    return this.#leaseTtlMs;
  }

  /** The shards held, by job then shard. */
  shards(): HeldAssignment[] {
    return this.#table.list();
  }

  /** Ids of the executions held (waiting for their instant or running). */
  runIds(): string[] {
    return this.#runs.ids();
  }

  /** How many executions are held. */
  get runCount(): number {
    return this.#runs.size;
  }

  // The stream.

  #streamOpened(now: number): void {
    this.#reconnect.opened();
    this.#streamOpen = true;
    this.#closing = false;
    this.#welcomed = false;
    this.#seq = 0n;
    this.#ackedSeq = 0n;
    this.#welcomeDeadline = now + this.#options.welcomeTimeoutMs;
    this.#lease.forgetPending();
    this.#lease.sent(HELLO_SEQ, now);
    // Everything waiting in the outbox is covered by these lists.
    const executions = [...this.#runs.forHello(), ...this.#reports.forHello()];
    this.#effects.push({ kind: "send", message: { kind: "hello", held: this.#table.list().map(refOnly), executions } });
  }

  #streamClosed(now: number): void {
    if (!this.#streamOpen) return;
    const welcomed = this.#welcomed;
    this.#streamOpen = false;
    this.#welcomed = false;
    this.#welcomeDeadline = undefined;
    this.#nextHeartbeatAt = undefined;
    // What was not sent goes into the next Hello; what was sent but not confirmed too.
    this.#reports.streamEnded();
    this.#drain?.streamClosed();
    if (!this.#stopped) this.#reconnect.ended(welcomed, now, this.#fence.reconnectCap(now));
  }

  #close(close: Omit<StreamClose, "kind">): void {
    if (!this.#streamOpen || this.#closing) return;
    this.#closing = true;
    if (close.unresponsive) this.#reconnect.unresponsive();
    this.#effects.push({ kind: "close-stream", ...close });
  }

  #send(message: AgentMessage): void {
    // After the drain's half-close the stream takes nothing more; a late Release is moot.
    if (!this.#streamOpen || this.#closing || this.#drain?.ending) return;
    this.#effects.push({ kind: "send", message });
  }

  #log(level: "debug" | "info" | "warn", fields: Record<string, unknown>, message: string): void {
    this.#effects.push({ kind: "log", level, fields, message });
  }

  #onMessage(message: ControllerMessage, now: number): void {
    if (!this.#streamOpen || this.#closing) return;
    if (!this.#table.acceptTerm(message.term)) {
      this.#log("warn", { term: message.term, highestTerm: this.#table.highestTerm, kind: message.kind }, "ignored a message from an older controller term");
      // A Welcome from a deposed leader means this whole stream talks to the wrong controller.
      if (message.kind === "welcome") {
        this.#close({ code: "failed-precondition", reason: "the controller's term is older than one already seen", unresponsive: false, newConnection: false });
      }
      return;
    }
    switch (message.kind) {
      case "welcome":
        return this.#onWelcome(message, now);
      case "heartbeat-ack":
        return this.#onAck(message.seq, message.leaseTtlMs, now);
      case "assignments":
        return this.#onAssignments(message);
      case "dispatch":
        return takeDispatch(this.#port, message.runs, message.atUnixMs, now);
      case "cancel":
        for (const id of message.executionIds) {
          if (this.#runs.has(id)) this.#effects.push({ kind: "stop-run", executionId: id, state: ExecutionState.CANCELLED, reason: message.reason || "cancelled" });
        }
        return;
      case "redirect":
        if (!message.leaderAddress) {
          this.#log("warn", {}, "ignored a Redirect without an address");
          return;
        }
        this.#reconnect.redirect(message.leaderAddress);
        this.#effects.push({ kind: "redirected", leaderAddress: message.leaderAddress });
        return;
      case "unknown":
        // A newer controller may say things this agent does not know; they are not for it.
        this.#log("warn", {}, "ignored a controller message of an unknown kind");
        return;
    }
  }

  #onWelcome(welcome: Extract<ControllerMessage, { kind: "welcome" }>, now: number): void {
    if (this.#welcomed) {
      this.#log("warn", {}, "ignored a second Welcome on one stream");
      return;
    }
    this.#heartbeatIntervalMs = welcome.heartbeatIntervalMs || DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.#leaseTtlMs = welcome.leaseTtlMs || DEFAULT_LEASE_TTL_MS;
    this.#dispatchAheadMs = welcome.dispatchAheadMs;
    this.#welcomed = true;
    this.#welcomeDeadline = undefined;
    this.#reconnect.welcomed();
    this.#lastAckAt = now;
    if (this.#lease.ack(HELLO_SEQ, this.#leaseTtlMs)) this.#fence.renewed(now);
    this.#reports.confirm(HELLO_SEQ);
    if (!this.#lease.valid(now)) {
      // It came after the lease it grants had lapsed (the Hello took longer than a lease to be
      // answered): it grants nothing. Staying on the stream would not help, since the controller
      // counts the lease valid and would keep dispatching work this agent must refuse.
      if (this.#fence.fenced) {
        this.#close({ code: "unavailable", reason: "the Welcome came after the lease it grants had lapsed", unresponsive: true, newConnection: true });
      } else {
        this.#fence.lapse("the Welcome came after the lease it grants had lapsed", now);
      }
      return;
    }
    this.#nextHeartbeatAt = now + this.#heartbeatIntervalMs;
    this.#effects.push({
      kind: "welcomed",
      term: welcome.term,
      sessionId: welcome.sessionId,
      heartbeatIntervalMs: this.#heartbeatIntervalMs,
      leaseTtlMs: this.#leaseTtlMs,
    });
    this.#flush();
    this.#drain?.welcomed(now);
  }

  // Heartbeats, the lease and the fence.

  #tick(now: number): void {
    if (this.#stopped) return;
    const connectAt = this.#reconnect.connectAt;
    if (!this.#streamOpen && connectAt !== undefined && now >= connectAt) {
      this.#reconnect.opened();
      this.#effects.push({ kind: "open-stream", address: this.#reconnect.address });
    }
    this.#fence.tick(now);
    const live = this.#streamOpen && !this.#closing;
    if (live && !this.#welcomed && this.#welcomeDeadline !== undefined && now >= this.#welcomeDeadline) {
      this.#welcomeDeadline = undefined;
      this.#close({ code: "unavailable", reason: `no Welcome within ${this.#options.welcomeTimeoutMs} ms`, unresponsive: true, newConnection: false });
    }
    if (live && this.#welcomed && this.#nextHeartbeatAt !== undefined && now >= this.#nextHeartbeatAt) {
      // A fixed cadence, as an interval timer keeps; one beat after a long pause, not a burst.
      this.#nextHeartbeatAt = Math.max(this.#nextHeartbeatAt + this.#heartbeatIntervalMs, now + 1);
      this.#heartbeat(now);
    }
    this.#drain?.tick(now);
  }

  #heartbeat(now: number): void {
    if (now - this.#lastAckAt > this.#leaseTtlMs) {
      // Nothing came back for a whole lease: the stream is stuck even if it looks open.
      this.#close({ code: "unavailable", reason: `no heartbeat ack for ${this.#leaseTtlMs} ms`, unresponsive: true, newConnection: false });
      return;
    }
    this.#seq++;
    this.#lease.sent(this.#seq, now);
    this.#send({ kind: "heartbeat", seq: this.#seq });
  }

  #onAck(seq: bigint, leaseTtlMs: number, now: number): void {
    // A leader may grant less than the Welcome's TTL, to stay within its own leadership lease.
    if (!this.#lease.ack(seq, leaseTtlMs || this.#leaseTtlMs)) return;
    this.#lastAckAt = now;
    if (seq > this.#ackedSeq) this.#ackedSeq = seq;
    this.#reports.confirm(seq);
    this.#fence.renewed(now);
    this.#drain?.maybeEnd(now);
  }

  // Assignments.

  #onAssignments(update: { snapshot: boolean; add: AssignmentRef[]; revoke: AssignmentRef[] }): void {
    const changes = this.#table.applyRefs(update);
    for (const ref of changes.ignored) {
      this.#log("debug", { job: ref.job, shard: ref.shard, term: String(ref.term), generation: String(ref.generation) }, "ignored an older assignment");
    }
    for (const dropped of changes.dropped) {
      this.#stopOn(dropped, ExecutionState.LOST, `shard ${shardKey(dropped.job, dropped.shard)} is no longer assigned to this agent`);
    }
    const releases: AssignmentRef[] = [...changes.unknownRevokes];
    if (this.#drain) {
      // A leaving agent gives back whatever it is handed, once the controller has read its
      // Goodbye (the drain releases it then).
      this.#table.revokeAll();
    } else {
      for (const held of changes.revoked) {
        if (this.#runs.countOn(held) === 0) {
          this.#table.remove(held.job, held.shard);
          releases.push(held);
        }
      }
    }
    this.#release(releases);
    this.#effects.push({ kind: "assignments-changed" });
    this.#drain?.maybeEnd(undefined);
  }

  /**
   * Sends a Release, after the reports of the runs that just ended: the controller must see a
   * run finish before its shard is released, or it would count the run as lost. Without a
   * session nothing is sent; the shards are simply left out of the next Hello, which says the
   * same.
   */
  #release(refs: AssignmentRef[]): void {
    if (refs.length === 0 || !this.#welcomed) return;
    this.#flush();
    this.#log("info", { shards: refs.map((ref) => shardKey(ref.job, ref.shard)) }, "releasing shards");
    this.#send({ kind: "release", assignments: refs.map(refOnly) });
  }

  // Runs.

  /** Every report comes through here: an executor's, or one the core made. */
  #onReport(reported: ExecutionUpdate): void {
    const run = this.#runs.get(reported.executionId);
    const update = this.#fence.checkOutcome(run, reported, this.#lastStepAt);
    if (update.state === ExecutionState.RUNNING) {
      if (run) run.running = update;
    } else {
      this.#runs.end(update.executionId);
    }
    if (this.#reports.add(update)) this.#effects.push({ kind: "flush-soon" });
    if (run && update.state !== ExecutionState.RUNNING) this.#runEnded(run);
  }

  #runEnded(run: HeldRun): void {
    // A leaving agent's shards go back as the drain says.
    if (this.#drain) return this.#drain.maybeEnd(undefined);
    const held = this.#table.get(run.job, run.shard);
    if (held?.revoking && this.#runs.countOn(held) === 0) {
      this.#table.remove(held.job, held.shard);
      this.#release([held]);
      this.#effects.push({ kind: "assignments-changed" });
    }
  }

  #stopOn(shard: HeldAssignment, state: StopState, reason: string): void {
    for (const run of this.#runs.list()) {
      if (run.job === shard.job && run.shard === shard.shard) this.#effects.push({ kind: "stop-run", executionId: run.executionId, state, reason });
    }
  }

  #stopAll(state: StopState, reason: string): void {
    for (const run of this.#runs.list()) this.#effects.push({ kind: "stop-run", executionId: run.executionId, state, reason });
  }

  /**
   * Sends the reports of this turn as one message. Before the Welcome they wait for it; without
   * a stream they are dropped, because the next Hello lists both the runs still going and every
   * terminal report not yet confirmed.
   */
  #flush(): void {
    if (!this.#reports.pending) return;
    if (!this.#streamOpen) {
      this.#reports.dropOutbox();
      return;
    }
    if (!this.#welcomed) return;
    // Confirmed by the ack of the next heartbeat, which the stream delivers after this batch.
    const updates = this.#reports.takeBatch(this.#seq + 1n);
    this.#send({ kind: "execution-updates", updates });
  }

  // Leaving.

  #startDrain(reason: string, now: number): void {
    if (this.#drain || this.#stopped) return;
    this.#drain = new Drain(reason, this.#options.drainGraceMs, this.#port);
    this.#drain.begin(now);
  }

  #stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopAll(ExecutionState.LOST, "the agent stopped");
  }

}

/** The sooner of two deadlines, either of which may be absent. */
function earlier(a: number | undefined, b: number | undefined): number | undefined {
  return b === undefined || (a !== undefined && a <= b) ? a : b;
}

/** An assignment's plain ref, without the held flags. */
function refOnly(ref: AssignmentRef): AssignmentRef {
  return { job: ref.job, shard: ref.shard, term: ref.term, generation: ref.generation };
}
