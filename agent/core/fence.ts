import { create } from "@bufbuild/protobuf";
import { ExecutionUpdateSchema, type ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { AssignmentTable } from "./assignment-table.js";
import type { AgentEffect, StreamClose } from "./events.js";
import type { Lease } from "./lease.js";
import type { HeldRun, RunBook } from "./run-book.js";

/** The states a run's own outcome is reported in (not a stop the agent or the controller asked for). */
const OUTCOMES: ReadonlySet<ExecutionState> = new Set([ExecutionState.SUCCEEDED, ExecutionState.FAILED, ExecutionState.TIMED_OUT]);

/** What the fence needs of the agent core: its books, the lease TTL in use, and its steps. */
export interface FencePort {
  readonly lease: Lease;
  readonly runs: RunBook;
  readonly table: AssignmentTable;
  readonly leaseTtlMs: number;
  emit(effect: AgentEffect): void;
  log(level: "debug" | "info" | "warn", fields: Record<string, unknown>, message: string): void;
  close(close: Omit<StreamClose, "kind">): void;
}

/**
 * The fence (docs/protocol.md, step 5, "Fencing: when the lease lapses"), with the disconnect
 * grace: once the lease lapses the agent starts nothing new, forgets its shards and closes the
 * stream; what has not started, or has no grace, stops LOST at once; a started run with a grace
 * goes on until the lapse plus its grace, unless a Welcome renews the lease first. Also the
 * rules a lapse puts on a run's outcome and on the reconnect backoff. Pure: the caller passes
 * every time in.
 */
export class Fence {
  readonly #port: FencePort;
  #fenced = false;
  #reason = "";

  constructor(port: FencePort) {
    this.#port = port;
  }

  /** The lease lapsed and no Welcome or ack has renewed it since. */
  get fenced(): boolean {
    return this.#fenced;
  }

  /** Why the lease lapsed, while fenced. */
  get reason(): string {
    return this.#reason;
  }

  /** While fenced, when the first run going on in its grace is to be aborted. */
  nextDeadline(): number | undefined {
    if (!this.#fenced) return undefined;
    let next: number | undefined;
    for (const run of this.#port.runs.list()) if (run.abortAt !== undefined && (next === undefined || run.abortAt < next)) next = run.abortAt;
    return next;
  }

  /**
   * Fences now if the lease lapsed at `now`. A process paused past its lease runs its overdue
   * timers oldest first, so this is checked wherever work would start, not only at the lease's
   * deadline.
   */
  ifLapsed(now: number): void {
    if (!this.#fenced && !this.#port.lease.valid(now)) this.lapse(this.#lapsed(), now);
  }

  /** The tick's part: fence at the lease's deadline, and abort the runs whose grace is over. */
  tick(now: number): void {
    if (!this.#fenced && this.#port.lease.expiresAt !== Number.NEGATIVE_INFINITY && !this.#port.lease.valid(now)) this.lapse(this.#lapsed(), now);
    if (this.#fenced) this.#abortPastGrace(now);
  }

  /** The lease lapsed (or a Welcome came too late to grant one): the shards may be another agent's by now. */
  lapse(reason: string, now: number): void {
    const port = this.#port;
    this.#fenced = true;
    this.#reason = reason;
    // Counted from the lapse, not from now: a process frozen past the grace aborts at once.
    const lapsedAt = port.lease.expiresAt;
    const graced = port.runs.list().filter((run) => run.started && run.graceMs > 0);
    for (const run of graced) run.abortAt = lapsedAt + run.graceMs;
    port.log(
      "warn",
      { reason, running: port.runs.size, goingOn: graced.length },
      graced.length === 0
        ? "fenced: aborting every run and starting nothing new"
        : `fenced: starting nothing new; ${graced.length} started run(s) go on for their disconnect grace while a controller is sought`,
    );
    for (const run of port.runs.list()) {
      if (run.abortAt === undefined) port.emit({ kind: "stop-run", executionId: run.executionId, state: ExecutionState.LOST, reason: `fenced: ${reason}` });
    }
    this.#abortPastGrace(now);
    // It claims none of its shards in its next Hello, where a restarted controller would take a
    // stale claim for a live one. The controller's snapshot on the next stream says which are
    // still its own.
    for (const held of port.table.list()) port.table.remove(held.job, held.shard);
    port.emit({ kind: "assignments-changed" });
    port.emit({ kind: "fenced", reason });
    // An open stream that let the lease lapse is stuck or partitioned; a fresh one is the cure,
    // on a fresh connection (a new stream on the old one would wait behind its stuck TCP), to
    // another controller replica first if there are several.
    port.close({ code: "unavailable", reason: `fenced: ${reason}`, unresponsive: true, newConnection: true });
  }

  /**
   * An ack or a Welcome renewed the lease from its heartbeat's (or Hello's) send time. A fenced
   * agent unfences only if that lease still holds now: a Welcome that comes after the lease it
   * would start has lapsed grants nothing, and the runs going on in their grace keep their clock.
   */
  renewed(now: number): void {
    const port = this.#port;
    if (!this.#fenced || !port.lease.valid(now)) return;
    this.#fenced = false;
    // A controller answers again within their grace: the runs that went on are the agent's
    // again (its Hello listed them, and the controller counts them as running or cancels them).
    const kept = port.runs.list().filter((run) => run.abortAt !== undefined);
    for (const run of kept) run.abortAt = undefined;
    if (kept.length > 0) port.log("info", { runs: kept.map((run) => run.executionId) }, "a controller answered within the disconnect grace: the runs that went on carry on");
    port.emit({ kind: "unfenced" });
  }

  /**
   * A run's report, as the controller must get it: an outcome that comes once the lease has
   * lapsed and the run's disconnect grace is over (a process that was frozen, whose fence has
   * not run yet) is reported LOST, since the fire may have run elsewhere meanwhile. Within the
   * grace it counts: the controller holds the fire for the run until then.
   */
  checkOutcome(run: HeldRun | undefined, update: ExecutionUpdate, now: number): ExecutionUpdate {
    if (run === undefined || !OUTCOMES.has(update.state) || !this.#settledTooLate(run, now)) return update;
    const state = ExecutionState[update.state] ?? String(update.state);
    const error = `finished (${state}) after the agent's lease lapsed${this.#fenced ? ` (${this.#reason})` : ""}: the fire may have run elsewhere, so this outcome is not used`;
    this.#port.log("warn", { executionId: update.executionId, state }, "a run finished after the lease lapsed: reported lost");
    return create(ExecutionUpdateSchema, { ...update, state: ExecutionState.LOST, error, result: "" });
  }

  /**
   * The longest reconnect wait worth making at `now`. While the lease holds, or runs go on in
   * their disconnect grace, a backoff that waits past the lease (or the grace) is wasted: the
   * agent fences, or aborts those runs, while a controller may be back already. Each wait is then
   * at most half a lease (full jitter below that), so an agent tries at least twice per lease;
   * otherwise (undefined) the backoff grows to its max.
   */
  reconnectCap(now: number): number | undefined {
    const holding = this.#port.lease.valid(now) || this.#port.runs.list().some((run) => run.started);
    return holding ? Math.max(1, Math.floor(this.#port.leaseTtlMs / 2)) : undefined;
  }

  #settledTooLate(run: HeldRun, now: number): boolean {
    const lapsedAt = this.#port.lease.expiresAt;
    if (lapsedAt === Number.NEGATIVE_INFINITY || this.#port.lease.valid(now)) return false;
    return !(run.graceMs > 0 && now < lapsedAt + run.graceMs);
  }

  /** Aborts, while fenced, every run whose disconnect grace is over. */
  #abortPastGrace(now: number): void {
    for (const run of this.#port.runs.list()) {
      if (run.abortAt === undefined || run.abortAt > now) continue;
      run.abortAt = undefined;
      const reason = `fenced: ${this.#reason}, and no controller answered within the disconnect grace of ${run.graceMs / 1000} s`;
      this.#port.emit({ kind: "stop-run", executionId: run.executionId, state: ExecutionState.LOST, reason });
    }
  }

  #lapsed(): string {
    return `no heartbeat ack within the lease of ${this.#port.leaseTtlMs} ms`;
  }
}
