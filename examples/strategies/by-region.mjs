// A custom sharding strategy: region affinity. Shard N holds the data of REGIONS[N % 3] (keep
// spec.shardParameters in the same order), and goes to an agent whose id ends in "-<region>",
// e.g. worker-1-eu; a region with no such agent falls back to round robin over all agents.
// Run: shardline controller --strategy by-region=examples/strategies/by-region.mjs
// and select it in a job with `strategy: custom:by-region`.
const REGIONS = ["eu", "us", "ap"];

/** @param {{job: string, shardCount: number, agents: readonly {id: string}[], previous: ReadonlyMap<number, string>}} input */
export default function byRegion({ shardCount, agents }) {
  // Sorted, so the answer does not depend on the order agents are given in.
  const ids = agents.map((agent) => agent.id).sort();
  const placement = new Map();
  if (ids.length === 0) return placement;
  for (let shard = 0; shard < shardCount; shard++) {
    const region = REGIONS[shard % REGIONS.length];
    const local = ids.filter((id) => id.endsWith(`-${region}`));
    // Round robin over the region's agents, counting only that region's shards.
    const owner = local.length > 0 ? local[Math.floor(shard / REGIONS.length) % local.length] : ids[shard % ids.length];
    placement.set(shard, owner);
  }
  return placement;
}
