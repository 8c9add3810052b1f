import { EventEmitter } from "node:events";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { ShardlineError } from "../../shared/errors.js";
import {
  AgentService,
  ExecutionUpdateSchema,
  type AssignmentUpdate,
  type Cancel,
  type ConnectRequestSchema,
  type ConnectResponse,
  type ConnectResponseSchema,
  type Dispatch,
  type ExecutionContext,
  type ExecutionUpdate,
  type HeartbeatAck,
  type Hello,
  type Redirect,
  type Welcome,
} from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState, type Assignment } from "../../shared/gen/shardline/v1/types_pb.js";
import { createClient, type Client, type GrpcStatus, type MessageStream } from "../../shared/grpc/index.js";
import { partsWithin } from "../../shared/grpc/message-parts.js";
import type { Readiness } from "../../shared/http-server.js";
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
import { processStarts } from "./on-time-starts.js";
import { AssignmentTable, refOf, shardKey, type AssignmentRef, type HeldAssignment } from "./assignment-table.js";
import { Backoff } from "./backoff.js";
import { ConnectFailures } from "./connect-failures.js";
import { Lease } from "./lease.js";

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

/** Defaults the controller would send; used only when a Welcome leaves a field at 0. */
const DEFAULT_HEARTBEAT_INTERVAL_MS = 500;
const DEFAULT_LEASE_TTL_MS = 2_000;
/** How long a drained agent waits for the controller to close the stream after its half-close. */
const HALF_CLOSE_WAIT_MS = 2_000;

/**
 * The sequence number that stands for the Hello. The Welcome answers it the way an ack answers
 * a heartbeat: the controller grants a lease when it accepts a Hello, and processes the Hello's
 * execution reports before it welcomes, so the Welcome both starts the lease (from the Hello's
 * send time) and confirms those reports. Heartbeats count from 1.
 */
const HELLO_SEQ = 0n;

/** The shard of a run that belongs to none: a spec.onFireComplete hook's. */
const NO_SHARD = -1;

interface RunEntry {
  run: ExecutionRun;
  job: string;
  /** NO_SHARD for a completion hook run. */
  shard: number;
  /** The RUNNING update, listed in the next Hello while the run lasts. */
  running?: ExecutionUpdate;
}

interface Unconfirmed {
  update: ExecutionUpdate;
  /** Confirmed by the ack of this seq on the current stream; undefined while not sent on it. */
  confirmSeq: bigint | undefined;
}

interface Drain {
  promise: Promise<void>;
  resolve: () => void;
  reason: string;
  graceTimer: NodeJS.Timeout | undefined;
  /** The stream was half-closed; the drain ends when it closes. */
  ending: boolean;
  endTimer: NodeJS.Timeout | undefined;
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
  readonly #table = new AssignmentTable();
  readonly #lease = new Lease();
  readonly #backoff: Backoff;
  readonly #handlers: Executor;
  readonly #scripts: Executor;
  /** Absent unless allowHttp: an agent makes no requests it was not told it may. */
  readonly #http: Executor | undefined;
  /** Absent unless options.kubernetes: the executor itself (for recover()), and wrapped like the others. */
  readonly #kubernetesJobs: KubernetesExecutor | undefined;
  readonly #kubernetes: Executor | undefined;
  /** Absent without options.metrics: nothing is counted. */
  readonly #metrics: AgentMetrics | undefined;
  readonly #runs = new Map<string, RunEntry>();
  readonly #unconfirmed = new Map<string, Unconfirmed>();
  /** Resolved when the last run ends. */
  #idleWaiters: (() => void)[] = [];
  #outbox: ExecutionUpdate[] = [];
  #flushScheduled: NodeJS.Immediate | undefined;

