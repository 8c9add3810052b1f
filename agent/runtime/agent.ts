/**
 * The agent's driver: the I/O around the agent core (agent/core/agent-core.ts), which holds
 * every rule of docs/protocol.md. How it drives the core, in order:
 *
 * 1. Everything that happens becomes one input stepped into the core, with the monotonic clock's
 *    reading: a controller message (decoded from the stream), the stream's end, an executor's
 *    report, a run's start instant, the timer, drain() and stop().
 * 2. It then takes the core's effects and carries them out in order: opens a stream, sends on
 *    it, closes it, prepares, starts and stops runs, logs, counts and emits events. An effect that makes
 *    something happen at once (a run that stops reports synchronously; closing the stream ends
 *    it synchronously) steps that into the core at once; its effects are carried out after the
 *    ones already taken.
 * 3. Last, it arms one timer for the core's nextDeadline(), which steps `tick`.
 *
 * What stays here besides: the gRPC channel (a new one when the core names another address or
 * asks for a fresh connection), the executors, the on-time start timers shared by the process's
 * agents, and what is said to an operator (logs, /readyz reasons, metrics).
 */
import { EventEmitter } from "node:events";
import { status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { ShardlineError } from "../../shared/errors.js";
import {
  AgentService,
  type ConnectRequestSchema,
  type ConnectResponse,
  type ConnectResponseSchema,
  type Dispatch,
  type ExecutionContext,
  type ExecutionUpdate,
  type Hello,
} from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState, type Assignment } from "../../shared/gen/shardline/v1/types_pb.js";
import { createClient, type Client, type GrpcStatus, type MessageStream } from "../../shared/grpc/index.js";
import { partsWithin } from "../../shared/grpc/message-parts.js";
import type { Readiness } from "../../shared/http-server.js";
import { AgentCore } from "../core/agent-core.js";
import { refOf, type AssignmentRef } from "../core/assignment-table.js";
import type { AgentEffect, AgentInput, AgentMessage, ControllerMessage, DispatchedRun } from "../core/events.js";
import { ExecutionListening } from "../executors/execution-listeners.js";
import type { ExecutionRun, Executor } from "../executors/execution-run.js";
import { ExecutionTelemetry } from "../executors/execution-telemetry.js";
import { HandlerExecutor } from "../executors/handler/handler-executor.js";
import { HttpExecutor } from "../executors/http/http-executor.js";
import { KubernetesExecutor } from "../executors/kubernetes/kubernetes-executor.js";
import { ScriptExecutor } from "../executors/script/script-executor.js";
import { idHeldError } from "./agent-identity.js";
import { AgentMetrics } from "./agent-metrics.js";
import { resolveAgentOptions, type AgentOptions, type ResolvedAgentOptions } from "./agent-options.js";
import { processStarts, type Starter } from "./on-time-starts.js";
import { ConnectFailures } from "./connect-failures.js";

/**
 * Where the agent stands. `connecting`: no session yet (or between sessions) and no lapsed
 * lease; `connected`: welcomed by a controller; `fenced`: its lease lapsed, it runs nothing
 * until a controller renews it; `draining`: drain() was called; `stopped`: done for good.
 */
export type AgentState = "connecting" | "connected" | "fenced" | "draining" | "stopped";

/** One held shard, as shown to tests and operators. */
export interface ShardView {
  job: string;
  shard: number;
  term: bigint;
  generation: bigint;
  /** Revoked and not yet released. */
  revoking: boolean;
}

/** What a Welcome told the agent, with the controller that sent it. */
export interface SessionInfo {
  controller: string;
  sessionId: string;
  term: bigint;
  heartbeatIntervalMs: number;
  leaseTtlMs: number;
}

