import type { ErrorCode } from "../../../shared/errors.js";
import { executorFromFields, type ExecutorFields } from "../../../shared/manifest/executor-fields.js";
import type { JobSpec } from "../../../shared/manifest/job-spec.js";
import type { ExecutionRecord } from "../store-port.js";
import { type CoreConfig, DEFAULT_CORE_CONFIG } from "../config.js";
import { MemoryStore } from "../memory-store.js";
import { ControllerCore } from "../controller-core.js";
import { type ExecutionTracing, NO_TRACING } from "../execution-tracing.js";
import type { AgentCommand, AssignmentRef, CoreEvent, ExecutionContext } from "../messages.js";

/**
 * A job spec with the manifest's defaults, for tests. What it runs is given as a manifest does
 * (handler, script, http or kubernetes; handler "work" when none is), or as `runs`.
 */
export function testSpec(name: string, overrides: Partial<JobSpec> & Partial<ExecutorFields> = {}): JobSpec {
  const { handler, script, http, kubernetes, ...rest } = overrides;
  const given = handler !== undefined || script !== undefined || http !== undefined || kubernetes !== undefined;
  return {
    name,
    labels: {},
    description: "",
    schedule: "* * * * * *",
    timeZone: "UTC",
    shards: 4,
    shardParameters: {},
    parameter: "",
    runs: given ? executorFromFields({ handler, script, http, kubernetes }) : { kind: "handler", handler: "work" },
    strategy: "sticky",
    failover: "fenced",
    misfire: "fire-once",
    maxCatchUp: 10,
    overlap: "forbid",
    timeoutSeconds: 0,
    retries: { limit: 0, backoffSeconds: 10 },
    placement: { selector: {} },
    suspend: false,
    ...rest,
  };
}

/**
 * A model of one agent seen through its stream: what the core told it. It runs nothing by
 * itself; tests report outcomes explicitly, so every step is visible in the test.
 */
export class ModelAgent {
  readonly held = new Map<string, AssignmentRef>();
  readonly revoked = new Map<string, AssignmentRef>();
  readonly dispatched: ExecutionContext[] = [];
  readonly cancelled: string[] = [];
  /** Every command's kind, in the order received ("snapshot" for a snapshot AssignmentUpdate). */
  readonly received: string[] = [];
  /** The lease each heartbeat ack granted, in ms from the heartbeat. */
  readonly ackTtls: number[] = [];
  welcomed = false;
  /** The Welcome it received. */
  welcome: Extract<AgentCommand, { kind: "welcome" }> | undefined;
  closedReason: string | undefined;
  /** The status its stream was ended with, when the core named one (a refused Hello). */
  closedCode: ErrorCode | undefined;

  constructor(
    readonly id: string,
    readonly session: string,
  ) {}

  receive(command: AgentCommand): void {
    this.received.push(command.kind === "assignments" && command.snapshot ? "snapshot" : command.kind);
    switch (command.kind) {
      case "welcome":
        this.welcomed = true;
        this.welcome = command;
        return;
      case "heartbeat-ack":
        this.ackTtls.push(command.leaseTtlMs);
        return;
      case "assignments":
        if (command.snapshot) {
          this.held.clear();
          this.revoked.clear();
        }
        for (const ref of command.add) this.held.set(`${ref.job}/${ref.shard}`, ref);
        for (const ref of command.revoke) this.revoked.set(`${ref.job}/${ref.shard}`, ref);
        return;
      case "dispatch":
        this.dispatched.push(...command.executions);
        return;
      case "cancel":
        this.cancelled.push(...command.executionIds);
        return;
    }
  }

  shardsOf(job: string): number[] {
    return [...this.held.values()]
      .filter((r) => r.job === job)
      .map((r) => r.shard)
      .sort((a, b) => a - b);
  }

  dispatchedIds(): string[] {
    return this.dispatched.map((e) => e.executionId);
  }
}

/** Drives a ControllerCore with a fake clock and model agents, applying effects as a shell would. */
export class CoreHarness {
  now = Date.UTC(2026, 0, 1, 0, 0, 0);
  core!: ControllerCore;
  readonly durable = new MemoryStore();
  readonly agents = new Map<string, ModelAgent>();
  /** Every model agent ever connected, including ones replaced by a newer stream. */
  private readonly streams: ModelAgent[] = [];
  readonly events: CoreEvent[] = [];
  private sessions = 0;
  /** Release revoked shards as soon as nothing of them runs, as the real agent does. */
  autoRelease = true;

  constructor(
    readonly config: CoreConfig = DEFAULT_CORE_CONFIG,
    /** The trace port the core is given, on every start. */
    readonly tracing: ExecutionTracing = NO_TRACING,
  ) {
    this.start();
  }

  /** Starts (or restarts) the controller from what was made durable. */
  start(): void {
    this.core = new ControllerCore(this.config, this.durable.snapshot(), this.now, this.tracing);
    this.flush();
  }