  /** The controller replicas given, tried in turn while none answers. */
  readonly #addresses: string[];
  /** The next of #addresses to try after the current address fails. */
  #nextAddress = 1;
  /** Set by a Redirect: the stream it closes is not a failure of the leader's address. */
  #redirected = false;
  /** Set when this side closed a stream because the controller stopped answering: try another. */
  #unresponsive = false;
  #welcomeTimer: NodeJS.Timeout | undefined;
  #address: string;
  #client: Client<typeof AgentService> | undefined;
  #stream: AgentStream | undefined;
  #welcomed = false;
  #seq = 0n;
  #leaseTtlMs = DEFAULT_LEASE_TTL_MS;
  /** The longest the controller dispatches ahead of a fire instant (Welcome.dispatch_ahead_ms). */
  #dispatchAheadMs = 0;
  #lastAckAt = 0;
  #fenced = false;
  #started = false;
  /** Streams opened so far; every one after the first is a reconnect. */
  #connects = 0;
  #stopped = false;
  #drain: Drain | undefined;
  /** Failed attempts to reach a controller since the last Welcome, and what was said about them. */
  readonly #connectFailures: ConnectFailures;
  /** Why the last stream ended without a Welcome, for /readyz; cleared by a Welcome. */
  #notConnectedReason: string | undefined;
  /** Why the lease lapsed, while fenced. */
  #fenceReason = "";
  /** Set once the agent said it waits for its id (or for the id's fence): said once per wait. */
  #waitingForId = false;
  /** The refusal that stopped the agent: another process holds its id. */
  #idRefusal: ShardlineError | undefined;

  #heartbeatTimer: NodeJS.Timeout | undefined;
  #fenceTimer: NodeJS.Timeout | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;

