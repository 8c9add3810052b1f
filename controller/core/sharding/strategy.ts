/** An agent a strategy may place shards on (already narrowed by placement). */
export interface ShardingAgent {
  id: string;
  /** Relative weight, >= 1: an agent of capacity 2 takes twice the shards of one of capacity 1. */
  capacity: number;
  /** Shards of other jobs it holds now; used to spread many small jobs across agents. */
  load: number;
}

export interface ShardingInput {
  job: string;
  shardCount: number;
  /** Eligible agents, in no particular order. */
  agents: readonly ShardingAgent[];
  /** The current owner of each shard, if any; owners may be absent from `agents`. */
  previous: ReadonlyMap<number, string>;
}

/**
 * A sharding strategy: a pure function from a job, its shards, the eligible agents and the
 * current assignment to the desired assignment. It maps every shard 0..shardCount-1 to an
 * agent id from `agents`, or returns an empty map when there are no agents.
 */
export type ShardingStrategy = (input: ShardingInput) => Map<number, string>;