  /** Moves the clock forward, running every timer due on the way, one millisecond step per timer. */
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const next = this.core.nextDeadline();
      if (next === undefined || next > until) break;
      this.now = Math.max(this.now, next);
      this.core.tick(this.now);
      this.flush();
    }
    this.now = until;
    this.core.tick(this.now);
    this.flush();
  }

  /** Advances in heartbeat steps, with every connected agent except `silent` heartbeating. */
  run(ms: number, silent: readonly string[] = []): void {
    const step = this.config.heartbeatIntervalMs;
    for (let t = 0; t < ms; t += step) {
      this.advance(Math.min(step, ms - t));
      for (const agent of this.agents.values()) {
        if (agent.closedReason !== undefined || silent.includes(agent.id)) continue;
        this.core.heartbeat(agent.session, 0, this.now);
        this.flush();
      }
    }
  }

  apply(spec: JobSpec): void {
    this.core.applyJob(spec.name, spec, `name: ${spec.name}`, this.now);
    this.flush();
  }

  connect(
    id: string,
    options: {
      handlers?: string[];
      executors?: string[];
      maxConcurrent?: number;
      capacity?: number;
      labels?: Record<string, string>;
      held?: AssignmentRef[];
      executions?: { executionId: string; state: "running" }[];
      /** Hello.instance_id: which process speaks; absent, the same one as before. */
      instanceId?: string;
      /** Where the stream comes from, as the shell would say. */
      peer?: string;
    } = {},
  ): ModelAgent {
    const agent = new ModelAgent(id, `s${++this.sessions}`);
    const before = this.agents.get(id);
    this.agents.set(id, agent);
    this.streams.push(agent);
    this.core.hello(
      agent.session,
      {
        agentId: id,
        labels: options.labels ?? {},
        capacity: options.capacity ?? 1,
        handlers: options.handlers ?? ["work"],
        executors: options.executors ?? [],
        maxConcurrent: options.maxConcurrent ?? 0,
        version: "test",
        held: options.held ?? [],
        executions: options.executions ?? [],
        ...(options.instanceId === undefined ? {} : { instanceId: options.instanceId }),
      },
      this.now,
      options.peer,
    );
    this.flush();
    // A refused Hello leaves the process that holds the id as the harness's agent of that id.
    if (agent.closedCode !== undefined && before !== undefined) this.agents.set(id, before);
    return agent;
  }

  /** The stream drops without a goodbye (crash or partition). */
  crash(id: string): void {
    const agent = this.agents.get(id)!;
    agent.closedReason = "crashed";
    this.core.streamClosed(agent.session, this.now);
    this.flush();
  }

  /** The agent releases every shard it was asked to give back. */
  releaseRevoked(id: string): void {
    const agent = this.agents.get(id)!;
    const refs = [...agent.revoked.values()];
    agent.revoked.clear();
    for (const ref of refs) agent.held.delete(`${ref.job}/${ref.shard}`);
    this.core.release(agent.session, refs, this.now);
    this.flush();
  }

  report(id: string, executionId: string, state: "running" | "succeeded" | "failed" | "timed-out" | "cancelled" | "lost"): void {
    const agent = this.agents.get(id)!;
    this.core.executionUpdates(agent.session, [{ executionId, state, startedAt: this.now, finishedAt: this.now }], this.now);
    this.flush();
  }

  /** Reports every dispatched execution of an agent that is still open as succeeded. */
  succeedAll(id: string): void {
    for (const context of this.agents.get(id)!.dispatched) {
      if (this.core.openExecution(context.executionId) !== undefined) this.report(id, context.executionId, "succeeded");
    }
  }

  execution(id: string): ExecutionRecord | undefined {
    return this.durable.executions.get(id);
  }

  executionsOf(job: string): ExecutionRecord[] {
    return [...this.durable.executions.values()].filter((e) => e.job === job);
  }

  /** Applies effects the way the shell does: persist first, then deliver, close, publish. */
  flush(): void {
    const effects = this.core.take();
    this.durable.apply(effects.persist);
    for (const { session, command } of effects.messages) {
      for (const agent of this.streams) {
        if (agent.session === session && agent.closedReason === undefined) agent.receive(command);
      }
    }
    for (const { session, reason, code } of effects.closes) {
      for (const agent of this.streams) {
        if (agent.session === session && agent.closedReason === undefined) {
          agent.closedReason = reason;
          agent.closedCode = code;
          this.core.streamClosed(session, this.now);
        }
      }
    }
    this.events.push(...effects.events);
    if (this.autoRelease) this.releaseIdleRevoked();
    if (this.core.hasEffects) this.flush();
  }

  /** As a real agent does: a revoked shard with nothing running is released at once. */
  private releaseIdleRevoked(): void {
    for (const agent of this.agents.values()) {
      if (agent.closedReason !== undefined || agent.revoked.size === 0) continue;
      const idle = [...agent.revoked.values()].filter(
        (ref) =>
          !agent.dispatched.some(
            (c) => c.job === ref.job && c.shard === ref.shard && this.core.openExecution(c.executionId) !== undefined,
          ),
      );
      if (idle.length === 0) continue;
      for (const ref of idle) {
        agent.revoked.delete(`${ref.job}/${ref.shard}`);
        agent.held.delete(`${ref.job}/${ref.shard}`);
      }
      this.core.release(agent.session, idle, this.now);
    }
  }
}

/** Two agents sharing a manual-only 4-shard job (or `spec`), past the startup grace. */
export function twoAgents(spec = testSpec("job", { schedule: undefined })): { h: CoreHarness; a: ModelAgent; b: ModelAgent } {
  const h = new CoreHarness();
  const a = h.connect("a");
  const b = h.connect("b");
  h.apply(spec);
  return { h, a, b };
}

/** One agent holding a manual-only 2-shard job, with `overrides` to its spec. */
export function oneAgent(overrides: Partial<JobSpec> = {}): { h: CoreHarness; a: ModelAgent } {
  const h = new CoreHarness();
  const a = h.connect("a");
  h.apply(testSpec("job", { schedule: undefined, shards: 2, ...overrides }));
  return { h, a };
}

/** The agent that owns the shard, if any. */
export function ownerOf(h: CoreHarness, job: string, shard: number): string | undefined {
  return h.core.listAssignments(job).find((x) => x.shard === shard)?.agent;
}