/** Events of an Agent and their arguments. */
export interface AgentEvents {
  /** A controller welcomed the agent. */
  connected: [session: SessionInfo];
  /** The stream ended, with the status that ended it; a reconnect follows unless stopped. */
  disconnected: [status: GrpcStatus];
  /** The lease lapsed: every run was aborted and is reported LOST. */
  fenced: [reason: string];
  /** The set of held shards changed. */
  assignments: [shards: ShardView[]];
  /** An execution update was produced (RUNNING or terminal), before it is sent. */
  execution: [update: ExecutionUpdate];
  /** drain() finished. */
  drained: [];
  /**
   * The controller refused the Hello because another process holds this agent's id
   * (ALREADY_EXISTS), and waitForId is off: the agent has stopped, for good. The error (code
   * "already-exists") carries the controller's message, which names the holder.
   */
  refused: [error: ShardlineError];
}

interface Drain {
  promise: Promise<void>;
  resolve: () => void;
}

type AgentStream = MessageStream<typeof ConnectResponseSchema, typeof ConnectRequestSchema>;

/**
 * A Shardline agent: one stream to the controller, the shards it was given, and the executions
 * it runs on them, following docs/protocol.md. start() connects and keeps reconnecting;
 * drain() leaves gracefully; stop() leaves at once.
 */
export class Agent {
  readonly #options: ResolvedAgentOptions;
  readonly #log: Logger;
  readonly #events = new EventEmitter();
  /** The agent's rules; everything below carries out what it decides. */
  readonly #core: AgentCore;
  readonly #handlers: Executor;
  readonly #scripts: Executor;
  /** Absent unless allowHttp: an agent makes no requests it was not told it may. */
  readonly #http: Executor | undefined;
  /** Absent unless options.kubernetes: the executor itself (for recover()), and wrapped like the others. */
  readonly #kubernetesJobs: KubernetesExecutor | undefined;
  readonly #kubernetes: Executor | undefined;
  /** Absent without options.metrics: nothing is counted. */
  readonly #metrics: AgentMetrics | undefined;
  /** The executors' runs of the executions the core holds. */
  readonly #runs = new Map<string, ExecutionRun>();
  /** While a Dispatch is stepped: its contexts that an executor here can run, for the runs the core holds. */
  #dispatching: Map<string, ExecutionContext> | undefined;
  /** Steps the start of a held run at its instant (processStarts calls it). */
  readonly #dueStarts: Starter = { start: (executionId) => this.#step({ kind: "start-due", executionId }) };
  /** Resolved when the last run ends. */
  #idleWaiters: (() => void)[] = [];
  #flushScheduled: NodeJS.Immediate | undefined;
  /** Set while effects are carried out: a step made meanwhile leaves its effects to that loop. */
  #carryingOut = false;
  #timer: NodeJS.Timeout | undefined;
  #logFlush: NodeJS.Timeout | undefined;
  #timerAt: number | undefined;

  /** The address the current channel (and stream) goes to. */
  #clientAddress: string | undefined;
  /** The controller version of the Welcome being stepped, for the log. */
  #welcomeVersion = "";
  #client: Client<typeof AgentService> | undefined;
  #stream: AgentStream | undefined;
  #started = false;
  /** Streams opened so far; every one after the first is a reconnect. */
  #connects = 0;
  #stopped = false;
  #drain: Drain | undefined;
  /** Failed attempts to reach a controller since the last Welcome, and what was said about them. */
  readonly #connectFailures: ConnectFailures;
  /** Why the last stream ended without a Welcome, for /readyz; cleared by a Welcome. */
  #notConnectedReason: string | undefined;
  /** Set once the agent said it waits for its id (or for the id's fence): said once per wait. */
  #waitingForId = false;
  /** The refusal that stopped the agent: another process holds its id. */
  #idRefusal: ShardlineError | undefined;

