/**
 * The deterministic simulator's world: the real ControllerCore, a model of its store and shell,
 * agents that are the real AgentCore (agent/core/agent-core.ts, what the shipped agent runs),
 * each fed by the simulated network and its own drifting clock, and a network of one link per
 * agent. The world carries out each agent core's effects as the agent's runtime would: sends go
 * on the simulated wire, runs start and finish when the world says (their durations seeded).
 * Time is simulated; every source of chance is the scenario's seed. The invariants (numbered as
 * in docs/architecture.md, "Invariants") are checked after every event: 1, one acting owner per
 * shard; 2, one agent running each fire of a shard; 3, every fire accounted for, none started
 * twice; 4, nothing finished or recorded ever lost; 7, one process per agent id, at each
 * impostor step; 9, a reason for every wait, after each advance; 10, no run lost to a graceful
 * drain, at the end.
 */
import { create } from "@bufbuild/protobuf";
import { ExecutionUpdateSchema, type ExecutionUpdate as UpdateMessage } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { EXECUTION_STATE_NAMES } from "../../shared/execution-view.js";
import { ShardlineError } from "../../shared/errors.js";
import type { JobSpec } from "../../shared/manifest/job-spec.js";
import { AgentCore } from "../../agent/core/agent-core.js";
import { shardKey, type AssignmentRef as HeldRef } from "../../agent/core/assignment-table.js";
import type { AgentEffect, AgentInput, AgentMessage, ControllerMessage } from "../../agent/core/events.js";
import { type CoreConfig, DEFAULT_CORE_CONFIG } from "../core/config.js";
import { ControllerCore } from "../core/controller-core.js";
import type { AgentCommand, AssignmentRef, ExecutionContext, ExecutionUpdate } from "../core/messages.js";
import { MemoryStore } from "../core/memory-store.js";
import { testSpec } from "../core/testing/core-harness.js";
import { TERMINAL_STATES, type ExecutionRecord, type ExecutionStateName, type JobRecord, type StoreBatch } from "../store/store.js";

/** One thing that happens to the world, chosen by the scenario. */
export type Step =
  | { kind: "advance"; ms: number }
  /** The agent's process dies: its runs stop, its stream resets. */
  | { kind: "crash"; agent: number }
  /** A crashed agent's process starts again, with nothing held: a new instance of its id. */
  | { kind: "restart"; agent: number }
  /** The agent's stream drops; both ends see it; the agent reconnects after a backoff. */
  | { kind: "drop"; agent: number }
  /** The agent's link goes down: both ends stay alive, messages wait (TCP), until heal. */
  | { kind: "partition"; agent: number }
  | { kind: "heal"; agent: number }
  /**
   * The agent heartbeats four times slower than it should, until `fast`: three of every four of
   * its core's heartbeats never leave the process.
   */
  | { kind: "slow"; agent: number }
  | { kind: "fast"; agent: number }
  /**
   * The controller dies and a new one starts from the store, under a higher term: at once
   * (SQLite), or, with `leaderLeases`, once the dead leader's etcd lease has run out.
   */
  | { kind: "failover" }
  /**
   * The controller stops on purpose (SIGTERM): it sends nothing more and hands over at once to a
   * new one, which with `leaderLeases` is elected without waiting for any lease to run out.
   */
  | { kind: "resign" }
  /** A job is applied again with another shard count. */
  | { kind: "edit"; job: number; shards: number }
  /** A job is deleted; a later `edit` of it applies it again under the same name. */
  | { kind: "delete"; job: number }
  /**
   * A second process says Hello under the agent's id while the agent is connected with a valid
   * lease (a copy-pasted id, a replacement pod started early): it must be refused and sent nothing.
   */
  | { kind: "impostor"; agent: number }
  /**
   * The agent is asked to leave (SIGTERM): it says Goodbye, releases each shard as its runs end,
   * half-closes its stream and exits. A later `restart` starts a new process.
   */
  | { kind: "drain"; agent: number }
  /**
   * The agent's link delays every message by `ms` each way from now on (0 ends it), in order
   * within the link: messages of different agents' streams arrive in another order than sent.
   */
  | { kind: "delay"; agent: number; ms: number }
  /**
   * The agent's process freezes for `ms` (SIGSTOP, a long GC pause): it reads, sends and runs
   * nothing meanwhile. On waking, its overdue timers come first, as in Node's event loop: the
   * core's lease check before anything it reads.
   */
  | { kind: "pause"; agent: number; ms: number }
  /**
   * The controller's process cannot run for `ms` (a long GC pause, a starved CPU): it reads,
   * sends and times nothing, while agents and their clocks go on. On waking, as its driver does,
   * it tells the core how long it stalled (which extends the leases it could not renew) before it
   * reads anything. Only for a single controller (without `leaderLeases`): a stalled leader's own
   * etcd lease is the shell's matter.
   */
  | { kind: "stall"; ms: number }
  /**
   * The controller's store falls behind for `ms`: the shell holds new fires back meanwhile
   * (take({ holdFires })), then releases them. Fires due in between are made late, or recorded as
   * missed when a whole schedule period late.
   */
  | { kind: "store-behind"; ms: number }
  /**
   * The agent's wall clock steps by `ms` (an NTP correction, a VM restored): fire instants, read
   * on the wall clock, come that much sooner (or later) for it, while its monotonic clock, which
   * the lease runs on, goes on as before. Bounded by the dispatch-ahead as in the runtime.
   */
  | { kind: "clock-jump"; agent: number; ms: number }
  /**
   * The rolling job gets a new revision (a new parameter): a good one, or one whose runs all
   * fail, which its rollout's analysis must abort before it leaves its first wave.
   */
  | { kind: "revise"; bad: boolean }
  /** An operator promotes the rolling job's rollout (every remaining step with `full`). */
  | { kind: "promote"; full: boolean }
  /** An operator aborts the rolling job's rollout, or retries an aborted one. */
  | { kind: "abort-rollout" }
  | { kind: "retry-rollout" };

export interface Scenario {
  /** Seeds what the steps leave to chance: run durations, reconnect backoffs. */
  seed: number;
  /** Each agent's clock rate error (0.001 runs 0.1% fast); bounded by MAX_DRIFT. */
  drifts: number[];
  steps: Step[];
  /**
   * Controllers as replicas on etcd: the leader bounds agent leases by its own leadership lease
   * (renewed every third of its TTL), and a new leader starts only after that lease ran out,
   * without waiting out the agents' leases. Absent: one controller restarted on its store.
   */
  leaderLeases?: boolean;
  /**
   * Adds a daemon job (each shard runs for as long as an agent owns it) and checks that every
   * daemon shard runs again once the faults end.
   */
  daemons?: boolean;
  /**
   * The controller's disconnect grace (CoreConfig.disconnectGraceMs) for this scenario: how long
   * a started run goes on on an agent whose lease lapsed. Absent: the config's.
   */
  graceMs?: number;
  /** The controller's CoreConfig.maxFireExecutionsPerBatch for this scenario; small ones split fires over batches. Absent: the config's. */
  fireBudget?: number;
}

/** The largest clock rate error the simulator gives an agent: 1,000 ppm, 20x a poor crystal. */
export const MAX_DRIFT = 0.001;

/** A broken invariant, with the simulated instant and what was seen. */
export class InvariantViolation extends Error {
  constructor(
    readonly invariant: string,
    readonly at: number,
    detail: string,
  ) {
    super(`invariant ${invariant} broken at t=${at} ms: ${detail}`);
  }
}

