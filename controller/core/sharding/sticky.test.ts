import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { sticky } from "./sticky.js";
import type { ShardingAgent } from "./strategy.js";

const RUNS = { numRuns: 200 };

function agent(id: string, capacity = 1, load = 0): ShardingAgent {
  return { id, capacity, load };
}

function countsByAgent(assignment: ReadonlyMap<number, string>, agents: readonly ShardingAgent[]): number[] {
  return agents.map((a) => [...assignment.values()].filter((owner) => owner === a.id).length);
}

function movedShards(before: ReadonlyMap<number, string>, after: ReadonlyMap<number, string>): number[] {
  return [...after].filter(([shard, owner]) => before.get(shard) !== owner).map(([shard]) => shard);
}

/** A job's shard count, its eligible agents, and a messy earlier assignment to start from. */
const scenario = (capacity: fc.Arbitrary<number> = fc.constant(1)) =>
  fc
    .record({
      shardCount: fc.integer({ min: 1, max: 64 }),
      agents: fc.uniqueArray(
        fc.record({ id: fc.string({ minLength: 1, maxLength: 4 }), capacity, load: fc.integer({ min: 0, max: 20 }) }),
        { minLength: 1, maxLength: 12, selector: (a) => a.id },
      ),
      seed: fc.array(fc.integer({ min: -2, max: 11 }), { minLength: 64, maxLength: 64 }),
    })
    .map(({ shardCount, agents, seed }) => {
      // -2: never assigned; -1: held by an agent that is gone; otherwise an eligible agent.
      const previous = new Map<number, string>();
      for (let shard = 0; shard < shardCount; shard++) {
        const pick = seed[shard] ?? -2;
        if (pick === -1) previous.set(shard, "gone");
        else if (pick >= 0) previous.set(shard, agents[pick % agents.length]!.id);
      }
      return { job: "job", shardCount, agents, previous };
    })
    .filter(({ agents }) => !agents.some((a) => a.id === "gone" || a.id === "joiner"));

/** Other jobs come and go between reconciles, so agents' loads change too. */
const newLoads = fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 13, maxLength: 13 });

function withLoads(agents: readonly ShardingAgent[], loads: number[]): ShardingAgent[] {
  return agents.map((a, i) => ({ ...a, load: loads[i] ?? 0 }));
}

/** Starts from sticky's own output, as the controller would after its first reconcile. */
const settled = (capacity?: fc.Arbitrary<number>) =>
  scenario(capacity).map((input) => ({ ...input, previous: sticky(input) }));