  constructor(options: AgentOptions) {
    this.#options = resolveAgentOptions(options);
    this.#log = this.#options.logger.child({ agent: this.#options.id });
    this.#addresses = this.#options.controller.split(",");
    this.#address = this.#addresses[0]!;
    this.#backoff = new Backoff({ ...this.#options.reconnect, random: this.#options.random });
    this.#connectFailures = new ConnectFailures({ clock: this.#options.clock, retryCeilingMs: this.#options.reconnect.maxMs });
    const { listeners, maxResultBytes, id: agentId, metrics } = this.#options;
    this.#metrics = metrics && new AgentMetrics(metrics, { assignments: () => this.#table.size, connected: () => this.#welcomed });
    // Outermost, so that an execution's span and duration cover its listeners too.
    const telemetry = new ExecutionTelemetry({ agentId, report: (update) => this.#onReport(update), metrics: this.#metrics });
    const report = telemetry.report;
    // Without listeners the executors report straight to the telemetry: nothing in between.
    const listening = listeners && new ExecutionListening({ listeners, report, agentId, maxResultBytes, logger: this.#log });
    const listened = (executor: Executor): Executor => telemetry.wrap(listening?.wrap(executor) ?? executor);
    const reporting = { maxResultBytes, report: listening?.report ?? report };
    this.#handlers = listened(new HandlerExecutor({ ...reporting, agentId, handlers: this.#options.handlers, logger: this.#log }));
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
    if (this.#fenced) return "fenced";
    return this.#welcomed ? "connected" : "connecting";
  }

  /**
   * True while the agent can take work: welcomed by a controller (the leader, as followers only
   * redirect), holding a valid lease, and neither draining nor stopped. What /readyz reports.
   */
  get ready(): boolean {
    return this.state === "connected" && this.#lease.valid(this.#options.clock.now());
  }

  /** Whether /readyz answers 200 (see ready), and when not, why, in words for an operator. */
  get readiness(): Readiness {
    return this.ready ? { ready: true } : { ready: false, reason: this.#notReadyReason() };
  }

  #notReadyReason(): string {
    if (this.#idRefusal) return `stopped: the controller refused this agent: ${this.#idRefusal.message}`;
    if (this.#stopped) return "the agent stopped";
    if (this.#drain) return "draining: handing its shards back before it stops";
    const connecting = this.#notConnectedReason ?? `connecting to the controller at ${this.#address}; no Welcome yet`;
    if (this.#fenced) return `fenced (${this.#fenceReason}); ${connecting}`;
    if (this.#welcomed) return "the lease lapsed; fencing";
    return this.#started ? connecting : "not started";
  }

  /** The controller address in use (a Redirect changes it). */
  get controller(): string {
    return this.#address;
  }

  /** The shards held, by job then shard. */
  shards(): ShardView[] {
    return this.#table.list().map((held) => ({ ...held }));
  }

  /** Ids of the executions running now. */
  running(): string[] {
    return [...this.#runs.keys()];
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
    if (this.#kubernetesJobs === undefined) this.#connect();
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
    if (!this.#stopped) this.#connect();
  }

  #adoptRecovered(context: ExecutionContext): void {
    if (this.#runs.has(context.executionId) || context.assignment?.shard === undefined || this.#kubernetes === undefined) return;
    const ref = refOf(context.assignment);
    this.#table.restore(ref);
    const run = this.#kubernetes.create(context);
    this.#runs.set(context.executionId, { run, job: context.job, shard: ref.shard });
    run.start();
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
    const drain: Drain = { promise, resolve, reason, graceTimer: undefined, ending: false, endTimer: undefined };
    this.#drain = drain;
    this.#log.info({ reason, graceMs: this.#options.drainGraceMs, running: this.#runs.size }, "draining");
    drain.graceTimer = setTimeout(() => this.#drainGraceOver(), this.#options.drainGraceMs);
    this.#table.revokeAll();
    this.#emitAssignments();
    if (this.#welcomed) this.#sayGoodbye();
    else if (this.#nothingToHandBack()) this.#finishDrain();
    this.#maybeEndDrain();
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
    this.#abortAll(ExecutionState.LOST, "the agent stopped");
    this.#shutDown("the agent stopped");
    this.#drain?.resolve();
    return this.#idle();
  }


  #connect(): void {
    this.#reconnectTimer = undefined;
    if (this.#stopped) return;
    if (this.#connects++ > 0) this.#metrics?.reconnected();
    this.#client ??= createClient(AgentService, this.#address, {
      maxReconnectBackoffMs: this.#options.reconnect.maxMs,
      ...(this.#options.token === undefined ? {} : { metadata: { authorization: `Bearer ${this.#options.token}` } }),
      ...(this.#options.tls === undefined ? {} : { credentials: this.#options.tls.channelCredentials() }),
    });
    const stream = this.#client.connect({ onError: (error) => this.#log.error({ err: error }, "agent stream listener failed") });
    this.#stream = stream;
    this.#welcomed = false;
    this.#seq = 0n;
    this.#lease.forgetPending();
    stream.onMessage((message) => {
      if (stream === this.#stream) this.#onMessage(message);
    });
    stream.onClose((closed) => {
      if (stream === this.#stream) this.#onClose(closed);
    });
    this.#log.debug({ controller: this.#address }, "connecting");
    const hello = this.#hello();
    this.#lease.sent(HELLO_SEQ, this.#options.clock.now());
    stream.send({ kind: { case: "hello", value: hello } });
    const { welcomeTimeoutMs } = this.#options.reconnect;
    this.#welcomeTimer = setTimeout(() => {
      if (stream !== this.#stream || this.#welcomed) return;
      this.#unresponsive = true;
      this.#closeStream(status.UNAVAILABLE, `no Welcome within ${welcomeTimeoutMs} ms`);
    }, welcomeTimeoutMs);
  }

  /** The Hello: identity, plus what the agent still holds and the reports not yet confirmed. */
  #hello(): Hello {
    const executions: ExecutionUpdate[] = [];
    // A run dispatched ahead and not started yet is listed as PENDING: the controller must know
    // it is still held, or it would take it for lost and run it again beside it.
    for (const [executionId, entry] of this.#runs) {
      executions.push(entry.running ?? create(ExecutionUpdateSchema, { executionId, state: ExecutionState.PENDING }));
    }
    for (const pending of this.#unconfirmed.values()) {
      executions.push(pending.update);
      pending.confirmSeq = HELLO_SEQ;
    }
    // Everything waiting in the outbox is covered by the lists above.
    this.#outbox = [];
    return {
      $typeName: "shardline.v1.Hello",
      agentId: this.#options.id,
      labels: this.#options.labels,
      capacity: this.#options.capacity,
      handlers: Object.keys(this.#options.handlers).sort(),
      version: this.#options.version,
      held: this.#table.list().map(toAssignment),
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
    if (!this.#table.acceptTerm(message.term)) {
      this.#log.warn(
        { term: message.term, highestTerm: this.#table.highestTerm, kind: message.kind.case },
        "ignored a message from an older controller term",
      );
      // A Welcome from a deposed leader means this whole stream talks to the wrong controller.
      if (message.kind.case === "welcome") this.#closeStream(status.FAILED_PRECONDITION, "the controller's term is older than one already seen");
      return;
    }
    switch (message.kind.case) {
      case "welcome":
        this.#onWelcome(message.kind.value, message.term);
        break;
      case "heartbeatAck":
        this.#onAck(message.kind.value);
        break;
      case "assignmentUpdate":
        this.#onAssignments(message.kind.value);
        break;
      case "dispatch":
        this.#onDispatch(message.kind.value);
        break;
      case "cancel":
        this.#onCancel(message.kind.value);
        break;
      case "redirect":
        this.#onRedirect(message.kind.value);
        break;
      default:
        // A newer controller may say things this agent does not know; they are not for it.
        this.#log.warn("ignored a controller message of an unknown kind");
    }
  }

  #onWelcome(welcome: Welcome, term: bigint): void {
    if (this.#welcomed) {
      this.#log.warn("ignored a second Welcome on one stream");
      return;
    }
    const heartbeatIntervalMs = welcome.heartbeatIntervalMs || DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.#leaseTtlMs = welcome.leaseTtlMs || DEFAULT_LEASE_TTL_MS;
    this.#dispatchAheadMs = welcome.dispatchAheadMs;
    this.#welcomed = true;
    clearTimeout(this.#welcomeTimer);
    this.#backoff.reset();
    this.#notConnectedReason = undefined;
    this.#waitingForId = false;
    const reached = this.#connectFailures.succeeded(this.#address);
    if (reached) this.#log[reached.level](reached.fields, reached.message);
    this.#lastAckAt = this.#options.clock.now();
    if (this.#lease.ack(HELLO_SEQ, this.#leaseTtlMs)) this.#leaseRenewed();
    this.#confirm(HELLO_SEQ);
    this.#heartbeatTimer = setInterval(() => this.#heartbeat(), heartbeatIntervalMs);
    const session: SessionInfo = {
      controller: this.#address,
      sessionId: welcome.sessionId,
      term,
      heartbeatIntervalMs,
      leaseTtlMs: this.#leaseTtlMs,
    };
    this.#log.info({ ...session, term: String(term), controllerVersion: welcome.controllerVersion, instanceId: this.instanceId }, "connected");
    this.#events.emit("connected", session);
    this.#flush();
    if (this.#drain) {
      this.#sayGoodbye();
      this.#maybeEndDrain();
    }
  }

  #heartbeat(): void {
    const stream = this.#stream;
    if (!stream || !this.#welcomed) return;
    const now = this.#options.clock.now();
    // A late fence timer must not let the stall check below reconnect first: a Hello sent
    // before the fence would still list the runs the fence is about to abort.
    if (!this.#fenced && this.#lease.expiresAt !== Number.NEGATIVE_INFINITY && !this.#lease.valid(now)) {
      this.#fence(`no heartbeat ack within the lease of ${this.#leaseTtlMs} ms`);
      return;
    }
    if (now - this.#lastAckAt > this.#leaseTtlMs) {
      // Nothing came back for a whole lease: the stream is stuck even if it looks open.
      this.#unresponsive = true;
      this.#closeStream(status.UNAVAILABLE, `no heartbeat ack for ${this.#leaseTtlMs} ms`);
      return;
    }
    this.#seq++;
    this.#lease.sent(this.#seq, now);
    this.#send({ kind: { case: "heartbeat", value: { seq: this.#seq } } });
  }

  #onAck(ack: HeartbeatAck): void {
    // A leader may grant less than the Welcome's TTL, to stay within its own leadership lease.
    if (!this.#lease.ack(ack.seq, ack.leaseTtlMs || this.#leaseTtlMs)) return;
    this.#lastAckAt = this.#options.clock.now();
    this.#confirm(ack.seq);
    this.#leaseRenewed();
  }

  #onRedirect(redirect: Redirect): void {
    if (!redirect.leaderAddress) {
      this.#log.warn("ignored a Redirect without an address");
      return;
    }
    this.#log.info({ from: this.#address, to: redirect.leaderAddress }, "redirected to the leader");
    this.#redirected = true;
    // Progress, not a failure: the leader is tried next without waiting out a grown backoff.
    this.#backoff.reset();
    this.#useAddress(redirect.leaderAddress);
    this.#closeStream(status.CANCELLED, `redirected to ${redirect.leaderAddress}`);
  }

  /**
   * After a stream that never got a Welcome, or that this side closed because the controller
   * stopped answering: the next controller replica given is tried (a leader named by a Redirect
   * that cannot be reached is dropped for them too). One address, or a welcomed stream that the
   * controller ended, keeps the same address: its controller may be restarting.
   */
  #rotateAddress(welcomed: boolean): void {
    const redirected = this.#redirected;
    const unresponsive = this.#unresponsive;
    this.#redirected = false;
    this.#unresponsive = false;
    if (redirected || (welcomed && !unresponsive)) return;
    if (this.#addresses.length === 1 && this.#address === this.#addresses[0]) return;
    const next = this.#addresses[this.#nextAddress % this.#addresses.length]!;
    this.#nextAddress++;
    this.#useAddress(next);
  }

  #useAddress(address: string): void {
    if (address === this.#address) return;
    this.#address = address;
    this.#dropClient();
  }

  /** The next stream goes on a new channel. The old one closes after the current stream ends: closing a channel cancels its calls. */
  #dropClient(): void {
    const client = this.#client;
    this.#client = undefined;
    if (client !== undefined) setImmediate(() => client.close());
  }

  #onClose(closed: GrpcStatus): void {
    const address = this.#address;
    const welcomed = this.#welcomed;
    // A stream that ends before any Welcome, not on a Redirect nor by this side's stop, is an attempt that failed.
    const failedAttempt = !welcomed && !this.#redirected && !this.#stopped;
    this.#stream = undefined;
    clearTimeout(this.#welcomeTimer);
    this.#rotateAddress(welcomed);
    this.#welcomed = false;
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    // What was not sent goes into the next Hello; what was sent but not confirmed too.
    this.#outbox = [];
    for (const pending of this.#unconfirmed.values()) pending.confirmSeq = undefined;
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
    if (this.#drain?.ending || this.#nothingToHandBack()) {
      this.#finishDrain();
      return;
    }
    if (this.#stopped) return;
    const delay = this.#backoff.next();
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
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

  #send(message: Parameters<AgentStream["send"]>[0]): void {
    const stream = this.#stream;
    // After the drain's half-close the stream takes nothing more; a late Release is moot.
    if (!stream || this.#drain?.ending) return;
    if (!stream.send(message) && !stream.closed) {
      // The controller does not read: treat the stream as dead rather than queue without bound.
      this.#closeStream(status.RESOURCE_EXHAUSTED, "the controller is not reading this agent's stream");
    }
  }


  #leaseRenewed(): void {
    if (this.#fenced) {
      this.#fenced = false;
      this.#log.info("lease renewed; no longer fenced");
    }
    this.#armFenceTimer();
  }

  #armFenceTimer(): void {
    clearTimeout(this.#fenceTimer);
    const delay = this.#lease.expiresAt - this.#options.clock.now();
    this.#fenceTimer = setTimeout(() => this.#checkLease(), Math.max(0, Math.ceil(delay)));
  }

  #checkLease(): void {
    this.#fenceTimer = undefined;
    if (this.#stopped || this.#fenced) return;
    if (this.#lease.valid(this.#options.clock.now())) {
      this.#armFenceTimer();
      return;
    }
    this.#fence(`no heartbeat ack within the lease of ${this.#leaseTtlMs} ms`);
  }

  /** The lease lapsed: the shard may already belong to someone else, so stop everything now. */
  #fence(reason: string): void {
    this.#fenced = true;
    this.#fenceReason = reason;
    this.#metrics?.leaseLapsed();
    this.#log.warn({ reason, running: this.#runs.size }, "fenced: aborting every run and starting nothing new");
    this.#abortAll(ExecutionState.LOST, `fenced: ${reason}`);
    // Its shards may belong to another agent by now: it claims none of them in its next Hello,
    // where a restarted controller would take a stale claim for a live one. The controller's
    // snapshot on the next stream says which are still its own.
    for (const held of this.#table.list()) this.#table.remove(held.job, held.shard);
    this.#emitAssignments();
    this.#events.emit("fenced", reason);
    // An open stream that let the lease lapse is stuck or partitioned; a fresh one is the cure,
    // on a fresh connection (a new stream on the old one would wait behind its stuck TCP), to
    // another controller replica first if there are several.
    this.#unresponsive = true;
    this.#closeStream(status.UNAVAILABLE, `fenced: ${reason}`);
    this.#dropClient();
  }


  #onAssignments(update: AssignmentUpdate): void {
    const changes = this.#table.apply(update);
    for (const ref of changes.ignored) {
      this.#log.debug({ job: ref.job, shard: ref.shard, term: String(ref.term), generation: String(ref.generation) }, "ignored an older assignment");
    }
    for (const dropped of changes.dropped) {
      this.#stopRunsOn(dropped, ExecutionState.LOST, `shard ${shardKey(dropped.job, dropped.shard)} is no longer assigned to this agent`);
    }
    // A leaving agent gives back whatever it is handed.
    const revoked = this.#drain ? this.#table.revokeAll() : changes.revoked;
    const releases: AssignmentRef[] = [...changes.unknownRevokes];
    for (const held of revoked) {
      if (this.#runsOn(held) === 0) {
        this.#table.remove(held.job, held.shard);
        releases.push(held);
      }
    }
    this.#release(releases);
    this.#emitAssignments();
    this.#maybeEndDrain();
  }

  /** Releases every revoking shard with nothing running, if any. */
  #releaseIdle(): void {
    const releases: AssignmentRef[] = [];
    for (const held of this.#table.list()) {
      if (held.revoking && this.#runsOn(held) === 0) {
        this.#table.remove(held.job, held.shard);
        releases.push(held);
      }
    }
    if (releases.length === 0) return;
    this.#release(releases);
    this.#emitAssignments();
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
    this.#log.info({ shards: refs.map((ref) => shardKey(ref.job, ref.shard)) }, "releasing shards");
    this.#send({ kind: { case: "release", value: { assignments: refs.map(toAssignment) } } });
  }

  #emitAssignments(): void {
    this.#events.emit("assignments", this.shards());
  }


  #onDispatch(dispatch: Dispatch): void {
    for (const context of dispatch.executions) {
      if (this.#runs.has(context.executionId)) {
        this.#log.debug({ executionId: context.executionId }, "ignored a dispatch of an execution already running");
        continue;
      }
      const refusal = this.#refusal(context);
      if (refusal !== undefined) {
        this.#log.warn({ executionId: context.executionId, reason: refusal }, "refused a dispatch");
        this.#metrics?.ended(context.job, ExecutionState.LOST, undefined);
        this.#onReport(
          create(ExecutionUpdateSchema, {
            executionId: context.executionId,
            state: ExecutionState.LOST,
            finishedAtUnixMs: BigInt(Date.now()),
            error: refusal,
          }),
        );
        continue;
      }
      const executor = this.#executorFor(context);
      if (typeof executor === "string") {
        this.#metrics?.ended(context.job, ExecutionState.FAILED, undefined);
        this.#onReport(
          create(ExecutionUpdateSchema, {
            executionId: context.executionId,
            state: ExecutionState.FAILED,
            finishedAtUnixMs: BigInt(Date.now()),
            error: executor,
          }),
        );
        continue;
      }
      const run = executor.create(context);
      // A completion hook run belongs to no shard: no revoke waits for it.
      const shard = context.fireOutcome === undefined ? refOf(context.assignment!).shard : NO_SHARD;
      const entry: RunEntry = { run, job: context.job, shard };
      this.#runs.set(context.executionId, entry);
      // Dispatched ahead of its fire instant: started at it, by this agent's clock, if the lease
      // still holds then.
      processStarts.add(Number(context.fireTimeUnixMs), this.#dispatchAheadMs, { start: () => this.#startLeased(run) });
    }
  }

  /**
   * Starts a run at its instant only under a valid lease. A process paused past its lease (SIGSTOP,
   * a long GC, a handler blocking the event loop) runs its overdue timers oldest first: the start
   * may come before the fence timer, and must fence instead. The fence aborts the run.
   */
  #startLeased(run: ExecutionRun): void {
    if (!this.#fenced && !this.#lease.valid(this.#options.clock.now())) this.#fence(`no heartbeat ack within the lease of ${this.#leaseTtlMs} ms`);
    if (this.#fenced) return;
    run.start();
  }

  /** The executor the context asks for, or why this agent has none for it. */
  #executorFor(context: ExecutionContext): Executor | string {
    if (context.script) return this.#scripts;
    if (context.http) return this.#http ?? "this agent makes no HTTP calls; start it with --allow-http (allowHttp)";
    if (context.kubernetes) return this.#kubernetes ?? "this agent runs no Kubernetes Jobs; start it with --kubernetes";
    return this.#handlers;
  }

  /** Why a dispatched execution may not run here, or undefined when it may. */
  #refusal(context: ExecutionContext): string | undefined {
    if (this.#drain || this.#stopped) return "the agent is shutting down";
    // The lease lapsed and the fence timer has not fired yet: fence now, which closes the stream,
    // rather than refuse dispatch after dispatch on a stream the controller still trusts.
    if (!this.#fenced && !this.#lease.valid(this.#options.clock.now())) this.#fence(`no heartbeat ack within the lease of ${this.#leaseTtlMs} ms`);
    if (this.#fenced) return "the agent holds no valid lease";
    // A completion hook run is fenced by the lease alone, checked above.
    if (context.fireOutcome !== undefined) return undefined;
    if (!context.assignment?.shard) return "the dispatch names no assignment";
    const wanted = refOf(context.assignment);
    if (this.#table.holds(wanted)) return undefined;
    const held = this.#table.get(wanted.job, wanted.shard);
    const named = `${shardKey(wanted.job, wanted.shard)} at (${wanted.term}, ${wanted.generation})`;
    if (held === undefined) return `the agent does not hold ${named}`;
    return held.revoking
      ? `the agent is releasing ${named}`
      : `the agent holds ${shardKey(held.job, held.shard)} at (${held.term}, ${held.generation}), not ${named}`;
  }

  #onCancel(cancel: Cancel): void {
    for (const id of cancel.executionIds) {
      this.#runs.get(id)?.run.stop(ExecutionState.CANCELLED, cancel.reason || "cancelled");
    }
  }

  /** Every update an executor (or a refused dispatch) produces comes through here. */
  #onReport(update: ExecutionUpdate): void {
    const entry = this.#runs.get(update.executionId);
    if (update.state === ExecutionState.RUNNING) {
      if (entry) entry.running = update;
    } else {
      this.#runs.delete(update.executionId);
      this.#unconfirmed.set(update.executionId, { update, confirmSeq: undefined });
    }
    this.#outbox.push(update);
    this.#flushScheduled ??= setImmediate(() => this.#flush());
    this.#events.emit("execution", update);
    if (entry && update.state !== ExecutionState.RUNNING) this.#runEnded(entry);
    if (this.#runs.size === 0) for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  /** Resolves once no run is left. */
  #idle(): Promise<void> {
    if (this.#runs.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #runEnded(entry: RunEntry): void {
    const held = this.#table.get(entry.job, entry.shard);
    if (held?.revoking && this.#runsOn(held) === 0) {
      this.#table.remove(held.job, held.shard);
      this.#release([held]);
      this.#emitAssignments();
    }
    this.#maybeEndDrain();
  }

  /**
   * Sends the updates of this event-loop turn as one ExecutionUpdates. Before the Welcome they
   * wait for it; without a stream they are dropped, because the next Hello lists both the runs
   * still going and every terminal report not yet confirmed.
   */
  #flush(): void {
    if (this.#flushScheduled) clearImmediate(this.#flushScheduled);
    this.#flushScheduled = undefined;
    if (this.#outbox.length === 0) return;
    if (!this.#stream) {
      this.#outbox = [];
      return;
    }
    if (!this.#welcomed) return;
    // A run that started and ended within this turn needs only its terminal report, which
    // carries its start time too.
    const ended = new Set<string>();
    for (const update of this.#outbox) if (update.state !== ExecutionState.RUNNING) ended.add(update.executionId);
    const updates = ended.size === 0 ? this.#outbox : this.#outbox.filter((u) => u.state !== ExecutionState.RUNNING || !ended.has(u.executionId));
    this.#outbox = [];
    // Confirmed by the ack of the next heartbeat, which the stream delivers after this batch.
    const confirmSeq = this.#seq + 1n;
    for (const update of updates) {
      const pending = this.#unconfirmed.get(update.executionId);
      if (pending && pending.update === update) pending.confirmSeq = confirmSeq;
    }
    // Results and errors run to 4 KiB each: a thousand runs ending in one turn would make one
    // message over the controller's 4 MiB limit, and the stream would fail again after every
    // reconnect. In order, before the next heartbeat, so the confirmation above still holds.
    for (const part of partsWithin(updates, updateBytes)) this.#send({ kind: { case: "executionUpdates", value: { updates: part } } });
  }

  #confirm(seq: bigint): void {
    for (const [id, pending] of this.#unconfirmed) {
      if (pending.confirmSeq !== undefined && pending.confirmSeq <= seq) this.#unconfirmed.delete(id);
    }
  }

  #runsOn(shard: { job: string; shard: number }): number {
    let count = 0;
    for (const entry of this.#runs.values()) {
      if (entry.job === shard.job && entry.shard === shard.shard) count++;
    }
    return count;
  }

  #stopRunsOn(shard: HeldAssignment, state: ExecutionState.LOST | ExecutionState.CANCELLED, reason: string): void {
    for (const entry of [...this.#runs.values()]) {
      if (entry.job === shard.job && entry.shard === shard.shard) entry.run.stop(state, reason);
    }
  }

  #abortAll(state: ExecutionState.LOST | ExecutionState.CANCELLED, reason: string): void {
    for (const entry of [...this.#runs.values()]) entry.run.stop(state, reason);
  }


  #sayGoodbye(): void {
    const drain = this.#drain;
    if (!drain) return;
    this.#flush();
    this.#send({ kind: { case: "goodbye", value: { reason: drain.reason } } });
    this.#releaseIdle();
  }

  /** Once nothing runs and a controller is listening, release the rest and half-close. */
  #maybeEndDrain(): void {
    const drain = this.#drain;
    if (!drain || drain.ending || this.#stopped || this.#runs.size > 0 || !this.#welcomed) return;
    this.#releaseIdle();
    this.#flush();
    drain.ending = true;
    clearTimeout(drain.graceTimer);
    clearInterval(this.#heartbeatTimer);
    this.#log.info("drained; closing the stream");
    this.#stream?.end();
    drain.endTimer = setTimeout(() => this.#finishDrain(), HALF_CLOSE_WAIT_MS);
  }

  /**
   * A draining agent with no controller to talk to, nothing running and no report to deliver
   * has nothing to wait for: its lease moves its shards without it.
   */
  #nothingToHandBack(): boolean {
    return this.#drain !== undefined && !this.#welcomed && this.#runs.size === 0 && this.#unconfirmed.size === 0;
  }

  #drainGraceOver(): void {
    const drain = this.#drain;
    if (!drain || drain.ending || this.#stopped) return;
    drain.graceTimer = undefined;
    this.#log.warn({ running: this.#runs.size }, "drain grace over: aborting what still runs");
    this.#abortAll(ExecutionState.LOST, `the agent is shutting down; the drain grace of ${this.#options.drainGraceMs} ms passed`);
    if (this.#welcomed) {
      this.#maybeEndDrain();
    } else {
      this.#log.warn("no controller reachable within the drain grace; leaving without a goodbye");
      this.#finishDrain();
    }
  }

  #finishDrain(): void {
    const drain = this.#drain;
    if (!drain || this.#stopped) return;
    this.#stopped = true;
    clearTimeout(drain.graceTimer);
    clearTimeout(drain.endTimer);
    this.#shutDown("drained");
    this.#events.emit("drained");
    // Runs aborted by the grace may still be ending: a script's processes take their kill grace.
    void this.#idle().then(drain.resolve);
  }

  /** Clears every timer and closes the stream and the channel. */
  #shutDown(reason: string): void {
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#welcomeTimer);
    clearTimeout(this.#fenceTimer);
    clearInterval(this.#heartbeatTimer);
    if (this.#flushScheduled) clearImmediate(this.#flushScheduled);
    this.#flushScheduled = undefined;
    this.#closeStream(status.CANCELLED, reason);
    this.#client?.close();
    this.#client = undefined;
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
function updateBytes(update: ExecutionUpdate): number {
  return 256 + 3 * (update.executionId.length + update.result.length + update.error.length);
}