const T0 = Date.UTC(2026, 0, 1, 0, 0, 0);
/** How long after a partition a controller notices a dead stream by keepalive (10 s ping + 5 s). */
const KEEPALIVE_DETECT_MS = 15_000;
const MAX_BACKOFF_MS = 5_000;
/** At the end, faults stop and the world runs this long so every fire can settle. */
const SETTLE_MS = 20_000;
/** ... and up to this much longer while a fire made before is still open (see settle). */
const SETTLE_EXTRA_MS = 20_000;
/** The steps that are faults of the agent itself rather than of the control plane (invariant 6). */
const OWN_FAULTS: ReadonlySet<Step["kind"]> = new Set(["crash", "drop", "partition", "slow", "impostor", "drain", "delay", "pause"]);
/**
 * Faults of the agent's own that may lose a run whatever its lease: its process dies, its stream
 * drops, another process takes its id (invariant 10). A partition, a pause, a delay or slow
 * heartbeats lose one only by lapsing its lease, which the invariant checks for itself.
 */
const LOSING_FAULTS: ReadonlySet<Step["kind"]> = new Set(["crash", "drop", "impostor"]);
/** A grace longer than any control-plane outage the steps make, so invariant 6 must hold under it. */
const GRACE_OVER_OUTAGES_MS = 8_000;
/** With leaderLeases: the leader's etcd lease TTL, its renewal period, and how early it stops acting. */
const LEADER_TTL_MS = 2_000;
const LEADER_RENEW_MS = 667;
const LEADER_SAFETY_MS = 250;
/** With leaderLeases, three replicas serve; agents list all three, each starting at its own. */
const REPLICAS = ["controller-0", "controller-1", "controller-2"];
/** How long a follower holds an agent's stream while no controller leads (following.ts). */
const HOLD_WITHOUT_LEADER_MS = 3_000;

/** The jobs every scenario runs: fenced failover, catch-up misfire, so every fire is recorded. */
export function simJobs(daemons = false): JobSpec[] {
  return [
    testSpec("every-second", { shards: 3, overlap: "forbid", misfire: "catch-up", maxCatchUp: 10 }),
    testSpec("every-2s", { shards: 2, schedule: "*/2 * * * * *", overlap: "allow", misfire: "catch-up", maxCatchUp: 10 }),
    // At-least-once by choice: shards move when the stream closes, so invariants 1 and 2 are not
    // theirs; every fire must still be accounted for.
    testSpec("fast", { shards: 2, schedule: "*/3 * * * * *", failover: "fast", misfire: "catch-up", maxCatchUp: 10 }),
    // No re-runs: a lost run ends lost, with its reason.
    testSpec("no-rerun", { shards: 2, schedule: "*/3 * * * * *", failover: "off", misfire: "catch-up", maxCatchUp: 10 }),
    // Spread across the agents' two zones: placement by topology under the same faults.
    testSpec(ROLLING_JOB, {
      shards: 4,
      schedule: "*/2 * * * * *",
      misfire: "catch-up",
      maxCatchUp: 10,
      placement: { selector: {}, spreadBy: ["zone"] },
      parameter: "rev-0",
      rollout: {
        steps: [{ wave: { matchLabels: { zone: "zone-a" } } }, { analysis: { minExecutions: 2, maxFailures: 0 } }, { weight: 50 }, { pause: { fires: 2 } }],
      },
    }),
    // A third of its runs fail (see finishRun) and are retried; once every shard of a fire has
    // ended, one agent runs its completion hook, fenced by its lease alone.
    testSpec("flaky", {
      shards: 2,
      schedule: "*/3 * * * * *",
      misfire: "catch-up",
      maxCatchUp: 10,
      retries: { limit: 2, backoffSeconds: 1 },
      // A run longer than a second times out (and is retried like a failure).
      timeoutSeconds: 1,
      onFireComplete: { handler: "hook" },
    }),
    ...(daemons ? [daemonSpec()] : []),
  ];
}

/**
 * The job whose changes roll out (the `revise` steps): zone-a's agents first, an analysis that a
 * bad revision (every run fails) cannot pass, then every shard after two fires.
 */
const ROLLING_JOB = "zoned";
/** A revision whose parameter ends so fails every run. */
const BAD = "-bad";
const ROLLOUT_STEPS: ReadonlySet<Step["kind"]> = new Set(["revise", "promote", "abort-rollout", "retry-rollout"]);
/** Steps that are admin calls: a stalled controller takes none. */
const ADMIN_STEPS: ReadonlySet<Step["kind"]> = new Set(["edit", "delete", ...ROLLOUT_STEPS]);

/** The daemon job: each shard runs for as long as an agent owns it; one run in five ends by itself and is started again. */
const DAEMON_JOB = "consumer";
const DAEMON_SHARDS = 2;

function daemonSpec(): JobSpec {
  const spec = testSpec(DAEMON_JOB, { shards: DAEMON_SHARDS, daemon: true, retries: { limit: 0, backoffSeconds: 1 } });
  delete spec.schedule;
  return spec;
}

/** The sim's agents sit in two zones: agent-0, agent-2... in zone-a, the others in zone-b. */
function zoneOf(agentId: string): string {
  return Number(agentId.slice(agentId.lastIndexOf("-") + 1)) % 2 === 0 ? "zone-a" : "zone-b";
}

/** A run the world carries out for an agent core, as an executor would. */
interface Run {
  context: ExecutionContext;
  /** When the core asked to be told that its start instant came; cleared once told. */
  dueAt?: number;
  /** The real instant it started; undefined while it waits for its fire instant. */
  startAt?: number;
  durationMs: number;
  /** It runs past its context's timeoutMs: the agent aborts it then and reports TIMED_OUT. */
  timesOut?: boolean;
}

/** A message on the wire of one stream. */
interface Wire {
  session: string;
  toController: boolean;
  /** When it arrives: the sending instant plus the link's delay. */
  at: number;
  deliver: () => void;
}

/** The sim's agents' settings: the TypeScript agent's defaults (the addresses are the world's). */
const AGENT_CORE_OPTIONS = { drainGraceMs: 30_000, welcomeTimeoutMs: 5_000, reconnect: { initialMs: 100, maxMs: MAX_BACKOFF_MS } };

/** One agent process: the real agent core, and what its runtime would hold around it. */
class SimAgent {
  alive = true;
  readonly core: AgentCore;
  /** The stream this agent has open, from its side. */
  session: string | undefined;
  /** The runs its executors would hold, by execution id. */
  runs = new Map<string, Run>();
  /** The contexts of the dispatch being stepped, for the runs the core holds. */
  dispatching = new Map<string, ExecutionContext>();
  /** The core asked for a flush at the end of this turn. */
  flushDue = false;
  /** Effects are being carried out: a step made meanwhile leaves its effects to that loop. */
  carryingOut = false;
  slow = false;
  /** Heartbeats the core sent; while slow, only one in four leaves the process. */
  heartbeats = 0;
  linkUp = true;
  /** The link's delay each way, in ms. */
  delayMs = 0;
  /** How far its wall clock is off true time (clock-jump steps); its monotonic clock is not. */
  wallOffsetMs = 0;
  /** While frozen (a paused process): when it wakes. */
  frozenUntil: number | undefined;
  /** When the last message each way arrives: a link delivers in order. */
  lastArrival = { toController: 0, toAgent: 0 };

  constructor(
    readonly id: string,
    readonly drift: number,
    /** Hello.instance_id: a restarted process is a new instance. */
    readonly instance: string,
    /** The controller addresses it is started with (--controller), in its order. */
    addresses: readonly string[],
    /** The world's source of chance, for the reconnect backoff's jitter. */
    random: () => number,
  ) {
    this.core = new AgentCore({ ...AGENT_CORE_OPTIONS, addresses, random });
  }

  /** The agent's own monotonic clock at a real instant. */
  clock(real: number): number {
    return (real - T0) * (1 + this.drift);
  }

  /** The first whole real millisecond at which its clock reads `local` or later. */
  realAt(local: number): number {
    let real = T0 + Math.ceil(local / (1 + this.drift));
    while (this.clock(real) < local) real++;
    return real;
  }
}

