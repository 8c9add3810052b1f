import { EventEmitter } from "node:events";
import type { Logger } from "../../shared/logging.js";
import type { ControllerCore } from "../core/controller-core.js";
import type { CoreEvent } from "../core/messages.js";
import type { Effects, Outbound, SessionClose } from "../core/outbox.js";
import { traceLogFields } from "./fire-tracing.js";
import type { ExecutionRecord, Store, StoreBatch } from "../store/store.js";

/** Where the driver hands messages for agents once they are durable. */
export type Deliver = (messages: Outbound[], closes: SessionClose[]) => void;

/** How often the driver checks that the event loop runs. */
const TURN_CHECK_MS = 100;
/** A gap past the check's period by more than this is a stall the core hears of. */
const STALL_THRESHOLD_MS = 150;
/** Batches handed to the store and not yet durable past which new fires wait (see flush). */
const STORE_BEHIND_BATCHES = 2;
/** How late the ticker may run before the event loop counts as behind, and new fires wait (see flush). */
const LOOP_BEHIND_MS = 200;

/**
 * Runs the core against the real clock and carries out its effects, in this order
 * (docs/architecture.md, "The driver's contract"):
 *
 * 1. apply a step at `now` (an agent's message, an admin call, or the armed timer); the steps of
 *    one event-loop turn form one batch;
 * 2. `take()` the batch's effects (placement runs there, once per batch);
 * 3. commit their writes to the store, batches in the order they were made;
 * 4. once that commit is durable, and after every earlier batch's messages: send the messages, in
 *    order, then close the sessions asked to close. One exception: a heartbeat's ack goes out at
 *    once, with the batch taken, when everything its agent sent before that heartbeat is durable
 *    already and none of that agent's earlier acks still waits (see postFromAgent);
 * 5. publish the events;
 * 6. arm one timer for `nextDeadline()`.
 *
 * Steps made in one event-loop turn are flushed together as one batch: its writes go to the store at once, and its messages
 * go out once those writes are durable, after the messages of every earlier batch. The store
 * commits batches in the order they were made, so later batches are written while earlier ones
 * sync (the store may group them), yet nothing is sent before it is durable: that is what keeps
 * a fire from being dispatched before its cursor is stored.
 */
export class CoreDriver {
  deliver: Deliver = () => {};
  private pipeline: Promise<void> = Promise.resolve();
  private pendingFlush: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt: number | undefined;
  private stopped = false;
  /** When the event loop was last seen to run (a step, or the ticker): see noteTurn. */
  private lastTurn = 0;
  private ticker: NodeJS.Timeout | undefined;
  /** A commit failed: nothing more is sent. */
  private failed = false;
  /** The number of the batch that steps go into now, and of the last batch sent. */
  /** Batches handed to the store and not yet durable. */
  private unsettled = 0;
  /** Whether the ticker last ran LOOP_BEHIND_MS late or more: the loop has more to do than it can. */
  private loopBehind = false;
  private lastTick = 0;
  private collecting = 1;
  private sent = 0;
  /** Per agent session: the batch of its last message that may write (anything but a heartbeat). */
  private readonly lastWriteOf = new Map<string, number>();
  /** Per agent session: its heartbeats' acks waiting in the pipeline, which a later ack must not overtake. */
  private readonly acksWaiting = new Map<string, number>();
  private readonly emitter = new EventEmitter();

  constructor(
    private readonly core: ControllerCore,
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly onFatal: (error: unknown) => void,
    private readonly clock: () => number = Date.now,
  ) {
    this.emitter.setMaxListeners(0);
  }

  /** Flushes what the core decided at construction (missed fires) and arms its first timer. */
  start(): Promise<void> {
    this.lastTurn = this.clock();
    this.lastTick = this.lastTurn;
    this.ticker = setInterval(() => {
      const now = this.clock();
      this.noteLoopLag(now - this.lastTick - TURN_CHECK_MS);
      this.lastTick = now;
      this.noteTurn(now);
    }, TURN_CHECK_MS);
    this.ticker.unref();
    return this.schedule();
  }

