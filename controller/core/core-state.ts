import { ShardlineError } from "../../shared/errors.js";
import type { ExecutionRecord } from "./store-port.js";
import type { CoreConfig } from "./config.js";
import { type ExecutionTracing } from "./execution-tracing.js";
import type { AssignmentRef, CoreEvent } from "./messages.js";
import { Outbox } from "./outbox.js";
import { type TimerKind, TimerQueue } from "./timer-queue.js";
import type { AgentEntry, ShardEntry, JobEntry, FireProgress } from "./model.js";
import type { UnknownRun } from "./disconnect-grace.js";

/**
 * Everything the controller core remembers between steps, shared by its concept modules (agents,
 * job admin, fires, executions, placement, recovery, views): each module is a set of functions
 * over this state, so a rule lives in the module named for it while the state stays in one place.
 */
export class CoreState {
  generation = 0;
  incarnations = 0;
  /** No lease granted lasts past this instant (limitLeases); undefined: no bound. */
  leaseCap: number | undefined;
  readonly jobs = new Map<string, JobEntry>();
  readonly agents = new Map<string, AgentEntry>();
  readonly sessions = new Map<string, string>();
  readonly open = new Map<string, ExecutionRecord>();
  /** Runs whose agent's lease ended while they may still be going there (disconnect-grace.ts). */
  readonly unknownRuns = new Map<string, UnknownRun>();
  /** Open executions already asked to stop (cancel, overlap: replace, a daemon's revoke). */
  readonly cancelling = new Set<string>();
  /** Fires on their way to their spec.onFireComplete run, by fireKey. */
  readonly fires = new Map<string, FireProgress>();
  /** Completion hook runs waiting for an agent with a free slot, oldest first. */
  waitingFireCompletes: ExecutionRecord[] = [];
  /** When each waiting execution joined its queue: first in, first out within a priority. */
  readonly queuedAt = new Map<string, number>();
  queueSeq = 0;
  /** Executions scheduled fires may still make in this batch (config.maxFireExecutionsPerBatch); take() refills it. */
  fireBudget: number;
  /** Fire timers due but past a batch's budget, in the order they fell due: the next batch starts with them. */
  heldFires: Extract<TimerKind, { kind: "fire" }>[] = [];
  readonly timers = new TimerQueue();
  /** The instant each job's rollout timer is armed for (rollouts.ts), so a pause arms one. */
  readonly rolloutTimers = new Map<string, number>();
  /** The last revision of each deleted job: see applyJob. */
  readonly deletedRevisions = new Map<string, number>();
  /** The last fire of each deleted job, kept in the store too: see applyJob. */
  readonly deletedCursors = new Map<string, number>();
  /** The shards of deleted jobs that their owners still hold, revoked, by job name: see deleteJob. */
  readonly deletedJobShards = new Map<string, Map<number, ShardEntry>>();
  readonly outbox = new Outbox();
  /** A step changed who may hold which shard: the next take() places shards again. */
  reconcilePending = false;
  /** Bumped whenever an agent joins, leaves or changes what it may hold. */
  agentsEpoch = 0;

  constructor(
    readonly config: CoreConfig,
    readonly tracing: ExecutionTracing,
    /** The controller term this core leads in. */
    readonly term: number,
    /** The current instant: every step advances it first. */
    public now: number,
    /** Until then no shard is given to an agent that does not claim it: see the facade's constructor. */
    readonly startupGraceUntil: number,
  ) {
    this.fireBudget = config.maxFireExecutionsPerBatch;
  }

  emit(
    type: string,
    message: string,
    about: Omit<CoreEvent, "time" | "type" | "message"> = {},
  ): void {
    this.outbox.emit({ time: this.now, type, message, ...about });
  }

  requireJob(name: string): JobEntry {
    const job = this.jobs.get(name);
    if (job === undefined) throw notFound("job", name);
    return job;
  }

  agentOf(session: string): AgentEntry {
    const id = this.sessions.get(session);
    const agent = id === undefined ? undefined : this.agents.get(id);
    if (agent === undefined) {
      throw new ShardlineError("failed-precondition", "this stream has no agent: the first message must be a hello");
    }
    return agent;
  }

  refOf(shard: ShardEntry): AssignmentRef {
    return { job: shard.job, shard: shard.shard, term: shard.term, generation: shard.generation };
  }
}

export function notFound(kind: string, name: string): ShardlineError {
  return new ShardlineError("not-found", `${kind} ${JSON.stringify(name)} not found`, { field: kind, value: name });
}

export function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}
