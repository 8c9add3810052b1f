import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { spreadSticky } from "./sticky.js";
import type { ShardingAgent, ShardingInput } from "./strategy.js";

const RUNS = { numRuns: 200 };

/** An agent id names its place: "zone/node/n". */
const topologyOf = (id: string): string[] => id.split("/");

function countBy<T>(values: Iterable<T>): Map<T, number> {
  const counts = new Map<T, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  return counts;
}

/** max - min of the shards per key, counting keys that hold none. */
function skew(assignment: ReadonlyMap<number, string>, keyOf: (agent: string) => string, keys: Iterable<string>): number {
  const counts = countBy([...assignment.values()].map(keyOf));
  const all = [...new Set(keys)].map((key) => counts.get(key) ?? 0);
  return Math.max(...all) - Math.min(...all);
}

function moved(before: ReadonlyMap<number, string>, after: ReadonlyMap<number, string>): number[] {
  return [...after].filter(([shard, owner]) => before.get(shard) !== owner).map(([shard]) => shard);
}

/** Agents in 1-4 zones of 1-3 nodes of 1-2 agents each, with capacities, and a shard count. */
const clusterOf = (capacity: fc.Arbitrary<number>) =>
  fc
    .record({
      shardCount: fc.integer({ min: 1, max: 60 }),
      zones: fc.array(fc.array(fc.array(capacity, { minLength: 1, maxLength: 2 }), { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 4 }),
    })
    .map(({ shardCount, zones }) => {
      const agents: ShardingAgent[] = [];
      zones.forEach((nodes, z) =>
        nodes.forEach((slots, n) => slots.forEach((capacity, a) => agents.push({ id: `z${z}/n${n}/${a}`, capacity, load: 0 }))),
      );
      return { job: "job", shardCount, agents, previous: new Map<number, string>() } satisfies ShardingInput;
    });
const cluster = clusterOf(fc.integer({ min: 1, max: 3 }));
/** As sticky promises, movement is least with equal capacities (see sticky.test.ts). */
const evenCluster = clusterOf(fc.constant(1));

const byZone = spreadSticky(topologyOf, 1);
const byZoneThenNode = spreadSticky(topologyOf, 2);
const zone = (id: string): string => topologyOf(id)[0]!;
const node = (id: string): string => topologyOf(id).slice(0, 2).join("/");

describe("spreadSticky", () => {
  it("places every shard on an eligible agent, with zones within one shard of each other whatever their capacity", () => {
    fc.assert(
      fc.property(cluster, (input) => {
        const assignment = byZone(input);
        const ids = new Set(input.agents.map((a) => a.id));
        expect([...assignment.keys()].sort((a, b) => a - b)).toEqual([...Array(input.shardCount).keys()]);
        for (const owner of assignment.values()) expect(ids.has(owner)).toBe(true);
        expect(skew(assignment, zone, input.agents.map((a) => zone(a.id)))).toBeLessThanOrEqual(1);
      }),
      RUNS,
    );
  });

  it("spreads across nodes within each zone when given a second level", () => {
    fc.assert(
      fc.property(cluster, (input) => {
        const assignment = byZoneThenNode(input);
        expect(skew(assignment, zone, input.agents.map((a) => zone(a.id)))).toBeLessThanOrEqual(1);
        for (const z of new Set(input.agents.map((a) => zone(a.id)))) {
          const inZone = new Map<number, string>([...assignment].filter(([, owner]) => zone(owner) === z));
          const nodes = input.agents.filter((a) => zone(a.id) === z).map((a) => node(a.id));
          expect(skew(inZone, node, nodes)).toBeLessThanOrEqual(1);
        }
      }),
      RUNS,
    );
  });

  it("changes nothing when placed again with nothing changed", () => {
    fc.assert(
      fc.property(cluster, (input) => {
        const first = byZoneThenNode(input);
        expect(byZoneThenNode({ ...input, previous: first })).toEqual(first);
      }),
      RUNS,
    );
  });

  it("moves only a leaving agent's shards, and keeps the zones even", () => {
    fc.assert(
      fc.property(evenCluster, fc.nat(), (input, pick) => {
        const before = byZoneThenNode(input);
        const leaving = input.agents[pick % input.agents.length]!;
        const stay = input.agents.filter((a) => a !== leaving);
        fc.pre(stay.length > 0);
        const after = byZoneThenNode({ ...input, agents: stay, previous: before });
        for (const shard of moved(before, after)) expect(before.get(shard)).toBe(leaving.id);
        expect(skew(after, zone, stay.map((a) => zone(a.id)))).toBeLessThanOrEqual(1);
      }),
      RUNS,
    );
  });

  it("moves only a lost zone's shards when its last agent goes", () => {
    fc.assert(
      fc.property(evenCluster, fc.nat(), (input, pick) => {
        const zones = [...new Set(input.agents.map((a) => zone(a.id)))];
        fc.pre(zones.length > 1);
        const lost = zones[pick % zones.length]!;
        const before = byZone(input);
        const after = byZone({ ...input, agents: input.agents.filter((a) => zone(a.id) !== lost), previous: before });
        for (const shard of moved(before, after)) expect(zone(before.get(shard)!)).toBe(lost);
      }),
      RUNS,
    );
  });

  it("moves shards only onto a zone that joins, at most its even share", () => {
    fc.assert(
      fc.property(evenCluster, (input) => {
        const before = byZone(input);
        const joiner: ShardingAgent = { id: "new/n0/0", capacity: 1, load: 0 };
        const agents = [...input.agents, joiner];
        const after = byZone({ ...input, agents, previous: before });
        const domains = new Set(agents.map((a) => zone(a.id))).size;
        const shifted = moved(before, after);
        for (const shard of shifted) expect(after.get(shard)).toBe(joiner.id);
        expect(shifted.length).toBeLessThanOrEqual(Math.ceil(input.shardCount / domains));
      }),
      RUNS,
    );
  });

  it("gives each zone the same shards even when one zone has far more capacity", () => {
    const agents: ShardingAgent[] = [
      { id: "a/n0/0", capacity: 1, load: 0 },
      ...Array.from({ length: 5 }, (_, i) => ({ id: `b/n${i}/0`, capacity: 4, load: 0 })),
    ];
    const assignment = byZone({ job: "job", shardCount: 10, agents, previous: new Map() });
    expect(countBy([...assignment.values()].map(zone))).toEqual(new Map([["a", 5], ["b", 5]]));
  });

  it("shares a zone's shards between its agents by capacity", () => {
    const agents: ShardingAgent[] = [
      { id: "a/n0/0", capacity: 3, load: 0 },
      { id: "a/n1/0", capacity: 1, load: 0 },
      { id: "b/n0/0", capacity: 1, load: 0 },
    ];
    const assignment = byZone({ job: "job", shardCount: 8, agents, previous: new Map() });
    expect(countBy(assignment.values())).toEqual(new Map([["a/n0/0", 3], ["a/n1/0", 1], ["b/n0/0", 4]]));
  });

  it("places nothing when there are no agents", () => {
    expect(byZone({ job: "job", shardCount: 4, agents: [], previous: new Map() }).size).toBe(0);
  });
});