  constructor(options: AgentOptions) {
    this.#options = resolveAgentOptions(options);
    this.#log = this.#options.logger.child({ agent: this.#options.id });
    this.#connectFailures = new ConnectFailures({ clock: this.#options.clock, retryCeilingMs: this.#options.reconnect.maxMs });
    const { listeners, maxResultBytes, id: agentId, metrics } = this.#options;
    this.#core = new AgentCore({
      drainGraceMs: this.#options.drainGraceMs,
      welcomeTimeoutMs: this.#options.reconnect.welcomeTimeoutMs,
      addresses: this.#options.controller.split(","),
      reconnect: this.#options.reconnect,
      random: this.#options.random,
    });
    this.#metrics = metrics && new AgentMetrics(metrics, { assignments: () => this.#core.shards().length, connected: () => this.#core.welcomed });
    // Outermost, so that an execution's span and duration cover its listeners too.
    const telemetry = new ExecutionTelemetry({ agentId, report: (update) => this.#onReport(update), metrics: this.#metrics });
    const report = telemetry.report;
    // Without listeners the executors report straight to the telemetry: nothing in between.
    // What HandlerContext.assertLease asks: the lease by the agent's own clock, lapsed while a
    // run goes on for its disconnect grace too.
    const leaseValid = (): boolean => this.#core.leaseValid(this.#options.clock.now());
    const listening = listeners && new ExecutionListening({ listeners, report, agentId, leaseValid, maxResultBytes, logger: this.#log });
    const listened = (executor: Executor): Executor => telemetry.wrap(listening?.wrap(executor) ?? executor);
    const reporting = { maxResultBytes, logBounds: this.#options.logBounds, report: listening?.report ?? report };
    this.#handlers = listened(new HandlerExecutor({ ...reporting, agentId, leaseValid, handlers: this.#options.handlers, logger: this.#log }));
    // Built even with an empty allow-list, so a stray script job fails naming what is allowed.
    this.#scripts = listened(new ScriptExecutor({ ...reporting, agentId, allowed: this.#options.allowScripts, logger: this.#log }));
    this.#http = this.#options.allowHttp ? listened(new HttpExecutor({ ...reporting, agentId })) : undefined;
    const kubernetes = this.#options.kubernetes;
    this.#kubernetesJobs =
      kubernetes &&
      new KubernetesExecutor({
        ...reporting,
        agentId,
        logger: this.#log,
        client: kubernetes.access.client,
        namespace: kubernetes.access.namespace,
        ...(kubernetes.owner ? { owner: kubernetes.owner } : {}),
        configOf: (context) => context.kubernetes,
      });
    this.#kubernetes = this.#kubernetesJobs && listened(this.#kubernetesJobs);
  }

  /** The agent's id. */
  get id(): string {
    return this.#options.id;
  }

  /**
   * This process's instance, sent in every Hello: the controller refuses another instance's Hello
   * under the same id while this one holds it.
   */
  get instanceId(): string {
    return this.#options.instanceId;
  }

  /** Where it stands; see AgentState. */
  get state(): AgentState {
    if (this.#stopped) return "stopped";
    if (this.#drain) return "draining";
    if (this.#core.fenced) return "fenced";
    return this.#core.welcomed ? "connected" : "connecting";
  }

  /**
   * True while the agent can take work: welcomed by a controller (the leader, as followers only
   * redirect), holding a valid lease, and neither draining nor stopped. What /readyz reports.
   */
  get ready(): boolean {
    return this.state === "connected" && this.#core.leaseValid(this.#options.clock.now());
  }

  /** Whether /readyz answers 200 (see ready), and when not, why, in words for an operator. */
  get readiness(): Readiness {
    return this.ready ? { ready: true } : { ready: false, reason: this.#notReadyReason() };
  }

  #notReadyReason(): string {
    if (this.#idRefusal) return `stopped: the controller refused this agent: ${this.#idRefusal.message}`;
    if (this.#stopped) return "the agent stopped";
    if (this.#drain) return "draining: handing its shards back before it stops";
    const connecting = this.#notConnectedReason ?? `connecting to the controller at ${this.#core.address}; no Welcome yet`;
    if (this.#core.fenced) return `fenced (${this.#core.fenceReason}); ${connecting}`;
    if (this.#core.welcomed) return "the lease lapsed; fencing";
    return this.#started ? connecting : "not started";
  }

  /** The controller address in use (a Redirect changes it). */
  get controller(): string {
    return this.#core.address;
  }

  /** The shards held, by job then shard. */
  shards(): ShardView[] {
    return this.#core.shards().map((held) => ({ ...held }));
  }

  /** Ids of the executions running now (and those waiting for their fire instant). */
  running(): string[] {
    return this.#core.runIds();
  }

  /** Listens to an event; see AgentEvents. */
  on<E extends keyof AgentEvents>(event: E, listener: (...args: AgentEvents[E]) => void): this {
    this.#events.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** Listens to the next occurrence of an event. */
  once<E extends keyof AgentEvents>(event: E, listener: (...args: AgentEvents[E]) => void): this {
    this.#events.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** Stops listening. */
  off<E extends keyof AgentEvents>(event: E, listener: (...args: AgentEvents[E]) => void): this {
    this.#events.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** Connects, and keeps reconnecting with backoff until drain() or stop(). Calling it again does nothing. */
  start(): void {
    if (this.#stopped) throw new ShardlineError("failed-precondition", `agent ${this.id} was stopped; create a new Agent to start again`);
    if (this.#started) return;
    this.#started = true;
    // Running executions' new log lines go out together on this beat, with RUNNING updates,
    // never one message per line; unref'd, so it keeps no process alive.
    this.#logFlush = setInterval(() => {
      for (const run of this.#runs.values()) run.flushLog?.();
    }, this.#options.logFlushIntervalMs);
    this.#logFlush.unref();
    if (this.#kubernetesJobs === undefined) this.#step({ kind: "start" });
    else void this.#recoverThenConnect(this.#kubernetesJobs);
  }

  /**
   * Takes back the Kubernetes Jobs this agent's previous process created and did not report,
   * then connects: the Hello claims their shards and lists them running. Shards the controller
   * has given to another agent meanwhile are left out of its snapshot, which stops their runs
   * (and deletes their Jobs). If the Jobs cannot be listed, the agent connects without them.
   */
  async #recoverThenConnect(jobs: KubernetesExecutor): Promise<void> {
    try {
      const contexts = await jobs.recover();
      for (const context of contexts) this.#adoptRecovered(context);
      if (contexts.length > 0) this.#log.info({ executions: contexts.length }, "took back the Kubernetes Jobs of this agent's previous process");
    } catch (error) {
      this.#log.warn({ err: error }, "could not list this agent's Kubernetes Jobs; connecting without taking them back");
    }
    if (!this.#stopped) this.#step({ kind: "start" });
  }

  #adoptRecovered(context: ExecutionContext): void {
    if (this.#runs.has(context.executionId) || context.assignment?.shard === undefined || this.#kubernetes === undefined) return;
    this.#runs.set(context.executionId, this.#kubernetes.create(context));
    this.#step({ kind: "restore-run", executionId: context.executionId, job: context.job, assignment: refOf(context.assignment) });
  }

  /**
   * Leaves gracefully (the SIGTERM path): sends Goodbye, releases each shard once its runs are
   * over, and after drainGraceMs aborts what still runs (reported LOST) and releases the rest;
   * then half-closes the stream. Resolves when that is done, or when no controller could be
   * reached within the grace. Calling it again returns the same promise.
   */
  drain(reason = "drain"): Promise<void> {
    if (this.#drain) return this.#drain.promise;
    if (this.#stopped || !this.#started) {
      this.#stopped = true;
      return Promise.resolve();
    }
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.#drain = { promise, resolve };
    this.#step({ kind: "drain", reason });
    return promise;
  }

  /**
   * Stops at once, without a goodbye: aborts every run (LOST, reported to nobody) and cuts the
   * stream. The controller then treats the agent as lost. Meant for tests and fatal errors.
   * Resolves once no run is left, which for a script means its processes are gone (at most its
   * kill grace later).
   */
  stop(): Promise<void> {
    if (this.#stopped) return this.#idle();
    this.#stopped = true;
    this.#step({ kind: "stop" });
    this.#shutDown("the agent stopped");
    this.#drain?.resolve();
    return this.#idle();
  }

  // Driving the core.

  /** Steps one input into the core and carries out what it decides. */
  #step(input: AgentInput): void {
    this.#core.step(input, this.#options.clock.now());
    this.#carryOut();
  }

  #carryOut(): void {
    if (this.#carryingOut) return;
    this.#carryingOut = true;
    try {
      while (this.#core.hasEffects) for (const effect of this.#core.take()) this.#do(effect);
    } finally {
      this.#carryingOut = false;
    }
    this.#armTimer();
    if (this.#core.runCount === 0) for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  #do(effect: AgentEffect): void {
    switch (effect.kind) {
      case "open-stream":
        return this.#connect(effect.address);
      case "send":
        return this.#sendMessage(effect.message);
      case "close-stream":
        this.#closeStream(effect.code === "unavailable" ? status.UNAVAILABLE : status.FAILED_PRECONDITION, effect.reason);
        if (effect.newConnection) this.#dropClient();
        return;
      case "half-close":
        this.#stream?.end();
        return;
      case "hold-run":
        return this.#hold(effect.executionId, effect.fireTimeUnixMs, effect.maxWaitMs);
      case "start-run":
        this.#runs.get(effect.executionId)?.start();
        return;
      case "stop-run":
        this.#runs.get(effect.executionId)?.stop(effect.state, effect.reason);
        return;
      case "report":
        this.#metrics?.ended(effect.job, effect.update.state, undefined);
        this.#events.emit("execution", effect.update);
        return;
      case "welcomed":
        return this.#welcomed(effect);
      case "redirected":
        this.#log.info({ from: this.#clientAddress, to: effect.leaderAddress }, "redirected to the leader");
        this.#closeStream(status.CANCELLED, `redirected to ${effect.leaderAddress}`);
        return;
      case "fenced":
        this.#metrics?.leaseLapsed();
        this.#events.emit("fenced", effect.reason);
        return;
      case "unfenced":
        this.#log.info("lease renewed; no longer fenced");
        return;
      case "assignments-changed":
        this.#events.emit("assignments", this.shards());
        return;
      case "flush-soon":
        this.#flushScheduled ??= setImmediate(() => {
          this.#flushScheduled = undefined;
          this.#step({ kind: "flush" });
        });
        return;
      case "drained":
        return this.#finishDrain();
      case "log":
        this.#log[effect.level](effect.fields, effect.message);
        return;
    }
  }

  /** One timer, for the core's next deadline (heartbeat, lease, Welcome wait, drain). */
  #armTimer(): void {
    if (this.#stopped) return;
    const at = this.#core.nextDeadline();
    if (at === this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (at === undefined) return;
    const delay = Math.max(0, Math.ceil(at - this.#options.clock.now()));
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = undefined;
      this.#step({ kind: "tick" });
    }, delay);
  }

  #connect(address: string): void {
    if (this.#stopped) return;
    if (this.#connects++ > 0) this.#metrics?.reconnected();
    if (address !== this.#clientAddress) this.#dropClient();
    this.#clientAddress = address;
    this.#client ??= createClient(AgentService, address, {
      maxReconnectBackoffMs: this.#options.reconnect.maxMs,
      ...(this.#options.token === undefined ? {} : { metadata: { authorization: `Bearer ${this.#options.token}` } }),
      ...(this.#options.tls === undefined ? {} : { credentials: this.#options.tls.channelCredentials() }),
    });
    const stream = this.#client.connect({ onError: (error) => this.#log.error({ err: error }, "agent stream listener failed") });
    this.#stream = stream;
    stream.onMessage((message) => {
      if (stream === this.#stream) this.#onMessage(message);
    });
    stream.onClose((closed) => {
      if (stream === this.#stream) this.#onClose(closed);
    });
    this.#log.debug({ controller: address }, "connecting");
    this.#step({ kind: "stream-opened" });
  }

  /** The Hello: identity, plus what the core says the agent still holds and the reports not yet confirmed. */
  #hello(held: AssignmentRef[], executions: ExecutionUpdate[]): Hello {
    return {
      $typeName: "shardline.v1.Hello",
      agentId: this.#options.id,
      labels: this.#options.labels,
      capacity: this.#options.capacity,
      handlers: Object.keys(this.#options.handlers).sort(),
      version: this.#options.version,
      held: held.map(toAssignment),
      executions,
      executors: this.#executorNames(),
      maxConcurrent: this.#options.maxConcurrent,
      instanceId: this.#options.instanceId,
    };
  }

  /** The executors beyond handlers that Hello declares; the controller sends their jobs only here. */
  #executorNames(): string[] {
    const names: string[] = [];
    if (this.#options.allowScripts.length > 0) names.push("script");
    if (this.#http) names.push("http");
    if (this.#kubernetes) names.push("kubernetes");
    return names;
  }

  #onMessage(message: ConnectResponse): void {
    const decoded = controllerMessage(message);
    if (message.kind.case === "welcome") this.#welcomeVersion = message.kind.value.controllerVersion;
    if (decoded.kind !== "dispatch") {
      this.#step(decoded);
      return;
    }
    const dispatch = message.kind.value as Dispatch;
    this.#dispatching = new Map();
    const runs: DispatchedRun[] = [];
    for (const context of dispatch.executions) {
      const executor = this.#executorFor(context);
      const run: DispatchedRun = {
        executionId: context.executionId,
        job: context.job,
        assignment: context.assignment?.shard ? refOf(context.assignment) : undefined,
        hook: context.fireOutcome !== undefined,
        fireTimeUnixMs: Number(context.fireTimeUnixMs),
        graceMs: context.disconnectGraceMs,
      };
      if (typeof executor === "string") run.unrunnable = executor;
      else this.#dispatching.set(context.executionId, context);
      runs.push(run);
    }
    try {
      this.#step({ ...decoded, runs });
    } finally {
      this.#dispatching = undefined;
    }
  }

  /** A run the core now holds: prepared now, started at its instant by this process's wall clock. */
  #hold(executionId: string, fireTimeUnixMs: number, maxWaitMs: number): void {
    const context = this.#dispatching?.get(executionId);
    const executor = context && this.#executorFor(context);
    if (context === undefined || executor === undefined || typeof executor === "string") return;
    this.#runs.set(executionId, executor.create(context));
    // The core checks the lease at the start: a start overdue past the lease fences instead.
    processStarts.add(fireTimeUnixMs, maxWaitMs, this.#dueStarts, executionId);
  }

  /** The executor the context asks for, or why this agent has none for it. */
  #executorFor(context: ExecutionContext): Executor | string {
    if (context.script) return this.#scripts;
    if (context.http) return this.#http ?? "this agent makes no HTTP calls; start it with --allow-http (allowHttp)";
    if (context.kubernetes) return this.#kubernetes ?? "this agent runs no Kubernetes Jobs; start it with --kubernetes";
    return this.#handlers;
  }

  /** Every update an executor produces comes through here. */
  #onReport(update: ExecutionUpdate): void {
    if (update.state !== ExecutionState.RUNNING) this.#runs.delete(update.executionId);
    this.#core.step({ kind: "run-report", update }, this.#options.clock.now());
    // Before the core's effects, which may send it (ahead of a Release). Only when listened to:
    // emit() gathers its arguments into an array even for nobody, twice a run.
    if (this.#events.listenerCount("execution") > 0) this.#events.emit("execution", update);
    this.#carryOut();
  }

  /** Resolves once no run is left. */
  #idle(): Promise<void> {
    if (this.#core.runCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #welcomed(welcome: Extract<AgentEffect, { kind: "welcomed" }>): void {
    this.#notConnectedReason = undefined;
    this.#waitingForId = false;
    const reached = this.#connectFailures.succeeded(this.#core.address);
    if (reached) this.#log[reached.level](reached.fields, reached.message);
    const session: SessionInfo = {
      controller: this.#core.address,
      sessionId: welcome.sessionId,
      term: welcome.term,
      heartbeatIntervalMs: welcome.heartbeatIntervalMs,
      leaseTtlMs: welcome.leaseTtlMs,
    };
    const controllerVersion = this.#welcomeVersion;
    this.#log.info({ ...session, term: String(welcome.term), controllerVersion, instanceId: this.instanceId }, "connected");
    this.#events.emit("connected", session);
  }

  /** The next stream goes on a new channel. The old one closes after the current stream ends: closing a channel cancels its calls. */
  #dropClient(): void {
    const client = this.#client;
    this.#client = undefined;
    if (client !== undefined) setImmediate(() => client.close());
  }

  #onClose(closed: GrpcStatus): void {
    const address = this.#core.address;
    const welcomed = this.#core.welcomed;
    // A stream that ends before any Welcome, not on a Redirect nor by this side's stop, is an attempt that failed.
    const failedAttempt = !welcomed && !this.#core.redirecting && !this.#stopped;
    this.#stream = undefined;
    // After a failed connection a grpc-js channel waits out a backoff of its own (up to 5 s)
    // before it connects again, failing every call meanwhile: the next attempt goes on a fresh
    // channel, so that the core's backoff alone (half a lease while it has something to keep)
    // says when this agent tries again, and it finds a restarted controller at once.
    if (failedAttempt) this.#dropClient();
    // Its effects (the end of a drain, the next attempt's time and address) come after the log
    // lines and the event below.
    this.#core.step({ kind: "stream-closed" }, this.#options.clock.now());
    if (closed.code === status.INVALID_ARGUMENT) {
      this.#notConnectedReason = `the controller at ${address} refused this agent: ${closed.details}`;
      this.#log.error(
        { code: closed.code, details: closed.details, controller: address },
        `the controller refused this agent: ${closed.details}; fix the agent's settings or the controller, retrying meanwhile`,
      );
    } else if (failedAttempt && closed.code === status.ALREADY_EXISTS) {
      if (!this.#options.waitForId) {
        this.#events.emit("disconnected", closed);
        this.#refuse(closed, address);
        return;
      }
      this.#waitForId(closed, address);
    } else if (failedAttempt) {
      this.#attemptFailed(closed, address);
    } else if (!this.#stopped) {
      this.#notConnectedReason = `the stream to the controller at ${address} closed (${status[closed.code]}: ${closed.details}); reconnecting`;
      this.#log.warn({ code: closed.code, details: closed.details, controller: address }, "the stream to the controller closed");
    }
    this.#events.emit("disconnected", closed);
    this.#carryOut();
  }

  /**
   * Another process holds this agent's id, and the agent was not told to wait for it: retrying
   * would be refused forever (or, were the other to stop, would take its id from under an
   * operator who started two processes by mistake). So it stops, and says why.
   */
  #refuse(closed: GrpcStatus, address: string): void {
    const error = idHeldError(this.id, closed.details);
    this.#idRefusal = error;
    this.#log.error(
      { code: closed.code, details: closed.details, controller: address, instanceId: this.instanceId },
      `the controller refused this agent: ${error.message}; stopping`,
    );
    void this.stop();
    this.#events.emit("refused", error);
  }

  /** Another process holds this agent's id, and waitForId is on: said once, then the backoff retries. */
  #waitForId(closed: GrpcStatus, address: string): void {
    this.#notConnectedReason = `waiting for agent id "${this.id}": ${closed.details}`;
    const fields = { code: closed.code, details: closed.details, controller: address, instanceId: this.instanceId };
    if (this.#waitingForId) {
      this.#log.debug(fields, "the agent id is still held by another process");
      return;
    }
    this.#waitingForId = true;
    this.#log.warn(fields, `waiting for agent id "${this.id}": ${closed.details}; trying again with the reconnect backoff until it is free`);
  }

  /**
   * A stream that ended before its Welcome: a controller the agent cannot reach, said plainly, and
   * not once per attempt.
   */
  #attemptFailed(closed: GrpcStatus, address: string): void {
    const line = this.#connectFailures.failed(address, closed);
    this.#notConnectedReason = this.#connectFailures.reason;
    if (line) this.#log[line.level](line.fields, line.message);
  }

  /** Ends the current stream from this side; onClose follows synchronously. */
  #closeStream(code: status, details: string): void {
    this.#stream?.close(code, details);
  }

  #sendMessage(message: AgentMessage): void {
    switch (message.kind) {
      case "hello":
        this.#stream?.send({ kind: { case: "hello", value: this.#hello(message.held, message.executions) } });
        return;
      case "heartbeat":
        return this.#send({ kind: { case: "heartbeat", value: { seq: message.seq } } });
      case "execution-updates":
        // Results and errors run to 4 KiB each: a thousand runs ending in one turn would make one
        // message over the controller's 4 MiB limit, and the stream would fail again after every
        // reconnect. In order, before the next heartbeat, so the core's confirmation still holds.
        // Whole messages, not init shapes: the encoder then takes them as they are, without
        // copying every update into a new message first.
        for (const part of partsWithin(message.updates, updateBytes)) {
          this.#send({
            $typeName: "shardline.v1.ConnectRequest",
            kind: { case: "executionUpdates", value: { $typeName: "shardline.v1.ExecutionUpdates", updates: part } },
          });
        }
        return;
      case "release":
        return this.#send({ kind: { case: "release", value: { assignments: message.assignments.map(toAssignment) } } });
      case "goodbye":
        return this.#send({ kind: { case: "goodbye", value: { reason: message.reason } } });
    }
  }

  #send(message: Parameters<AgentStream["send"]>[0]): void {
    const stream = this.#stream;
    if (!stream) return;
    if (!stream.send(message) && !stream.closed) {
      // The controller does not read: treat the stream as dead rather than queue without bound.
      this.#closeStream(status.RESOURCE_EXHAUSTED, "the controller is not reading this agent's stream");
    }
  }

  #finishDrain(): void {
    const drain = this.#drain;
    if (!drain || this.#stopped) return;
    this.#stopped = true;
    this.#shutDown("drained");
    this.#events.emit("drained");
    // Runs aborted by the grace may still be ending: a script's processes take their kill grace.
    void this.#idle().then(drain.resolve);
  }

  /** Clears every timer and closes the stream and the channel. */
  #shutDown(reason: string): void {
    clearInterval(this.#logFlush);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = undefined;
    if (this.#flushScheduled) clearImmediate(this.#flushScheduled);
    this.#flushScheduled = undefined;
    this.#closeStream(status.CANCELLED, reason);
    this.#client?.close();
    this.#client = undefined;
  }
}

/** A controller message as the core's input; a Dispatch's runs are filled in by the caller. */
function controllerMessage(message: ConnectResponse): ControllerMessage {
  const term = message.term;
  switch (message.kind.case) {
    case "welcome": {
      const welcome = message.kind.value;
      return {
        kind: "welcome",
        term,
        sessionId: welcome.sessionId,
        heartbeatIntervalMs: welcome.heartbeatIntervalMs,
        leaseTtlMs: welcome.leaseTtlMs,
        dispatchAheadMs: welcome.dispatchAheadMs,
      };
    }
    case "heartbeatAck":
      return { kind: "heartbeat-ack", term, seq: message.kind.value.seq, leaseTtlMs: message.kind.value.leaseTtlMs };
    case "assignmentUpdate": {
      const update = message.kind.value;
      return { kind: "assignments", term, snapshot: update.snapshot, add: update.add.map(refOf), revoke: update.revoke.map(refOf) };
    }
    case "dispatch":
      return { kind: "dispatch", term, runs: [], atUnixMs: Date.now() };
    case "cancel":
      return { kind: "cancel", term, executionIds: message.kind.value.executionIds, reason: message.kind.value.reason };
    case "redirect":
      return { kind: "redirect", term, leaderAddress: message.kind.value.leaderAddress };
    default:
      return { kind: "unknown", term };
  }
}

function toAssignment(ref: AssignmentRef): Assignment {
  return {
    $typeName: "shardline.v1.Assignment",
    shard: { $typeName: "shardline.v1.ShardRef", job: ref.job, shard: ref.shard },
    term: ref.term,
    generation: ref.generation,
  };
}

/** An upper estimate of an update's encoded size: its texts (up to 3 bytes per UTF-16 unit) and 256 for the rest. */
export function updateBytes(update: Pick<ExecutionUpdate, "executionId" | "result" | "error">): number {
  return 256 + 3 * (update.executionId.length + update.result.length + update.error.length);
}
