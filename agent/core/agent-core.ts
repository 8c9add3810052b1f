import { create } from "@bufbuild/protobuf";
import { ExecutionUpdateSchema, type ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { AssignmentTable, shardKey, type AssignmentRef, type HeldAssignment } from "./assignment-table.js";
import type { AgentEffect, AgentInput, AgentMessage, ControllerMessage, DispatchedRun, StopState, StreamClose } from "./events.js";
import { Lease } from "./lease.js";
import { HELLO_SEQ, ReportBook } from "./report-book.js";
import { ReconnectPlan } from "./reconnect.js";
import { NO_SHARD, RunBook, type HeldRun } from "./run-book.js";

/** Defaults the controller would send; used only when a Welcome leaves a field at 0. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 500;
export const DEFAULT_LEASE_TTL_MS = 2_000;
/** How long a drained agent waits for the controller to close the stream after its half-close. */
export const HALF_CLOSE_WAIT_MS = 2_000;

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

interface Drain {
  reason: string;
  /** When the grace ends (monotonic ms); undefined once the drain is ending. */
  graceEndsAt: number | undefined;
  /** The stream was half-closed; the drain ends when it closes, or at endAt. */
  ending: boolean;
  endAt: number | undefined;
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
 * Redirect resets, and to which controller replica.
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
  #heartbeatIntervalMs = DEFAULT_HEARTBEAT_INTERVAL_MS;
  #leaseTtlMs = DEFAULT_LEASE_TTL_MS;
  /** The longest the controller dispatches ahead of a fire instant (Welcome.dispatch_ahead_ms). */
  #dispatchAheadMs = 0;
  #nextHeartbeatAt: number | undefined;
  #lastAckAt = 0;
  #fenced = false;
  #fenceReason = "";
  #drain: Drain | undefined;
  #stopped = false;

  readonly #reconnect: ReconnectPlan;

  constructor(options: AgentCoreOptions) {
    this.#options = options;
    this.#reconnect = new ReconnectPlan({ addresses: options.addresses, ...options.reconnect, random: options.random });
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
        return this.#startDue(input.executionId, now);
      case "restore-run":
        return this.#restore(input.executionId, input.job, input.assignment);
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
    let next: number | undefined;
    const consider = (at: number | undefined): void => {
      if (at !== undefined && (next === undefined || at < next)) next = at;
    };
    if (this.#stopped) return undefined;
    if (!this.#streamOpen) consider(this.#reconnect.connectAt);
    if (!this.#fenced && this.#lease.expiresAt !== Number.NEGATIVE_INFINITY) consider(this.#lease.expiresAt);
    if (this.#streamOpen && !this.#closing && !this.#welcomed) consider(this.#welcomeDeadline);
    if (this.#streamOpen && !this.#closing && this.#welcomed) consider(this.#nextHeartbeatAt);
    consider(this.#drain?.graceEndsAt);
    consider(this.#drain?.endAt);
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
    return this.#fenced;
  }

  /** Why the lease lapsed, while fenced. */
  get fenceReason(): string {
    return this.#fenceReason;
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
    if (this.#drain?.ending || this.#nothingToHandBack()) this.#finishDrain();
    if (!this.#stopped) this.#reconnect.ended(welcomed, now);
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
        return this.#onDispatch(message.runs, message.atUnixMs, now);
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
    if (this.#lease.ack(HELLO_SEQ, this.#leaseTtlMs)) this.#leaseRenewed();
    this.#reports.confirm(HELLO_SEQ);
    this.#nextHeartbeatAt = now + this.#heartbeatIntervalMs;
    this.#effects.push({
      kind: "welcomed",
      term: welcome.term,
      sessionId: welcome.sessionId,
      heartbeatIntervalMs: this.#heartbeatIntervalMs,
      leaseTtlMs: this.#leaseTtlMs,
    });
    this.#flush();
    if (this.#drain) {
      this.#sayGoodbye();
      this.#maybeEndDrain(now);
    }
  }

  // Heartbeats, the lease and the fence.

  #tick(now: number): void {
    if (this.#stopped) return;
    const connectAt = this.#reconnect.connectAt;
    if (!this.#streamOpen && connectAt !== undefined && now >= connectAt) {
      this.#reconnect.opened();
      this.#effects.push({ kind: "open-stream", address: this.#reconnect.address });
    }
    if (!this.#fenced && this.#lease.expiresAt !== Number.NEGATIVE_INFINITY && !this.#lease.valid(now)) this.#fence(this.#lapsed());
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
    const drain = this.#drain;
    if (drain?.graceEndsAt !== undefined && now >= drain.graceEndsAt) this.#drainGraceOver(now);
    if (drain?.endAt !== undefined && now >= drain.endAt) this.#finishDrain();
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
    this.#reports.confirm(seq);
    this.#leaseRenewed();
  }

  #leaseRenewed(): void {
    if (!this.#fenced) return;
    this.#fenced = false;
    this.#effects.push({ kind: "unfenced" });
  }

  #lapsed(): string {
    return `no heartbeat ack within the lease of ${this.#leaseTtlMs} ms`;
  }

  /**
   * The lease lapsed: the shard may already belong to someone else, so stop everything now. A
   * process paused past its lease runs its overdue timers oldest first, so this is checked
   * wherever work would start, not only at the lease's deadline.
   */
  #fenceIfLapsed(now: number): void {
    if (!this.#fenced && !this.#lease.valid(now)) this.#fence(this.#lapsed());
  }

  #fence(reason: string): void {
    this.#fenced = true;
    this.#fenceReason = reason;
    this.#log("warn", { reason, running: this.#runs.size }, "fenced: aborting every run and starting nothing new");
    this.#stopAll(ExecutionState.LOST, `fenced: ${reason}`);
    // Its shards may belong to another agent by now: it claims none of them in its next Hello,
    // where a restarted controller would take a stale claim for a live one. The controller's
    // snapshot on the next stream says which are still its own.
    for (const held of this.#table.list()) this.#table.remove(held.job, held.shard);
    this.#effects.push({ kind: "assignments-changed" }, { kind: "fenced", reason });
    // An open stream that let the lease lapse is stuck or partitioned; a fresh one is the cure,
    // on a fresh connection (a new stream on the old one would wait behind its stuck TCP), to
    // another controller replica first if there are several.
    this.#close({ code: "unavailable", reason: `fenced: ${reason}`, unresponsive: true, newConnection: true });
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
    // A leaving agent gives back whatever it is handed.
    const revoked = this.#drain ? this.#table.revokeAll() : changes.revoked;
    const releases: AssignmentRef[] = [...changes.unknownRevokes];
    for (const held of revoked) {
      if (this.#runs.countOn(held) === 0) {
        this.#table.remove(held.job, held.shard);
        releases.push(held);
      }
    }
    this.#release(releases);
    this.#effects.push({ kind: "assignments-changed" });
    this.#maybeEndDrain(undefined);
  }

  /** Releases every revoking shard with nothing running, if any. */
  #releaseIdle(): void {
    const releases: AssignmentRef[] = [];
    for (const held of this.#table.list()) {
      if (held.revoking && this.#runs.countOn(held) === 0) {
        this.#table.remove(held.job, held.shard);
        releases.push(held);
      }
    }
    if (releases.length === 0) return;
    this.#release(releases);
    this.#effects.push({ kind: "assignments-changed" });
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

  #onDispatch(runs: DispatchedRun[], atUnixMs: number, now: number): void {
    for (const run of runs) {
      if (this.#runs.has(run.executionId)) {
        this.#log("debug", { executionId: run.executionId }, "ignored a dispatch of an execution already running");
        continue;
      }
      const refusal = this.#refusal(run, now);
      if (refusal !== undefined) {
        this.#log("warn", { executionId: run.executionId, reason: refusal }, "refused a dispatch");
        this.#made(run.job, run.executionId, ExecutionState.LOST, refusal, atUnixMs);
        continue;
      }
      if (run.unrunnable !== undefined) {
        this.#made(run.job, run.executionId, ExecutionState.FAILED, run.unrunnable, atUnixMs);
        continue;
      }
      // A completion hook run belongs to no shard: no revoke waits for it.
      this.#runs.hold(run.executionId, run.job, run.hook ? NO_SHARD : run.assignment!.shard);
      // Dispatched ahead of its fire instant: started at it, by the agent's clock, if the lease
      // still holds then.
      this.#effects.push({ kind: "hold-run", executionId: run.executionId, fireTimeUnixMs: run.fireTimeUnixMs, maxWaitMs: this.#dispatchAheadMs });
    }
  }

  /** A report of the core's own making, on a run it never held. */
  #made(job: string, executionId: string, state: ExecutionState, error: string, atUnixMs: number): void {
    const update = create(ExecutionUpdateSchema, { executionId, state, finishedAtUnixMs: BigInt(Math.trunc(atUnixMs)), error });
    this.#effects.push({ kind: "report", job, update });
    this.#onReport(update);
  }

  /** Why a dispatched execution may not run here, or undefined when it may. */
  #refusal(run: DispatchedRun, now: number): string | undefined {
    if (this.#drain || this.#stopped) return "the agent is shutting down";
    // The lease lapsed and its deadline has not been stepped yet: fence now, which closes the
    // stream, rather than refuse dispatch after dispatch on a stream the controller still trusts.
    this.#fenceIfLapsed(now);
    if (this.#fenced) return "the agent holds no valid lease";
    // A completion hook run is fenced by the lease alone, checked above.
    if (run.hook) return undefined;
    if (run.assignment === undefined) return "the dispatch names no assignment";
    const wanted = run.assignment;
    if (this.#table.holds(wanted)) return undefined;
    const held = this.#table.get(wanted.job, wanted.shard);
    const named = `${shardKey(wanted.job, wanted.shard)} at (${wanted.term}, ${wanted.generation})`;
    if (held === undefined) return `the agent does not hold ${named}`;
    return held.revoking
      ? `the agent is releasing ${named}`
      : `the agent holds ${shardKey(held.job, held.shard)} at (${held.term}, ${held.generation}), not ${named}`;
  }

  /** A held run's instant came: it starts only under a valid lease (else the fence stops it). */
  #startDue(executionId: string, now: number): void {
    const run = this.#runs.get(executionId);
    if (run === undefined || run.started || this.#stopped) return;
    this.#fenceIfLapsed(now);
    if (this.#fenced) return;
    run.started = true;
    this.#effects.push({ kind: "start-run", executionId });
  }

  #restore(executionId: string, job: string, assignment: AssignmentRef): void {
    if (this.#runs.has(executionId)) return;
    this.#table.restore(assignment);
    this.#runs.hold(executionId, job, assignment.shard).started = true;
    this.#effects.push({ kind: "start-run", executionId });
  }

  /** Every report comes through here: an executor's, or one the core made. */
  #onReport(update: ExecutionUpdate): void {
    const run = this.#runs.get(update.executionId);
    if (update.state === ExecutionState.RUNNING) {
      if (run) run.running = update;
    } else {
      this.#runs.end(update.executionId);
    }
    if (this.#reports.add(update)) this.#effects.push({ kind: "flush-soon" });
    if (run && update.state !== ExecutionState.RUNNING) this.#runEnded(run);
  }

  #runEnded(run: HeldRun): void {
    const held = this.#table.get(run.job, run.shard);
    if (held?.revoking && this.#runs.countOn(held) === 0) {
      this.#table.remove(held.job, held.shard);
      this.#release([held]);
      this.#effects.push({ kind: "assignments-changed" });
    }
    this.#maybeEndDrain(undefined);
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
    this.#drain = { reason, graceEndsAt: now + this.#options.drainGraceMs, ending: false, endAt: undefined };
    this.#log("info", { reason, graceMs: this.#options.drainGraceMs, running: this.#runs.size }, "draining");
    this.#table.revokeAll();
    this.#effects.push({ kind: "assignments-changed" });
    if (this.#welcomed) this.#sayGoodbye();
    else if (this.#nothingToHandBack()) this.#finishDrain();
    this.#maybeEndDrain(now);
  }

  #sayGoodbye(): void {
    const drain = this.#drain;
    if (!drain) return;
    this.#flush();
    this.#send({ kind: "goodbye", reason: drain.reason });
    this.#releaseIdle();
  }

  /** Once nothing runs and a controller is listening, release the rest and half-close. */
  #maybeEndDrain(now: number | undefined): void {
    const drain = this.#drain;
    if (!drain || drain.ending || this.#stopped || this.#runs.size > 0 || !this.#welcomed) return;
    this.#releaseIdle();
    this.#flush();
    drain.ending = true;
    drain.graceEndsAt = undefined;
    this.#nextHeartbeatAt = undefined;
    this.#log("info", {}, "drained; closing the stream");
    this.#effects.push({ kind: "half-close" });
    drain.endAt = (now ?? this.#lastStepAt) + HALF_CLOSE_WAIT_MS;
  }

  /**
   * A draining agent with no controller to talk to, nothing running and no report to deliver
   * has nothing to wait for: its lease moves its shards without it.
   */
  #nothingToHandBack(): boolean {
    return this.#drain !== undefined && !this.#welcomed && this.#runs.size === 0 && this.#reports.unconfirmedCount === 0;
  }

  #drainGraceOver(now: number): void {
    const drain = this.#drain;
    if (!drain || drain.ending || this.#stopped) return;
    drain.graceEndsAt = undefined;
    this.#log("warn", { running: this.#runs.size }, "drain grace over: aborting what still runs");
    this.#stopAll(ExecutionState.LOST, `the agent is shutting down; the drain grace of ${this.#options.drainGraceMs} ms passed`);
    if (this.#welcomed) {
      this.#maybeEndDrain(now);
    } else {
      this.#log("warn", {}, "no controller reachable within the drain grace; leaving without a goodbye");
      this.#finishDrain();
    }
  }

  #finishDrain(): void {
    if (!this.#drain || this.#stopped) return;
    this.#stopped = true;
    this.#drain.graceEndsAt = undefined;
    this.#drain.endAt = undefined;
    this.#effects.push({ kind: "drained" });
  }

  #stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopAll(ExecutionState.LOST, "the agent stopped");
  }

}

/** An assignment's plain ref, without the held flags. */
function refOnly(ref: AssignmentRef): AssignmentRef {
  return { job: ref.job, shard: ref.shard, term: ref.term, generation: ref.generation };
}