  /**
   * Notes that the event loop runs at `now`. A gap since the last turn much longer than the
   * ticker's period means the controller could not run meanwhile (it read no heartbeat): the core
   * hears of it before anything else at `now`, so that no lease lapses for that time. Every step
   * and the ticker note their turn, so the core learns of a stall before its own timers run.
   */
  private noteTurn(now: number): void {
    const gap = now - this.lastTurn;
    this.lastTurn = now;
    if (this.stopped || gap <= TURN_CHECK_MS + STALL_THRESHOLD_MS) return;
    const stalledMs = gap - TURN_CHECK_MS;
    this.logger.warn({ stalledMs }, `the controller could not run for ${Math.round(stalledMs)} ms; agent leases are extended by as much`);
    this.core.noteStall(stalledMs, now);
    void this.schedule();
  }

  /**
   * Applies a step now and resolves with its result once its effects are durable and sent.
   * A step that throws changes nothing the caller relies on and rejects with its error.
   */
  async run<T>(step: (now: number) => T): Promise<T> {
    const now = this.clock();
    this.noteTurn(now);
    const result = step(now);
    await this.schedule();
    return result;
  }

  /** Applies a step now; its effects go out with the turn's batch. Throws what the step throws. */
  post(step: (now: number) => void): void {
    const now = this.clock();
    this.noteTurn(now);
    step(now);
    void this.schedule();
  }

  /**
   * post() for a message of an agent's stream, which lets its heartbeats' acks skip the queue.
   * An agent's lease runs from when it sent a heartbeat until the ack arrives, so an ack waiting
   * behind other work (an admin call's commit queued behind history reads, a large batch) can
   * cost a well-behaved agent its lease. An ack promises only that what its agent sent before the
   * heartbeat is processed and durable (docs/protocol.md, "Confirmed reports"): when that
   * agent's last other message was in a batch already sent, and none of its earlier acks still
   * waits (acks stay in order), the ack is sent as soon as its batch is taken, before that
   * batch's commit and the earlier batches' sends.
   */
  postFromAgent(session: string, heartbeat: boolean, step: (now: number) => void): void {
    if (!heartbeat) this.lastWriteOf.set(session, this.collecting);
    this.post(step);
  }

  /** Forgets what postFromAgent noted of a session whose stream closed. */
  forgetSession(session: string): void {
    this.lastWriteOf.delete(session);
    this.acksWaiting.delete(session);
  }

  /** Resolves once everything decided so far is durable and sent. */
  idle(): Promise<void> {
    return this.pendingFlush ?? this.pipeline;
  }

  onEvent(listener: (event: CoreEvent) => void): () => void {
    this.emitter.on("event", listener);
    return () => this.emitter.off("event", listener);
  }