describe("sticky", () => {
  it("assigns every shard to an eligible agent", () => {
    fc.assert(
      fc.property(scenario(), (input) => {
        const assignment = sticky(input);
        const ids = new Set(input.agents.map((a) => a.id));
        expect([...assignment.keys()].sort((a, b) => a - b)).toEqual([...Array(input.shardCount).keys()]);
        for (const owner of assignment.values()) expect(ids.has(owner)).toBe(true);
      }),
      RUNS,
    );
  });

  it("returns an empty assignment when no agent is eligible", () => {
    expect(sticky({ job: "job", shardCount: 5, agents: [], previous: new Map([[0, "a"]]) }).size).toBe(0);
  });

  it("keeps agents of equal capacity within one shard of each other", () => {
    fc.assert(
      fc.property(scenario(), (input) => {
        const counts = countsByAgent(sticky(input), input.agents);
        expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
      }),
      RUNS,
    );
  });

  it("gives each agent within one shard of its capacity-weighted share", () => {
    fc.assert(
      fc.property(scenario(fc.integer({ min: 1, max: 4 })), (input) => {
        const counts = countsByAgent(sticky(input), input.agents);
        const totalCapacity = input.agents.reduce((sum, a) => sum + a.capacity, 0);
        input.agents.forEach((a, i) => {
          expect(Math.abs(counts[i]! - (input.shardCount * a.capacity) / totalCapacity)).toBeLessThan(1);
        });
      }),
      RUNS,
    );
  });

  it("moves only the leaving agent's shards", () => {
    fc.assert(
      fc.property(settled(), fc.nat(), newLoads, (input, which, loads) => {
        const leaving = input.agents[which % input.agents.length]!;
        const after = sticky({ ...input, agents: withLoads(input.agents, loads).filter((a) => a.id !== leaving.id) });
        for (const shard of movedShards(input.previous, after)) {
          expect(input.previous.get(shard)).toBe(leaving.id);
        }
      }),
      RUNS,
    );
  });

  it("moves at most ceil(S / (N + 1)) shards when an agent joins, all of them to the joiner", () => {
    fc.assert(
      fc.property(settled(), newLoads, (input, loads) => {
        const agents = withLoads([...input.agents, agent("joiner")], loads);
        const after = sticky({ ...input, agents });
        const moved = movedShards(input.previous, after);
        expect(moved.length).toBeLessThanOrEqual(Math.ceil(input.shardCount / agents.length));
        for (const shard of moved) expect(after.get(shard)).toBe("joiner");
      }),
      RUNS,
    );
  });

  it("changes nothing when applied to its own output", () => {
    fc.assert(
      fc.property(settled(fc.integer({ min: 1, max: 4 })), (input) => {
        expect(sticky(input)).toEqual(input.previous);
      }),
      RUNS,
    );
  });

  it("does not depend on the order of the agents", () => {
    fc.assert(
      fc.property(
        scenario(fc.integer({ min: 1, max: 4 })).chain((input) =>
          fc.tuple(fc.constant(input), fc.shuffledSubarray(input.agents, { minLength: input.agents.length })),
        ),
        ([input, shuffled]) => {
          expect(sticky({ ...input, agents: shuffled })).toEqual(sticky(input));
        },
      ),
      RUNS,
    );
  });

  it("moves 2 of 9 shards when one of 4 agents leaves, where ElasticJob's layout moves 6", () => {
    const agents = ["a", "b", "c", "d"].map((id) => agent(id));
    const before = sticky({ job: "job", shardCount: 9, agents, previous: new Map() });
    const leaving = before.get(4)!;
    const after = sticky({ job: "job", shardCount: 9, agents: agents.filter((a) => a.id !== leaving), previous: before });
    const moved = movedShards(before, after);
    expect(moved).toHaveLength(2);
    for (const shard of moved) expect(before.get(shard)).toBe(leaving);
  });

  it("puts a one-shard job on the least loaded agent", () => {
    const agents = [agent("a", 1, 5), agent("b", 1, 2), agent("c", 1, 7)];
    expect(sticky({ job: "job", shardCount: 1, agents, previous: new Map() })).toEqual(new Map([[0, "b"]]));
  });

  it("keeps a one-shard job on its agent even when another is less loaded", () => {
    const agents = [agent("a", 1, 5), agent("b", 1, 2)];
    expect(sticky({ job: "job", shardCount: 1, agents, previous: new Map([[0, "a"]]) })).toEqual(new Map([[0, "a"]]));
  });

  it("gives an agent of capacity 2 twice the shards of one of capacity 1", () => {
    const agents = [agent("small", 1), agent("big", 2)];
    const counts = countsByAgent(sticky({ job: "job", shardCount: 9, agents, previous: new Map() }), agents);
    expect(counts).toEqual([3, 6]);
  });

  it("forgets shards beyond a lowered shard count", () => {
    const previous = new Map([
      [0, "a"],
      [1, "a"],
      [2, "b"],
      [3, "b"],
    ]);
    const agents = [agent("a"), agent("b")];
    expect(sticky({ job: "job", shardCount: 2, agents, previous })).toEqual(
      new Map([
        [0, "a"],
        [1, "b"],
      ]),
    );
  });
});
