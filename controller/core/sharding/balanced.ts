import { compareIds } from "./sticky.js";
import type { ShardingStrategy } from "./strategy.js";

/**
 * ElasticJob's AVG_ALLOCATION over agents sorted by id: each of N agents takes floor(S / N)
 * contiguous shards in order, and the S mod N highest shards go one each to the first agents
 * (9 shards on a, b, c, d: a [0, 1, 8], b [2, 3], c [4, 5], d [6, 7]). Ignores the previous
 * assignment and capacity, so any change of agents may move most shards.
 */
export const balanced: ShardingStrategy = ({ shardCount, agents }) =>
  averageAllocation(shardCount, sortedIds(agents));

/**
 * ElasticJob's ODEVITY: AVG_ALLOCATION over agents sorted by id ascending when the job name's
 * Java hashCode is odd (negative odd included), descending when it is even, so that jobs with
 * few shards do not all land on the first agent.
 */
export const oddEven: ShardingStrategy = ({ job, shardCount, agents }) => {
  const ids = sortedIds(agents);
  if (javaStringHashCode(job) % 2 === 0) ids.reverse();
  return averageAllocation(shardCount, ids);
};

/**
 * ElasticJob's ROUND_ROBIN: AVG_ALLOCATION over the id-sorted agents rotated left by
 * |hashCode(job)| mod N, so each job starts its blocks on a different agent.
 */
export const roundRobin: ShardingStrategy = ({ job, shardCount, agents }) => {
  const ids = sortedIds(agents);
  if (ids.length === 0) return new Map();
  // Math.abs of Integer.MIN_VALUE stays negative in Java (and ElasticJob then fails); here it is 2^31.
  const offset = Math.abs(javaStringHashCode(job)) % ids.length;
  return averageAllocation(shardCount, [...ids.slice(offset), ...ids.slice(0, offset)]);
};

/** Java's String.hashCode: s[0]*31^(n-1) + ... + s[n-1] over UTF-16 code units, as a signed 32-bit int. */
export function javaStringHashCode(text: string): number {
  let hash = 0;
  for (let i = 0; i < text.length; i++) {
    hash = (Math.imul(31, hash) + text.charCodeAt(i)) | 0;
  }
  return hash;
}

function averageAllocation(shardCount: number, ids: readonly string[]): Map<number, string> {
  const assignment = new Map<number, string>();
  if (ids.length === 0) return assignment;
  const perAgent = Math.floor(shardCount / ids.length);
  ids.forEach((id, index) => {
    for (let shard = index * perAgent; shard < (index + 1) * perAgent; shard++) assignment.set(shard, id);
  });
  for (let shard = perAgent * ids.length; shard < shardCount; shard++) {
    assignment.set(shard, ids[shard - perAgent * ids.length] as string);
  }
  return assignment;
}

function sortedIds(agents: readonly { id: string }[]): string[] {
  return agents.map((agent) => agent.id).sort(compareIds);
}