/** A tiny deterministic PRNG (mulberry32): the world's only source of chance besides the steps. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class World {
  now = T0;
  readonly durable = new MemoryStore();
  /** With leaderLeases: when etcd last renewed the leader's lease, and when it renews it next. */
  private leaderRenewedAt = 0;
  private nextRenewalAt: number | undefined;
  /** With leaderLeases, after a failover: no controller runs until this instant. */
  private controllerDownUntil: number | undefined;
  /** While the controller's process stalls: since when, and until when (the stall step). */
  private controllerStall: { since: number; until: number } | undefined;
  /** While the store is behind (a store-behind step): the controller's shell holds new fires back. */
  private firesHeldUntil: number | undefined;
  /** The controllers' addresses (three replicas with leaderLeases, else one), and which leads. */
  private readonly replicas: readonly string[];
  private leader = 0;
  /** With leaderLeases, after a failover: the dead leader's replica, down until the next election. */
  private downReplica: number | undefined;
  /**
   * Streams a follower holds while no controller leads, by session: at the election the winner
   * serves its own (what the agent sent meanwhile is read then) and the others redirect theirs.
   */
  private readonly followerHolds = new Map<string, { agent: SimAgent; replica: number; queued: (() => void)[] }>();
  core: ControllerCore;
  readonly agents: SimAgent[];
  private readonly random: () => number;
  private sessionCount = 0;
  private instanceCount = 0;
  /** Revisions the `revise` steps made. */
  private revisions = 0;
  /** Each job's record as last persisted: what invariant 8 compares a batch's new runs with. */
  private readonly lastJobRecords = new Map<string, JobRecord>();
  /** First attempts already seen persisted. */
  private readonly firstAttempts = new Set<string>();
  /** Sessions of second processes under a held id: the controller must refuse them and send them nothing. */
  private readonly impostors = new Set<string>();
  /** Sessions the controller has open, by agent id. */
  private readonly controllerSessions = new Map<string, string>();
  /** Messages on their way, first in first out: each is delivered as an event of its own. */
  private readonly inFlight: Wire[] = [];
  /** Messages held by a partitioned link, by agent. */
  private readonly held = new Map<string, Wire[]>();
  /** Streams one end closed while the link was down: the other end learns at heal or keepalive. */
  private readonly closeNotices: { session: string; agent: string; at: number; toController: boolean }[] = [];
  /** Every execution id that ever started, with its agent: none may start twice. */
  private readonly started = new Map<string, string>();
  /** Finished executions as first seen finished: the store may never lose or change them. */
  private readonly finished = new Map<string, string>();
  private readonly cursors = new Map<string, number>();
  private readonly jobs: JobSpec[];
  /** Which kinds of fault of its own each agent had (a partition, a pause, ...): see invariants 6 and 10. */
  private readonly ownFaults = new Map<string, Set<Step["kind"]>>();
  /** Agents whose lease lapsed at some point, whatever the cause: see invariant 10. */
  private readonly fencedAgents = new Set<string>();
  /** When each job's shard count changed, for the final accounting. */
  private readonly edits: number[] = [];
  /** While each job is deleted: from when, to when it was applied again (open while deleted). */
  private readonly deletions: { job: string; from: number; to?: number }[] = [];

  readonly config: CoreConfig;

  constructor(
    readonly scenario: Scenario,
    config: CoreConfig = DEFAULT_CORE_CONFIG,
  ) {
    this.config = {
      ...config,
      ...(scenario.graceMs === undefined ? {} : { disconnectGraceMs: scenario.graceMs }),
      ...(scenario.fireBudget === undefined ? {} : { maxFireExecutionsPerBatch: scenario.fireBudget }),
    };
    this.random = prng(scenario.seed);
    this.replicas = scenario.leaderLeases === true ? REPLICAS : ["controller"];
    this.agents = scenario.drifts.map((drift, i) => new SimAgent(`agent-${i}`, drift, this.newInstance(), this.addressesOf(i), this.random));
    if (scenario.leaderLeases === true) this.durable.predecessorLeasesEndWithinMs = 0;
    this.core = new ControllerCore(this.config, this.durable.snapshot(), this.now);
    if (scenario.leaderLeases === true) this.renewLeadership();
    this.jobs = simJobs(scenario.daemons === true);
    for (const spec of this.jobs) this.core.applyJob(spec.name, spec, `name: ${spec.name}`, this.now);
    this.flushController();
    for (const agent of this.agents) this.stepAgent(agent, { kind: "start" });
  }

  /** Runs the scenario, then settles; throws InvariantViolation at the first broken invariant. */
  run(): void {
    for (const step of this.scenario.steps) this.apply(step);
    this.settle();
  }

  apply(step: Step): void {
    const agent = "agent" in step ? this.agents[step.agent % this.agents.length]! : undefined;
    // A stalled controller takes no admin call and says no Hello meanwhile (it would run the
    // core's timers before it heard of the stall); it can still be killed.
    if (this.controllerStall !== undefined && (ADMIN_STEPS.has(step.kind) || step.kind === "impostor" || step.kind === "resign")) return;
    // Nor does a controller that is not there (a leader dead, none elected yet).
    if (this.controllerDownUntil !== undefined && ROLLOUT_STEPS.has(step.kind)) return;
    // Faults of the agent's own, which may cost it its lease whatever the grace (invariant 6).
    if (agent !== undefined && OWN_FAULTS.has(step.kind)) this.ownFaults.set(agent.id, (this.ownFaults.get(agent.id) ?? new Set()).add(step.kind));
    switch (step.kind) {
      case "advance":
        this.advanceTo(this.now + step.ms);
        this.checkReasons();
        return;
      case "crash":
        if (agent!.alive) this.crash(agent!);
        return;
      case "restart":
        if (!agent!.alive) {
          const fresh = new SimAgent(agent!.id, agent!.drift, this.newInstance(), this.addressesOf(step.agent % this.agents.length), this.random);
          fresh.linkUp = agent!.linkUp;
          fresh.delayMs = agent!.delayMs;
          fresh.wallOffsetMs = agent!.wallOffsetMs;
          fresh.lastArrival = agent!.lastArrival;
          this.agents[this.agents.indexOf(agent!)] = fresh;
          this.stepAgent(fresh, { kind: "start" });
        }
        return;
      case "drop":
        if (agent!.alive && agent!.session !== undefined && agent!.linkUp) {
          const session = agent!.session;
          this.agentStreamClosed(agent!);
          this.controllerStreamClosed(agent!.id, session);
        }
        return;
      case "partition":
        agent!.linkUp = false;
        return;
      case "heal":
        this.heal(agent!);
        return;
      case "slow":
        agent!.slow = true;
        return;
      case "fast":
        agent!.slow = false;
        return;
      case "failover":
        this.failover();
        return;
      case "resign":
        this.resign();
        return;
      case "stall":
        if (this.scenario.leaderLeases !== true && this.controllerDownUntil === undefined && this.controllerStall === undefined && step.ms > 0) {
          this.controllerStall = { since: this.now, until: this.now + step.ms };
        }
        return;
      case "store-behind":
        if (step.ms > 0) this.firesHeldUntil = Math.max(this.firesHeldUntil ?? 0, this.now + step.ms);
        return;
      case "impostor":
        this.impostor(agent!);
        return;
      case "drain":
        if (agent!.alive && !agent!.core.draining) this.stepAgent(agent!, { kind: "drain", reason: "SIGTERM" });
        return;
      case "delay":
        agent!.delayMs = step.ms;
        return;
      case "pause":
        if (agent!.alive && agent!.frozenUntil === undefined && step.ms > 0) this.freeze(agent!, step.ms);
        return;
      case "clock-jump":
        agent!.wallOffsetMs += step.ms;
        return;
      case "delete": {
        const spec = this.jobs[step.job % this.jobs.length]!;
        if (this.deletions.some((d) => d.job === spec.name && d.to === undefined)) return;
        this.deletions.push({ job: spec.name, from: this.now });
        this.core.deleteJob(spec.name, this.now);
        this.flushController();
        this.check();
        return;
      }
      case "revise": {
        const index = this.jobs.findIndex((job) => job.name === ROLLING_JOB);
        const spec = this.jobs[index]!;
        const changed = { ...spec, parameter: `rev-${++this.revisions}${step.bad ? BAD : ""}` };
        this.jobs[index] = changed;
        this.core.applyJob(changed.name, changed, `name: ${changed.name}`, this.now);
        this.flushController();
        this.check();
        return;
      }
      case "promote":
      case "abort-rollout":
      case "retry-rollout":
        try {
          if (step.kind === "promote") this.core.promoteRollout(ROLLING_JOB, step.full, "sim", this.now);
          else if (step.kind === "abort-rollout") this.core.abortRollout(ROLLING_JOB, "sim", this.now);
          else this.core.retryRollout(ROLLING_JOB, "sim", this.now);
        } catch (error) {
          // Nothing in progress (or nothing aborted) to act on: refused, as the CLI would be.
          if (!(error instanceof ShardlineError && error.code === "failed-precondition")) throw error;
        }
        this.flushController();
        this.check();
        return;
      case "edit": {
        const spec = this.jobs[step.job % this.jobs.length]!;
        const changed = { ...spec, shards: step.shards };
        this.jobs[step.job % this.jobs.length] = changed;
        this.edits.push(this.now);
        const deleted = this.deletions.find((d) => d.job === spec.name && d.to === undefined);
        if (deleted !== undefined) deleted.to = this.now;
        this.core.applyJob(changed.name, changed, `name: ${changed.name}`, this.now);
        this.flushController();
        this.check();
        return;
      }
    }
  }

  /** Ends every fault, runs a while, and checks that every fire was accounted for. */
  settle(): void {
    for (const [i, agent] of this.agents.entries()) {
      this.heal(agent);
      agent.slow = false;
      agent.delayMs = 0;
      if (!agent.alive) this.apply({ kind: "restart", agent: i });
    }
    const faultsEnd = this.now;
    // A run lost at the end of the faults waits out its grace before it runs again. An agent
    // still draining when the faults end is replaced once it has left, as its pod would be.
    // A fire whose runs kept failing or timing out may still be working through its retries
    // and then its completion hook's (each attempt up to its timeout, the backoff doubling):
    // the world runs on while one is open, up to SETTLE_EXTRA_MS more.
    for (let t = 0; t < this.settleMs || (t < this.settleMs + SETTLE_EXTRA_MS && this.openFireBefore(faultsEnd)); t += 1000) {
      this.advanceTo(faultsEnd + t + 1000);
      for (const [i, agent] of this.agents.entries()) if (!agent.alive) this.apply({ kind: "restart", agent: i });
    }
    this.accountForFires(faultsEnd);
    this.checkGraceKept();
    this.checkDrainsLoseNothing();
  }

  // The event loop of the world.

  private advanceTo(until: number): void {
    let sameInstant = 0;
    for (;;) {
      const next = this.nextEvent();
      if (next === undefined || next.at > until) break;
      sameInstant = next.at <= this.now ? sameInstant + 1 : 0;
      // A world that makes no progress is a bug of the simulator or of the core: say so.
      if (sameInstant > 10_000) this.violation("progress", "10,000 events at one instant without time moving on");
      this.now = Math.max(this.now, next.at);
      next.run();
      this.check();
    }
    this.now = until;
  }

  private nextEvent(): { at: number; run: () => void } | undefined {
    let best: { at: number; run: () => void } | undefined;
    const consider = (at: number | undefined, run: () => void): void => {
      if (at !== undefined && (best === undefined || at < best.at)) best = { at, run };
    };
    // The network first: what was sent arrives before time moves on, in the order it was sent.
    if (this.inFlight.length > 0) {
      // The first of the earliest: links deliver in order, and undelayed ones at once.
      let first = 0;
      for (let i = 1; i < this.inFlight.length; i++) if (this.inFlight[i]!.at < this.inFlight[first]!.at) first = i;
      const deliver = (): void => this.inFlight.splice(first, 1)[0]!.deliver();
      if (this.inFlight[first]!.at <= this.now) return { at: this.now, run: deliver };
      consider(this.inFlight[first]!.at, deliver);
    }
    if (this.controllerDownUntil !== undefined) {
      consider(this.controllerDownUntil, () => this.startLeader());
    } else if (this.controllerStall !== undefined) {
      consider(this.controllerStall.until, () => this.wakeController());
    } else {
      consider(this.core.nextDeadline(), () => {
        this.core.tick(this.now);
        this.flushController();
      });
      if (this.firesHeldUntil !== undefined) {
        consider(this.firesHeldUntil, () => {
          this.firesHeldUntil = undefined;
          this.core.releaseFires();
        });
      }
      consider(this.nextRenewalAt, () => this.renewLeadership());
    }
    for (const agent of this.agents) {
      if (!agent.alive) continue;
      if (agent.frozenUntil !== undefined) {
        consider(agent.frozenUntil, () => this.wake(agent));
        continue;
      }
      // An agent's flush is its event loop's next turn: before time moves on.
      if (agent.flushDue) {
        return {
          at: this.now,
          run: () => {
            agent.flushDue = false;
            this.stepAgent(agent, { kind: "flush" });
          },
        };
      }
      const deadline = agent.core.nextDeadline();
      if (deadline !== undefined) consider(agent.realAt(deadline), () => this.stepAgent(agent, { kind: "tick" }));
      for (const run of agent.runs.values()) {
        if (run.startAt === undefined) {
          consider(run.dueAt, () => {
            run.dueAt = undefined;
            this.stepAgent(agent, { kind: "start-due", executionId: run.context.executionId });
          });
        } else {
          consider(run.startAt + run.durationMs, () => this.finishRun(agent, run));
        }
      }
    }
    for (const notice of this.closeNotices) {
      consider(notice.at, () => {
        this.closeNotices.splice(this.closeNotices.indexOf(notice), 1);
        if (notice.toController) this.controllerStreamClosed(notice.agent, notice.session);
        else if (this.agents.find((a) => a.id === notice.agent)?.frozenUntil !== undefined) {
          this.notifyAgentOfClose(notice.agent, notice.session);
        } else {
          const agent = this.agents.find((a) => a.id === notice.agent);
          if (agent !== undefined && agent.session === notice.session) this.agentStreamClosed(agent);
        }
      });
    }
    return best;
  }

  // The controller and its shell.

  private flushController(): void {
    for (;;) {
      const effects = this.core.take({ holdFires: this.firesHeldUntil !== undefined });
      this.checkRevisions(effects.persist);
      this.durable.apply(effects.persist);
      for (const { session, command } of effects.messages) {
        if (this.impostors.has(session)) this.violation("7", `a second process under a held agent id was sent ${command.kind}`);
        this.toAgent(session, command);
      }
      for (const { session } of effects.closes) {
        if (this.impostors.delete(session)) continue;
        const agentId = [...this.controllerSessions.entries()].find(([, s]) => s === session)?.[0];
        if (agentId === undefined) continue;
        this.controllerSessions.delete(agentId);
        this.core.streamClosed(session, this.now);
        this.notifyAgentOfClose(agentId, session);
      }
      if (!this.core.hasEffects) return;
    }
  }

  private failover(): void {
    // A stalled process dies like any other.
    this.controllerStall = undefined;
    if (this.controllerDownUntil !== undefined) return;
    for (const [agentId, session] of [...this.controllerSessions]) {
      this.controllerSessions.delete(agentId);
      this.notifyAgentOfClose(agentId, session);
    }
    for (const [agent, wires] of this.held) this.held.set(agent, wires.filter((w) => !w.toController));
    if (this.scenario.leaderLeases === true) {
      // The next leader wins once etcd expires the dead one's lease, which bounded every agent
      // lease it granted. The dead one's address refuses connections until then; the other
      // replicas hold agents' streams meanwhile.
      this.downReplica = this.leader;
      this.nextRenewalAt = undefined;
      this.controllerDownUntil = this.leaderRenewedAt + LEADER_TTL_MS + 1;
      this.durable.predecessorLeasesEndWithinMs = 0;
      return;
    }
    this.startLeader();
  }

  private resign(): void {
    if (this.controllerDownUntil !== undefined) return;
    for (const [agentId, session] of [...this.controllerSessions]) {
      this.controllerSessions.delete(agentId);
      this.notifyAgentOfClose(agentId, session);
    }
    for (const [agent, wires] of this.held) this.held.set(agent, wires.filter((w) => !w.toController));
    // With leaderLeases it records how long its agents' leases still run (Store.handOver); a
    // single restarted controller knows nothing of them.
    if (this.scenario.leaderLeases === true) this.durable.predecessorLeasesEndWithinMs = this.core.leasesEndWithin(this.now);
    this.startLeader();
  }

  /** Agent i lists the controllers starting at its own replica, as pods spread over them would. */
  private addressesOf(i: number): string[] {
    return this.replicas.map((_, k) => this.replicas[(i + k) % this.replicas.length]!);
  }

  /** The stalled controller runs again: it tells its core how long it could not run, first. */
  private wakeController(): void {
    const stall = this.controllerStall!;
    this.controllerStall = undefined;
    this.core.noteStall(this.now - stall.since, this.now);
    this.flushController();
    this.check();
  }

  private startLeader(): void {
    this.controllerDownUntil = undefined;
    // Another replica wins the election (a single controller restarts as itself); the dead one
    // comes back as a follower.
    const previous = this.leader;
    if (this.replicas.length > 1) this.leader = (previous + 1 + Math.floor(this.random() * (this.replicas.length - 1))) % this.replicas.length;
    this.downReplica = undefined;
    this.core = new ControllerCore(this.config, this.durable.snapshot(), this.now);
    if (this.scenario.leaderLeases === true) this.renewLeadership();
    this.flushController();
    this.endFollowerHolds();
    this.check();
  }

  /**
   * A controller leads again: the winner serves the streams it held, reading what their agents
   * sent meanwhile (their Hello first), and the other followers redirect theirs to it.
   */
  private endFollowerHolds(): void {
    const holds = [...this.followerHolds];
    this.followerHolds.clear();
    for (const [session, hold] of holds) {
      const notice = this.closeNotices.findIndex((n) => n.session === session && !n.toController);
      if (notice >= 0) this.closeNotices.splice(notice, 1);
      const agent = hold.agent;
      if (agent.session !== session || !agent.alive) continue;
      if (hold.replica !== this.leader) {
        this.redirect(agent, session);
        continue;
      }
      const previous = this.controllerSessions.get(agent.id);
      if (previous !== undefined) this.controllerStreamClosed(agent.id, previous);
      this.controllerSessions.set(agent.id, session);
      for (const read of hold.queued) read();
    }
  }

  /** A follower's answer: a Redirect naming the leader, then the end of the stream. */
  private redirect(agent: SimAgent, session: string): void {
    const term = BigInt(this.core.term);
    const leaderAddress = this.replicas[this.leader]!;
    this.toAgentOn(agent, session, () => {
      this.stepAgent(agent, { kind: "redirect", term, leaderAddress });
      // An agent that ignored it (an older term than it knows) sees the stream end all the same.
      if (agent.session === session) this.agentStreamClosed(agent);
    });
  }

  /** etcd renewed the leader's lease now: no agent lease it grants may outlast it. */
  private renewLeadership(): void {
    this.leaderRenewedAt = this.now;
    this.nextRenewalAt = this.now + LEADER_RENEW_MS;
    this.core.limitLeases(this.now + LEADER_TTL_MS - LEADER_SAFETY_MS, this.now);
    this.flushController();
  }

  private controllerStreamClosed(agentId: string, session: string): void {
    this.followerHolds.delete(session);
    // A stalled process learns of a closed stream once it wakes, after what it had to read.
    if (this.controllerStall !== undefined) {
      this.closeNotices.push({ session, agent: agentId, at: this.controllerStall.until + 1, toController: true });
      return;
    }
    if (this.controllerSessions.get(agentId) !== session) return;
    this.controllerSessions.delete(agentId);
    this.core.streamClosed(session, this.now);
    this.flushController();
  }

  private notifyAgentOfClose(agentId: string, session: string): void {
    const agent = this.agents.find((a) => a.id === agentId);
    if (agent === undefined || agent.session !== session) return;
    // A frozen process learns of the close once it wakes, after what it had to read.
    if (agent.frozenUntil !== undefined) {
      this.closeNotices.push({ session, agent: agentId, at: Math.max(agent.frozenUntil + 1, agent.lastArrival.toAgent), toController: false });
      return;
    }
    // A delayed link delivers the close after what was sent before it.
    if (agent.linkUp && agent.delayMs > 0) this.closeNotices.push({ session, agent: agentId, at: Math.max(this.now + agent.delayMs, agent.lastArrival.toAgent), toController: false });
    else if (agent.linkUp) this.agentStreamClosed(agent);
    // Partitioned: the agent finds out by its own stall check, or at heal.
    else this.closeNotices.push({ session, agent: agentId, at: Number.POSITIVE_INFINITY, toController: false });
  }

  private toAgent(session: string, command: AgentCommand): void {
    const agent = this.agents.find((a) => a.session === session && a.alive);
    if (agent === undefined) return;
    const term = BigInt(this.core.term);
    this.toAgentOn(agent, session, () => this.receive(agent, command, term));
  }

  /** Sends on an agent's stream: `read` runs when it arrives, if that stream is still the agent's. */
  private toAgentOn(agent: SimAgent, session: string, read: () => void): void {
    const deliver = (): void => {
      if (agent.session !== session || !agent.alive) return;
      // A frozen process reads nothing: the message waits until just after it wakes.
      if (agent.frozenUntil !== undefined) this.inFlight.push({ session, toController: false, at: agent.frozenUntil + 1, deliver });
      else read();
    };
    this.send(agent, { session, toController: false, deliver });
  }

  private toController(agent: SimAgent, call: (session: string) => void): void {
    const session = agent.session;
    if (session === undefined) return;
    const deliver = (): void => {
      // A stalled process reads nothing: the message waits in its socket until it wakes, and
      // what the agent sends after it arrives after it (the link stays in order).
      if (this.controllerStall !== undefined) {
        const at = this.controllerStall.until + 1;
        agent.lastArrival.toController = Math.max(agent.lastArrival.toController, at);
        this.inFlight.push({ session, toController: true, at, deliver });
        return;
      }
      if (this.controllerSessions.get(agent.id) !== session) {
        // A follower holding the stream reads it once it leads; any other drops it unread.
        this.followerHolds.get(session)?.queued.push(deliver);
        return;
      }
      try {
        call(session);
      } catch (error) {
        // As the shell does: a message on a stream the core has just ended (its lease expired at
        // this instant, before the message was read) is ignored; the stream closes with the
        // core's reason, below.
        if (!(error instanceof ShardlineError && error.code === "failed-precondition")) throw error;
      }
      this.flushController();
    };
    this.send(agent, { session, toController: true, deliver });
  }

  private send(agent: SimAgent, message: Omit<Wire, "at">): void {
    const way = message.toController ? "toController" : "toAgent";
    const wire: Wire = { ...message, at: Math.max(this.now + agent.delayMs, agent.lastArrival[way]) };
    agent.lastArrival[way] = wire.at;
    if (agent.linkUp) {
      this.inFlight.push(wire);
      return;
    }
    const wires = this.held.get(agent.id) ?? [];
    wires.push(wire);
    this.held.set(agent.id, wires);
  }

  private heal(agent: SimAgent): void {
    if (agent.linkUp) return;
    agent.linkUp = true;
    const wires = this.held.get(agent.id) ?? [];
    this.held.delete(agent.id);
    // Streams closed at one end during the partition are reset now; the rest flows again.
    for (const notice of [...this.closeNotices]) {
      if (notice.agent === agent.id) notice.at = this.now;
    }
    this.inFlight.push(...wires);
  }

  // The agents: each an AgentCore, its effects carried out as the agent's runtime would.

  private connect(agent: SimAgent): void {
    if (!agent.alive) return;
    const replica = this.replicas.indexOf(agent.core.address);
    const leads = replica === this.leader && this.controllerDownUntil === undefined;
    // The link is down, the address is a dead process, or the leader is stalled (it accepts no
    // stream in time: the agent's Welcome timeout): the attempt fails before any Welcome, and
    // the core tries again after its backoff, at its next address.
    if (!agent.linkUp || replica < 0 || replica === this.downReplica || (leads && this.controllerStall !== undefined)) {
      agent.session = undefined;
      this.stepAgent(agent, { kind: "stream-opened" });
      this.stepAgent(agent, { kind: "stream-closed" });
      return;
    }
    const session = `s${++this.sessionCount}`;
    agent.session = session;
    if (!leads) {
      // A follower: it redirects the agent to the leader, or, while none leads, holds the
      // stream until one does (or, past its hold, ends it: a failed attempt).
      if (this.controllerDownUntil === undefined) {
        this.stepAgent(agent, { kind: "stream-opened" });
        this.redirect(agent, session);
        return;
      }
      this.followerHolds.set(session, { agent, replica, queued: [] });
      this.closeNotices.push({ session, agent: agent.id, at: this.now + HOLD_WITHOUT_LEADER_MS, toController: false });
      this.stepAgent(agent, { kind: "stream-opened" });
      return;
    }
    const previous = this.controllerSessions.get(agent.id);
    if (previous !== undefined) this.controllerStreamClosed(agent.id, previous);
    this.controllerSessions.set(agent.id, session);
    // The core answers with its Hello, which the controller reads at once (see hello()).
    this.stepAgent(agent, { kind: "stream-opened" });
  }

  /** Steps one input into an agent core, at its clock's reading, and carries out what it decides. */
  private stepAgent(agent: SimAgent, input: AgentInput): void {
    agent.core.step(input, agent.clock(this.now));
    if (agent.carryingOut) return;
    agent.carryingOut = true;
    try {
      while (agent.core.hasEffects) for (const effect of agent.core.take()) this.carryOut(agent, effect);
    } finally {
      agent.carryingOut = false;
    }
  }

  private carryOut(agent: SimAgent, effect: AgentEffect): void {
    switch (effect.kind) {
      case "open-stream":
        return this.connect(agent);
      case "send":
        return this.sendFrom(agent, effect.message);
      case "close-stream": {
        const session = agent.session;
        if (session === undefined) return;
        this.agentStreamClosed(agent);
        this.closeTowardController(agent, session);
        return;
      }
      case "half-close":
        // The controller ends the stream once it has read everything before the half-close and
        // sent what it had queued; the agent then sees it end.
        this.toController(agent, (session) => {
          this.controllerStreamClosed(agent.id, session);
          this.notifyAgentOfClose(agent.id, session);
        });
        return;
      case "drained":
        // The process exits.
        this.crash(agent);
        return;
      case "hold-run": {
        const context = agent.dispatching.get(effect.executionId);
        if (context === undefined) return;
        // At its fire instant by the agent's wall clock (which may have jumped), waiting no
        // longer than dispatch-ahead.
        const fireLocal = agent.clock(context.fireTime - agent.wallOffsetMs);
        const dueAt = Math.max(this.now, Math.min(agent.realAt(fireLocal), this.now + effect.maxWaitMs));
        const runsFor =
          context.daemon !== true ? 20 + Math.floor(this.random() * 1500) : this.random() < 0.2 ? 500 + Math.floor(this.random() * 3000) : Number.POSITIVE_INFINITY;
        // The executor aborts a run at its timeout, by the agent's clock.
        const timesOut = context.timeoutMs > 0 && runsFor > context.timeoutMs;
        const durationMs = timesOut ? context.timeoutMs : runsFor;
        agent.runs.set(effect.executionId, { context, dueAt, durationMs, ...(timesOut ? { timesOut } : {}) });
        return;
      }
      case "start-run":
        return this.startRun(agent, effect.executionId);
      case "stop-run": {
        const run = agent.runs.get(effect.executionId);
        agent.runs.delete(effect.executionId);
        this.stepAgent(agent, { kind: "run-report", update: update(effect.executionId, effect.state, run?.startAt, this.now, effect.reason) });
        return;
      }
      case "flush-soon":
        agent.flushDue = true;
        return;
      case "redirected":
        // The runtime closes the stream at once; the next one goes to the leader.
        if (agent.session !== undefined) this.agentStreamClosed(agent);
        return;
      case "fenced":
        this.fencedAgents.add(agent.id);
        return;
      // What the runtime only says (logs, events, metrics).
      case "report":
      case "welcomed":
      case "unfenced":
      case "assignments-changed":
      case "log":
        return;
    }
  }

  private sendFrom(agent: SimAgent, message: AgentMessage): void {
    switch (message.kind) {
      case "hello":
        return this.hello(agent, agent.session, message.held, message.executions);
      case "heartbeat": {
        // A slow agent: its heartbeats leave four times less often than they should.
        if (agent.slow && agent.heartbeats++ % 4 !== 0) return;
        const seq = Number(message.seq);
        this.toController(agent, (session) => this.core.heartbeat(session, seq, this.now));
        return;
      }
      case "execution-updates": {
        const reports = message.updates.map(reportOf);
        this.toController(agent, (session) => this.core.executionUpdates(session, reports, this.now));
        return;
      }
      case "release": {
        const released = message.assignments.map(plainRef);
        this.toController(agent, (session) => this.core.release(session, released, this.now));
        return;
      }
      case "goodbye":
        this.toController(agent, (session) => this.core.goodbye(session, message.reason, this.now));
        return;
    }
  }

  /** The Hello goes to the controller with the stream's opening, before anything else on it. */
  private hello(agent: SimAgent, session: string | undefined, held: HeldRef[], executions: UpdateMessage[]): void {
    if (session === undefined) return;
    if (this.controllerSessions.get(agent.id) !== session) {
      // A follower holding the stream reads the Hello once it leads; one redirecting never does.
      this.followerHolds.get(session)?.queued.push(() => this.hello(agent, session, held, executions));
      return;
    }
    this.core.hello(
      session,
      {
        agentId: agent.id,
        labels: { zone: zoneOf(agent.id) },
        capacity: 1,
        handlers: ["hook", "work"],
        executors: [],
        maxConcurrent: 0,
        version: "sim",
        held: held.map(plainRef),
        executions: executions.map(reportOf),
        instanceId: agent.instance,
      },
      this.now,
    );
    this.flushController();
  }

  private newInstance(): string {
    return `instance-${String(++this.instanceCount).padStart(8, "0")}`;
  }

  /**
   * Invariant 7: a second process under an id whose lease is valid in the controller's view is
   * refused, sent nothing, and changes nothing of the holder (the other invariants see to that).
   */
  private impostor(agent: SimAgent): void {
    const holder = this.core.listAgents().find((a) => a.id === agent.id);
    // A holder that lost its stream is taken over by a new process instead (the restart step).
    if (holder === undefined || holder.instanceId === "" || holder.state === "lost" || holder.leaseExpiresAt <= this.now || this.controllerDownUntil !== undefined) return;
    const session = `s${++this.sessionCount}`;
    this.impostors.add(session);
    this.core.hello(
      session,
      { agentId: agent.id, labels: { zone: zoneOf(agent.id) }, capacity: 1, handlers: ["work"], executors: [], maxConcurrent: 0, version: "sim", held: [], executions: [], instanceId: this.newInstance() },
      this.now,
      "impostor",
    );
    this.flushController();
    if (this.impostors.delete(session)) this.violation("7", `a second process under ${agent.id} was not refused while ${holder.instanceId} held the id`);
    this.check();
  }

  private receive(agent: SimAgent, command: AgentCommand, term: bigint): void {
    switch (command.kind) {
      case "welcome":
        return this.stepAgent(agent, { ...command, term });
      case "heartbeat-ack":
        return this.stepAgent(agent, { kind: "heartbeat-ack", term, seq: BigInt(command.seq), leaseTtlMs: command.leaseTtlMs });
      case "assignments":
        return this.stepAgent(agent, { kind: "assignments", term, snapshot: command.snapshot, add: command.add.map(heldRef), revoke: command.revoke.map(heldRef) });
      case "cancel":
        return this.stepAgent(agent, { kind: "cancel", term, executionIds: command.executionIds, reason: command.reason });
      case "dispatch": {
        const message: ControllerMessage = {
          kind: "dispatch",
          term,
          atUnixMs: this.now,
          runs: command.executions.map((context) => ({
            executionId: context.executionId,
            job: context.job,
            assignment: context.assignment === undefined ? undefined : heldRef(context.assignment),
            hook: context.fireOutcome !== undefined,
            fireTimeUnixMs: context.fireTime,
            graceMs: context.disconnectGraceMs,
          })),
        };
        agent.dispatching = new Map(command.executions.map((context) => [context.executionId, context]));
        this.stepAgent(agent, message);
        agent.dispatching = new Map();
        return;
      }
    }
  }

  private startRun(agent: SimAgent, executionId: string): void {
    const run = agent.runs.get(executionId);
    if (run === undefined) return;
    run.startAt = this.now;
    const before = this.started.get(executionId);
    if (before !== undefined) this.violation("3", `${executionId} started a second time, on ${agent.id}, after ${before}`);
    this.started.set(executionId, agent.id);
    this.stepAgent(agent, { kind: "run-report", update: update(executionId, ExecutionState.RUNNING, this.now, undefined) });
  }

  private finishRun(agent: SimAgent, run: Run): void {
    agent.runs.delete(run.context.executionId);
    if (run.timesOut === true) {
      const error = `timed out after ${run.context.timeoutMs} ms`;
      this.stepAgent(agent, { kind: "run-report", update: update(run.context.executionId, ExecutionState.TIMED_OUT, run.startAt, this.now, error) });
      return;
    }
    const fails = (run.context.job === "flaky" && run.context.fireOutcome === undefined && this.random() < 1 / 3) || run.context.parameter.endsWith(BAD);
    const state = fails ? ExecutionState.FAILED : ExecutionState.SUCCEEDED;
    this.stepAgent(agent, { kind: "run-report", update: update(run.context.executionId, state, run.startAt, this.now, fails ? "failed by the simulator" : "") });
  }

  /** The process freezes: its runs make no progress meanwhile. */
  private freeze(agent: SimAgent, ms: number): void {
    agent.frozenUntil = this.now + ms;
    for (const run of agent.runs.values()) if (run.startAt !== undefined) run.durationMs += ms;
  }

  /** The process wakes: its timers first (the core's deadlines), then what it reads. */
  private wake(agent: SimAgent): void {
    agent.frozenUntil = undefined;
    this.stepAgent(agent, { kind: "tick" });
  }

  /** The agent's end of its stream closed: its core reconnects after a backoff. */
  private agentStreamClosed(agent: SimAgent): void {
    agent.session = undefined;
    this.stepAgent(agent, { kind: "stream-closed" });
  }

  private crash(agent: SimAgent): void {
    agent.alive = false;
    agent.runs.clear();
    const session = agent.session;
    agent.session = undefined;
    if (session === undefined) return;
    this.closeTowardController(agent, session);
  }

  /**
   * The agent's end of a stream closed: the controller learns it after what was sent before it,
   * or, while the link is down, by keepalive.
   */
  private closeTowardController(agent: SimAgent, session: string): void {
    if (!agent.linkUp) this.closeNotices.push({ session, agent: agent.id, at: this.now + KEEPALIVE_DETECT_MS, toController: true });
    else if (agent.delayMs > 0) this.closeNotices.push({ session, agent: agent.id, at: Math.max(this.now + agent.delayMs, agent.lastArrival.toController), toController: true });
    else this.controllerStreamClosed(agent.id, session);
  }

  // Invariants.

  private violation(invariant: string, detail: string): never {
    throw new InvariantViolation(invariant, this.now - T0, detail);
  }

  /**
   * Invariants 1, 2 and 4, at this instant: one acting owner per shard, one agent
   * running each fire of a shard, and nothing finished or recorded ever lost.
   */
  check(): void {
    const owners = new Map<string, string[]>();
    const running = new Map<string, string[]>();
    for (const agent of this.agents) {
      if (!agent.alive) continue;
      // An owner acts on its shards: alive, not fenced, with a lease valid by its own clock.
      if (!agent.core.fenced && agent.core.leaseValid(agent.clock(this.now))) {
        for (const held of agent.core.shards()) {
          const key = shardKey(held.job, held.shard);
          owners.set(key, [...(owners.get(key) ?? []), agent.id]);
        }
      }
      for (const run of agent.runs.values()) {
        // A frozen process runs nothing; on waking it checks its lease before anything else.
        if (run.startAt === undefined || agent.frozenUntil !== undefined) continue;
        // A daemon shard runs one consumer at a time, whatever its runs' instants.
        const key = run.context.daemon === true ? `${run.context.job}/daemon/${run.context.shard}` : `${run.context.job}/${run.context.fireTime}/${run.context.shard}`;
        running.set(key, [...(running.get(key) ?? []), agent.id]);
      }
    }
    const fenced = (key: string): boolean => !key.startsWith("fast/");
    for (const [key, ids] of owners) if (ids.length > 1 && fenced(key)) this.violation("1", `${key} is held with a valid lease by ${ids.join(" and ")}`);
    for (const [key, ids] of running) if (ids.length > 1 && fenced(key)) this.violation("2", `fire ${key} runs on ${ids.join(" and ")} at once`);
    for (const [id, state] of this.finished) {
      const now = this.durable.executions.get(id);
      if (now === undefined || now.state !== state) this.violation("4", `finished execution ${id} (${state}) is now ${now?.state ?? "gone"} in the store`);
    }
    for (const [id, execution] of this.durable.executions) {
      if (TERMINAL_STATES.has(execution.state) && !this.finished.has(id)) this.finished.set(id, execution.state);
    }
    for (const [job, cursor] of this.durable.cursors) {
      if (cursor < (this.cursors.get(job) ?? -Infinity)) this.violation("4", `the cursor of ${job} went back to ${cursor}`);
      this.cursors.set(job, cursor);
    }
  }

  /** Invariant 9: every execution waiting in a queue says why (what the CLI shows). */
  private checkReasons(): void {
    if (this.controllerDownUntil !== undefined) return;
    for (const id of this.core.queuePositions().keys()) {
      if (this.core.waitingReason(id) === undefined) this.violation("9", `${id} waits in a queue without a reason`);
    }
  }

  /**
   * Invariant 8, as each batch is persisted: a fire's first attempt runs a revision its job's
   * rollout had then (its stable or its target one, before or after this batch), and, when the
   * rollout was aborted before this batch and still is, the stable one: an abort takes effect
   * from the next fire. The records are then remembered for the next batch.
   */
  private checkRevisions(persist: StoreBatch): void {
    const after = new Map((persist.jobs ?? []).map((job) => [job.name, job]));
    for (const execution of persist.executions ?? []) {
      if (execution.attempt !== 1 || this.firstAttempts.has(execution.id)) continue;
      this.firstAttempts.add(execution.id);
      const before = this.lastJobRecords.get(execution.job);
      const now = after.get(execution.job) ?? before;
      if (now === undefined || execution.revision === undefined) continue;
      const allowed = new Set<number>();
      for (const record of [before, now]) {
        if (record === undefined) continue;
        allowed.add(record.revision);
        if (record.rollout !== undefined) allowed.add(record.rollout.stableRevision).add(record.rollout.targetRevision);
      }
      if (!allowed.has(execution.revision)) {
        this.violation("8", `${execution.id} runs revision ${execution.revision}, which is neither the job's nor its rollout's (${[...allowed].join(", ")})`);
      }
      const aborted = before?.rollout?.phase === "aborted" && now.rollout?.phase === "aborted" && now.revision === before.revision;
      if (aborted && execution.revision !== now.rollout!.stableRevision) {
        this.violation("8", `${execution.id} runs revision ${execution.revision} after the rollout was aborted (stable: ${now.rollout!.stableRevision})`);
      }
    }
    for (const [name, job] of after) this.lastJobRecords.set(name, job);
    for (const name of persist.deletedJobs ?? []) this.lastJobRecords.delete(name);
  }

  /** Whether some execution of a fire made before `instant` is not finished (daemon runs aside). */
  private openFireBefore(instant: number): boolean {
    for (const execution of this.durable.executions.values()) {
      if (execution.fireTime <= instant && execution.job !== DAEMON_JOB && !TERMINAL_STATES.has(execution.state)) return true;
    }
    return false;
  }

  /** How long the world runs after the faults end before invariant 3 is checked. */
  private get settleMs(): number {
    return SETTLE_MS + this.config.disconnectGraceMs;
  }

  /**
   * Invariant 6: a control-plane outage shorter than the disconnect grace aborts no run. With
   * a grace longer than anything a controller restart or a leader change takes here (a few
   * seconds with the reconnect backoff), no agent that had no fault of its own (never
   * partitioned, paused, delayed, slowed, drained, stopped, or impersonated) ever aborted a run
   * because its lease lapsed: its runs went on while it found the next controller. Daemon runs
   * and failover: fast jobs have no grace (they stop when their agent loses the shard) and are
   * not counted.
   */
  private checkGraceKept(): void {
    if (this.config.disconnectGraceMs < GRACE_OVER_OUTAGES_MS) return;
    for (const execution of this.durable.executions.values()) {
      // A daemon run, and a run of a failover: fast job, have no grace: they stop at a lapse.
      const fast = this.jobs.find((job) => job.name === execution.job)?.failover === "fast";
      if (execution.state !== "lost" || execution.cause === "daemon" || fast || this.ownFaults.has(execution.agent)) continue;
      if (!/^fenced:/.test(execution.error ?? "")) continue;
      this.violation("6", `${execution.id} was aborted on ${execution.agent}, which had no fault of its own, by a control-plane outage shorter than the grace: ${execution.error}`);
    }
  }

  /**
   * Invariant 10: a graceful drain loses no run. An agent asked to leave (SIGTERM) lost no run
   * but to its drain grace running out: nothing it held, nothing dispatched to it before the
   * controller read its Goodbye (a Dispatch that crossed the Goodbye runs on the leaving agent).
   * Not counted: daemon runs, which end with their shard; an agent that had a fault that loses
   * runs anyway (LOSING_FAULTS); one whose lease lapsed at some point (a partition, a pause, a
   * control-plane outage), which is invariant 6's to judge.
   */
  private checkDrainsLoseNothing(): void {
    for (const execution of this.durable.executions.values()) {
      if (execution.state !== "lost" || execution.cause === "daemon") continue;
      const faults = this.ownFaults.get(execution.agent);
      if (faults === undefined || !faults.has("drain") || [...faults].some((kind) => LOSING_FAULTS.has(kind))) continue;
      // A lapsed lease (a control-plane outage: a stall, a leader change) is not the drain's doing.
      if (this.fencedAgents.has(execution.agent) || /drain grace of \d+ ms passed/.test(execution.error ?? "")) continue;
      this.violation("10", `${execution.id} was lost on ${execution.agent}, which drained (no fault that loses runs, no lapsed lease): ${execution.error}`);
    }
  }

  /**
   * Invariant 3: every fire made before the faults ended is accounted for. Each of its shards'
   * last attempt is terminal, and none ended lost (a fenced job re-runs what was lost); and
   * every instant of every-second has a record, away from shard-count edits.
   */
  private accountForFires(faultsEnd: number): void {
    const latest = new Map<string, ExecutionRecord>();
    for (const execution of this.durable.executions.values()) {
      if (execution.fireTime > faultsEnd || execution.job === DAEMON_JOB) continue;
      const key = `${execution.job}/${execution.fireTime}/${execution.shard}`;
      const before = latest.get(key);
      if (before === undefined || before.attempt < execution.attempt) latest.set(key, execution);
    }
    // Invariant 8: every attempt of a fire of a shard ran one revision.
    const revisions = new Map<string, number | undefined>();
    for (const execution of this.durable.executions.values()) {
      const key = `${execution.job}/${execution.fireTime}/${execution.shard}`;
      if (!revisions.has(key)) revisions.set(key, execution.revision);
      else if (revisions.get(key) !== execution.revision) this.violation("8", `fire ${key} ran revisions ${revisions.get(key)} and ${execution.revision}`);
    }
    for (const [key, execution] of latest) {
      if (!TERMINAL_STATES.has(execution.state)) this.violation("3", `fire ${key} is still ${execution.state} ${this.now - faultsEnd} ms after the faults ended`);
      if (execution.state === "lost" && (execution.job !== "no-rerun" || !execution.error)) this.violation("3", `fire ${key} ended lost, with no re-run`);
      if (execution.state === "misfired" && !execution.error) this.violation("3", `fire ${key} misfired without a reason`);
    }
    // Every daemon shard runs again once the faults are over (or waits out its restart backoff).
    for (let shard = 0; shard < (this.scenario.daemons === true ? DAEMON_SHARDS : 0); shard++) {
      const open = [...this.durable.executions.values()].some((e) => e.job === DAEMON_JOB && e.shard === shard && (e.state === "running" || e.state === "pending"));
      if (!open) this.violation("3", `daemon shard ${DAEMON_JOB}/${shard} runs nothing ${this.now - faultsEnd} ms after the faults ended`);
    }
    const fired = new Set([...latest.values()].filter((e) => e.job === "every-second").map((e) => e.fireTime));
    const first = Math.min(...fired);
    for (let t = first; t <= faultsEnd - 2000; t += 1000) {
      if (this.edits.some((at) => Math.abs(at - t) < 2000)) continue;
      if (this.deletions.some((d) => d.job === "every-second" && t > d.from - 2000 && (d.to === undefined || t < d.to + 2000))) continue;
      if (!fired.has(t)) this.violation("3", `every-second has no record of its fire at t=${t - T0}`);
    }
  }
}

