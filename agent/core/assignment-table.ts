import type { AssignmentUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import type { Assignment } from "../../shared/gen/shardline/v1/types_pb.js";

/** One shard this agent holds, as the agent sees it. */
export interface HeldAssignment {
  readonly job: string;
  readonly shard: number;
  /** Controller term of the assignment. */
  readonly term: bigint;
  /** Generation within the term. */
  readonly generation: bigint;
  /** A revoke arrived: start nothing new on it, release it once its runs are over. */
  readonly revoking: boolean;
}

/** A (job, shard) with a (term, generation), as carried in Assignment messages. */
export interface AssignmentRef {
  readonly job: string;
  readonly shard: number;
  readonly term: bigint;
  readonly generation: bigint;
}

/** What applying an AssignmentUpdate changed, for the agent to act on. */
export interface AssignmentChanges {
  /** Newly held, or held under a newer pair. */
  added: HeldAssignment[];
  /** No longer this agent's (left out of a snapshot): stop their runs, send no release. */
  dropped: HeldAssignment[];
  /** Now revoking: release each once nothing of it runs. */
  revoked: HeldAssignment[];
  /**
   * Revokes of shards this agent does not hold (already released, or never known). Nothing runs
   * on them, so the agent answers with a release at once rather than let the controller wait.
   */
  unknownRevokes: AssignmentRef[];
  /** Adds and revokes ignored because their pair was older than the one held. */
  ignored: AssignmentRef[];
}

/** The key of a shard in maps: `job/shard`. */
export function shardKey(job: string, shard: number): string {
  return `${job}/${shard}`;
}

/** Lexicographic (term, generation) comparison: negative when a is older than b. */
export function comparePairs(a: { term: bigint; generation: bigint }, b: { term: bigint; generation: bigint }): number {
  if (a.term !== b.term) return a.term < b.term ? -1 : 1;
  if (a.generation !== b.generation) return a.generation < b.generation ? -1 : 1;
  return 0;
}

/**
 * The shards this agent holds, keyed by (job, shard), with the rules of docs/protocol.md:
 * a snapshot replaces the whole set, each shard at the snapshot's pair whether it is older or
 * newer than the one held (the controller's dispatches name its pair, so the agent must hold
 * it) and revoking only if the same update revokes it; outside a snapshot, an add or revoke
 * older than the pair held is ignored; a message whose term is below the highest seen is
 * ignored as a whole (see acceptTerm). Pure bookkeeping: it starts, stops and sends nothing.
 */
export class AssignmentTable {
  #held = new ShardMap<HeldAssignment>();
  #highestTerm = 0n;

  /** The highest controller term seen on any message. */
  get highestTerm(): bigint {
    return this.#highestTerm;
  }

  /**
   * Records the term of a controller message. Returns false when it is lower than the highest
   * seen: the message comes from a deposed leader and must be ignored.
   */
  acceptTerm(term: bigint): boolean {
    if (term < this.#highestTerm) return false;
    this.#highestTerm = term;
    return true;
  }

  /** Applies an AssignmentUpdate whose term was accepted. */
  apply(update: Pick<AssignmentUpdate, "snapshot" | "add" | "revoke">): AssignmentChanges {
    return this.applyRefs({ snapshot: update.snapshot, add: update.add.map(refOf), revoke: update.revoke.map(refOf) });
  }

  /** Applies an update, its assignments as plain refs, whose term was accepted. */
  applyRefs(update: { snapshot: boolean; add: readonly AssignmentRef[]; revoke: readonly AssignmentRef[] }): AssignmentChanges {
    const changes: AssignmentChanges = { added: [], dropped: [], revoked: [], unknownRevokes: [], ignored: [] };
    if (update.snapshot) {
      const next = new ShardMap<HeldAssignment>();
      for (const ref of update.add) {
        const held: HeldAssignment = { ...ref, revoking: false };
        const before = this.#held.get(ref.job, ref.shard);
        if (before === undefined || comparePairs(before, ref) !== 0) changes.added.push(held);
        next.set(held);
      }
      for (const before of this.#held.values()) {
        if (next.get(before.job, before.shard) === undefined) changes.dropped.push(before);
      }
      this.#held = next;
    } else {
      for (const ref of update.add) {
        const before = this.#held.get(ref.job, ref.shard);
        const order = before === undefined ? 1 : comparePairs(ref, before);
        if (order < 0) {
          changes.ignored.push(ref);
        } else if (order > 0) {
          const held: HeldAssignment = { ...ref, revoking: false };
          this.#held.set(held);
          changes.added.push(held);
        }
      }
    }
    for (const ref of update.revoke) {
      const before = this.#held.get(ref.job, ref.shard);
      if (before === undefined) {
        changes.unknownRevokes.push(ref);
        continue;
      }
      if (comparePairs(ref, before) < 0) {
        changes.ignored.push(ref);
        continue;
      }
      // The release must carry the revoke's pair, which may be newer than the one held.
      const revoking: HeldAssignment = { ...ref, revoking: true };
      this.#held.set(revoking);
      changes.revoked.push(revoking);
    }
    return changes;
  }

  /**
   * Holds again an assignment this agent's previous process held, found from work that outlived
   * it (a Kubernetes Job): the next Hello claims it, and the controller's snapshot settles it.
   */
  restore(ref: AssignmentRef): void {
    const before = this.#held.get(ref.job, ref.shard);
    if (before === undefined || comparePairs(ref, before) > 0) this.#held.set({ ...ref, revoking: false });
  }

  /** The assignment held for a shard, if any. */
  get(job: string, shard: number): HeldAssignment | undefined {
    return this.#held.get(job, shard);
  }

  /** True when exactly this (job, shard, term, generation) is held and not being revoked. */
  holds(ref: AssignmentRef): boolean {
    const held = this.#held.get(ref.job, ref.shard);
    return held !== undefined && !held.revoking && comparePairs(held, ref) === 0;
  }

  /** Marks every held shard revoking (the agent is leaving) and returns them. */
  revokeAll(): HeldAssignment[] {
    const revoked: HeldAssignment[] = [];
    for (const held of this.#held.values()) {
      const revoking = held.revoking ? held : { ...held, revoking: true };
      this.#held.set(revoking);
      revoked.push(revoking);
    }
    return revoked;
  }

  /** Forgets a shard (released, or dropped). */
  remove(job: string, shard: number): void {
    this.#held.delete(job, shard);
  }

  /** Every held shard, ordered by job then shard. */
  list(): HeldAssignment[] {
    return [...this.#held.values()].sort((a, b) => (a.job === b.job ? a.shard - b.shard : a.job < b.job ? -1 : 1));
  }

  /** How many shards are held. */
  get size(): number {
    return this.#held.size;
  }
}

/**
 * Values by (job, shard). Looked up through a map per job, so that a lookup (on every dispatched
 * run and every ended one) builds no `job/shard` key string to hash; iterated in the order first
 * put, as one map keyed by that string would be (puts and deletes are rare: assignment changes).
 */
class ShardMap<V extends { readonly job: string; readonly shard: number }> {
  readonly #jobs = new Map<string, Map<number, V>>();
  readonly #ordered = new Map<string, V>();

  get size(): number {
    return this.#ordered.size;
  }

  get(job: string, shard: number): V | undefined {
    return this.#jobs.get(job)?.get(shard);
  }

  /** Puts `value` under its own job and shard, replacing what was there (in its place). */
  set(value: V): void {
    let shards = this.#jobs.get(value.job);
    if (shards === undefined) this.#jobs.set(value.job, (shards = new Map()));
    shards.set(value.shard, value);
    this.#ordered.set(shardKey(value.job, value.shard), value);
  }

  delete(job: string, shard: number): void {
    const shards = this.#jobs.get(job);
    if (shards === undefined || !shards.delete(shard)) return;
    if (shards.size === 0) this.#jobs.delete(job);
    this.#ordered.delete(shardKey(job, shard));
  }

  values(): IterableIterator<V> {
    return this.#ordered.values();
  }
}

/** The plain ref of an Assignment message; a missing shard ref reads as job "" shard 0. */
export function refOf(assignment: Assignment): AssignmentRef {
  return {
    job: assignment.shard?.job ?? "",
    shard: assignment.shard?.shard ?? 0,
    term: assignment.term,
    generation: assignment.generation,
  };
}
