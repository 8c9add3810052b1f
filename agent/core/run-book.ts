import { create } from "@bufbuild/protobuf";
import { ExecutionUpdateSchema, type ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";

/** The shard of a run that belongs to none: a spec.onFireComplete hook's. */
export const NO_SHARD = -1;

/** One execution the agent holds: waiting for its fire instant, or running. */
export interface HeldRun {
  readonly executionId: string;
  readonly job: string;
  /** NO_SHARD for a completion hook run. */
  readonly shard: number;
  /** True once told to start (at its fire instant, under a valid lease). */
  started: boolean;
  /** How long it may go on, once started, after the lease lapsed (its disconnect grace); 0: not at all. */
  readonly graceMs: number;
  /** While the agent is fenced: when its grace ends and it is aborted, unless a Welcome comes first. */
  abortAt?: number;
  /** The RUNNING report, listed in the next Hello while the run lasts. */
  running?: ExecutionUpdate;
}

/**
 * The executions this agent holds, from the dispatch that gave one to the terminal report that
 * ends it: a waiting or running run is the agent's alike (a Cancel, a fence or a drain ends it,
 * a Hello lists it). Pure bookkeeping.
 */
export class RunBook {
  readonly #runs = new Map<string, HeldRun>();

  has(executionId: string): boolean {
    return this.#runs.has(executionId);
  }

  get(executionId: string): HeldRun | undefined {
    return this.#runs.get(executionId);
  }

  /** Holds a run, not started. */
  hold(executionId: string, job: string, shard: number, graceMs = 0): HeldRun {
    const run: HeldRun = { executionId, job, shard, started: false, graceMs };
    this.#runs.set(executionId, run);
    return run;
  }

  /** Its terminal report came: the run is no longer held. Returns it, if it was. */
  end(executionId: string): HeldRun | undefined {
    const run = this.#runs.get(executionId);
    this.#runs.delete(executionId);
    return run;
  }

  /** How many runs are held. */
  get size(): number {
    return this.#runs.size;
  }

  /** Ids of the held runs, in the order they came. */
  ids(): string[] {
    return [...this.#runs.keys()];
  }

  /** Every held run, in the order they came. */
  list(): HeldRun[] {
    return [...this.#runs.values()];
  }

  /** How many runs are held on a shard. */
  countOn(shard: { job: string; shard: number }): number {
    let count = 0;
    for (const run of this.#runs.values()) if (run.job === shard.job && run.shard === shard.shard) count++;
    return count;
  }

  /**
   * What a Hello lists of the held runs: RUNNING ones with their RUNNING report, and a run
   * dispatched ahead and not started yet as PENDING (the controller must know it is still held,
   * or it would take it for lost and run it again beside it).
   */
  forHello(): ExecutionUpdate[] {
    return this.list().map((run) => run.running ?? create(ExecutionUpdateSchema, { executionId: run.executionId, state: ExecutionState.PENDING }));
  }
}