/** A report as an agent's executor makes it, times in Unix ms. */
function update(executionId: string, state: ExecutionState, startedAt: number | undefined, finishedAt: number | undefined, error = ""): UpdateMessage {
  return create(ExecutionUpdateSchema, {
    executionId,
    state,
    startedAtUnixMs: BigInt(startedAt ?? 0),
    finishedAtUnixMs: BigInt(finishedAt ?? 0),
    error,
  });
}

/** An agent's update as the controller core reads it, decoded as its shell would. */
function reportOf(update: UpdateMessage): ExecutionUpdate {
  return {
    executionId: update.executionId,
    state: EXECUTION_STATE_NAMES[update.state] as ExecutionStateName,
    ...(update.startedAtUnixMs === 0n ? {} : { startedAt: Number(update.startedAtUnixMs) }),
    ...(update.finishedAtUnixMs === 0n ? {} : { finishedAt: Number(update.finishedAtUnixMs) }),
    ...(update.error === "" ? {} : { error: update.error }),
  };
}

function plainRef(ref: HeldRef): AssignmentRef {
  return { job: ref.job, shard: ref.shard, term: Number(ref.term), generation: Number(ref.generation) };
}

function heldRef(ref: AssignmentRef): HeldRef {
  return { job: ref.job, shard: ref.shard, term: BigInt(ref.term), generation: BigInt(ref.generation) };
}