  /** Called with each batch of effects once it is durable and sent, before its events are published. */
  onApplied(listener: (effects: Effects) => void): () => void {
    this.emitter.on("applied", listener);
    return () => this.emitter.off("applied", listener);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.ticker);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): Promise<void> {
    if (this.pendingFlush === undefined) {
      this.pendingFlush = new Promise<void>((resolve) => {
        setImmediate(() => {
          this.pendingFlush = undefined;
          resolve(this.flush());
        });
      });
    }
    return this.pendingFlush;
  }

  private flush(): Promise<void> {
    const batch = this.collecting++;
    // A store or an event loop behind holds new fires back until it catches up: past its
    // capacity the controller makes fewer fires, rather than queueing commits, reports and the
    // heartbeats behind them without bound until every agent's lease lapses.
    const effects = this.takeAcksDue(this.core.take({ holdFires: this.behind }));
    const durable = hasWrites(effects.persist) ? this.store.commit(effects.persist) : undefined;
    if (durable !== undefined) {
      this.unsettled++;
      // A failure is awaited in turn below; this only counts the batch out and keeps it from counting as unhandled meanwhile.
      durable.then(
        () => this.settled(),
        () => {},
      );
    }
    this.pipeline = this.pipeline.then(async () => {
      await this.apply(effects, durable);
      this.sent = batch;
      for (const { session, command } of effects.messages) {
        if (command.kind !== "heartbeat-ack") continue;
        const waiting = (this.acksWaiting.get(session) ?? 0) - 1;
        if (waiting > 0) this.acksWaiting.set(session, waiting);
        else this.acksWaiting.delete(session);
      }
    });
    this.armTimer();
    return this.pipeline;
  }

  /**
   * Sends at once the batch's heartbeat acks that wait for nothing (see postFromAgent) and
   * returns the effects without them; notes the others, which wait in the pipeline.
   */
  private takeAcksDue(effects: Effects): Effects {
    if (this.failed || !effects.messages.some((m) => m.command.kind === "heartbeat-ack")) return effects;
    const due: Outbound[] = [];
    const rest: Outbound[] = [];
    for (const message of effects.messages) {
      const { session, command } = message;
      if (command.kind !== "heartbeat-ack") {
        rest.push(message);
      } else if ((this.lastWriteOf.get(session) ?? 0) <= this.sent && !this.acksWaiting.has(session)) {
        due.push(message);
      } else {
        rest.push(message);
        this.acksWaiting.set(session, (this.acksWaiting.get(session) ?? 0) + 1);
      }
    }
    if (due.length > 0) this.deliver(due, []);
    return { ...effects, messages: rest };
  }

  private async apply(effects: Effects, durable: Promise<void> | undefined): Promise<void> {
    if (this.failed) return;
    if (durable !== undefined) {
      try {
        await durable;
      } catch (error) {
        // Sending what is not durable would break the guarantees the store exists for; nor may
        // any later batch go out, since its decisions rest on this one.
        this.failed = true;
        this.stopped = true;
        this.onFatal(error);
        return;
      }
    }
    if (effects.messages.length > 0 || effects.closes.length > 0) this.deliver(effects.messages, effects.closes);
    this.emitter.emit("applied", effects);
    let saved: Map<string, ExecutionRecord> | undefined;
    const savedExecution = (id: string): ExecutionRecord | undefined => {
      saved ??= new Map((effects.persist.executions ?? []).map((e) => [e.id, e]));
      return saved.get(id) ?? this.core.openExecution(id);
    };
    for (const event of effects.events) {
      this.log(event, savedExecution);
      this.emitter.emit("event", event);
    }
  }

  /**
   * Logs an event; one about an execution carries the trace_id and span_id of the trace context
   * the execution runs under, found among the batch's saved records or the open executions
   * (looked up only for lines logged at the level set).
   */
  private log(event: CoreEvent, savedExecution: (id: string) => ExecutionRecord | undefined): void {
    const verbose = event.type.startsWith("execution.") && event.type !== "execution.lost" && event.type !== "execution.failover";
    const level = verbose ? "debug" : "info";
    if (!this.logger.isLevelEnabled(level)) return;
    const traceContext = event.executionId === undefined ? undefined : savedExecution(event.executionId)?.traceContext;
    const fields = { event: event.type, job: event.job, shard: event.shard, agent: event.agent, execution: event.executionId, ...traceLogFields(traceContext) };
    this.logger[level](fields, event.message);
  }

  /** The store is STORE_BEHIND_BATCHES commits behind, or the event loop LOOP_BEHIND_MS. */
  private get behind(): boolean {
    return this.unsettled >= STORE_BEHIND_BATCHES || this.loopBehind;
  }

  /** A batch is durable: fires held while the store was behind go ahead once it has caught up. */
  private settled(): void {
    this.unsettled--;
    if (this.unsettled === STORE_BEHIND_BATCHES - 1) this.releaseFires();
  }

  /** The ticker ran `lateMs` after its period: fires wait while the loop is behind, and go ahead once it has caught up. */
  private noteLoopLag(lateMs: number): void {
    const behind = lateMs >= LOOP_BEHIND_MS;
    if (behind === this.loopBehind) return;
    this.loopBehind = behind;
    if (!behind) this.releaseFires();
  }

  private releaseFires(): void {
    if (this.behind || this.stopped) return;
    this.core.releaseFires();
    this.armTimer();
  }

  private armTimer(): void {
    if (this.stopped) return;
    const deadline = this.core.nextDeadline();
    if (deadline === this.timerAt) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = deadline;
    if (deadline === undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = undefined;
      if (this.stopped) return;
      this.post((now) => this.core.tick(now));
      // setTimeout may wake a millisecond early; re-arm for whatever is still ahead.
      this.armTimer();
    }, Math.max(0, deadline - this.clock()));
  }
}

function hasWrites(batch: StoreBatch): boolean {
  return (
    (batch.jobs?.length ?? 0) > 0 ||
    (batch.deletedJobs?.length ?? 0) > 0 ||
    (batch.cursors?.length ?? 0) > 0 ||
    (batch.executions?.length ?? 0) > 0 ||
    (batch.logs?.length ?? 0) > 0
  );
}
