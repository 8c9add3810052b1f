import { describe, expect, it } from "vitest";
import { balanced, javaStringHashCode, oddEven, roundRobin } from "./balanced.js";
import { strategyFor } from "./index.js";
import { sticky } from "./sticky.js";
import type { ShardingStrategy } from "./strategy.js";

/** Runs a strategy with no previous assignment and returns each agent's shards in order. */
function layout(strategy: ShardingStrategy, job: string, shardCount: number, ids: string[]): Record<string, number[]> {
  const agents = ids.map((id) => ({ id, capacity: 1, load: 0 }));
  const result: Record<string, number[]> = Object.fromEntries(ids.map((id) => [id, []]));
  for (const [shard, owner] of strategy({ job, shardCount, agents, previous: new Map() })) result[owner]!.push(shard);
  for (const shards of Object.values(result)) shards.sort((a, b) => a - b);
  return result;
}

describe("javaStringHashCode", () => {
  it("matches Java's String.hashCode, overflow included", () => {
    // By hand: "a" = 97, "b" = 98, "ab" = 97 * 31 + 98 = 3105. The others overflow; their
    // values are what `"...".hashCode()` prints in jshell.
    expect(javaStringHashCode("")).toBe(0);
    expect(javaStringHashCode("a")).toBe(97);
    expect(javaStringHashCode("b")).toBe(98);
    expect(javaStringHashCode("ab")).toBe(3105);
    expect(javaStringHashCode("orders")).toBe(-1008770331);
    expect(javaStringHashCode("Hello World")).toBe(-862545276);
    expect(javaStringHashCode("polygenelubricants")).toBe(-2147483648);
  });
});

describe("balanced (AVG_ALLOCATION)", () => {
  it("gives 9 shards on 4 agents contiguous pairs and the leftover shard to the first", () => {
    expect(layout(balanced, "job", 9, ["c", "a", "d", "b"])).toEqual({ a: [0, 1, 8], b: [2, 3], c: [4, 5], d: [6, 7] });
  });

  it("gives 8 shards on 3 agents the two leftovers to the first two", () => {
    expect(layout(balanced, "job", 8, ["a", "b", "c"])).toEqual({ a: [0, 1, 6], b: [2, 3, 7], c: [4, 5] });
  });

  it("gives 10 shards on 3 agents blocks of three and shard 9 to the first", () => {
    expect(layout(balanced, "job", 10, ["a", "b", "c"])).toEqual({ a: [0, 1, 2, 9], b: [3, 4, 5], c: [6, 7, 8] });
  });

  it("leaves the last agents empty when there are fewer shards than agents", () => {
    expect(layout(balanced, "job", 2, ["a", "b", "c"])).toEqual({ a: [0], b: [1], c: [] });
  });

  it("ignores the previous assignment", () => {
    const agents = ["a", "b"].map((id) => ({ id, capacity: 1, load: 0 }));
    const previous = new Map([
      [0, "b"],
      [1, "a"],
    ]);
    expect(balanced({ job: "job", shardCount: 2, agents, previous })).toEqual(
      new Map([
        [0, "a"],
        [1, "b"],
      ]),
    );
  });

  it("returns an empty assignment when no agent is eligible", () => {
    expect(balanced({ job: "job", shardCount: 3, agents: [], previous: new Map() }).size).toBe(0);
  });
});

describe("odd-even (ODEVITY)", () => {
  it("allocates over ascending ids when the job's hash is odd", () => {
    // hash("a") = 97, odd: order a, b, c, d, then AVG_ALLOCATION of 9.
    expect(layout(oddEven, "a", 9, ["d", "b", "a", "c"])).toEqual({ a: [0, 1, 8], b: [2, 3], c: [4, 5], d: [6, 7] });
  });

  it("allocates over descending ids when the job's hash is even", () => {
    // hash("b") = 98, even: order d, c, b, a, then AVG_ALLOCATION of 9.
    expect(layout(oddEven, "b", 9, ["a", "b", "c", "d"])).toEqual({ d: [0, 1, 8], c: [2, 3], b: [4, 5], a: [6, 7] });
  });

  it("treats a negative odd hash as odd", () => {
    // hash("orders") = -1008770331; Java's -1008770331 % 2 is -1, not 0, so ascending: a, b, c.
    expect(layout(oddEven, "orders", 8, ["c", "b", "a"])).toEqual({ a: [0, 1, 6], b: [2, 3, 7], c: [4, 5] });
  });

  it("treats a negative even hash as even", () => {
    // hash("Hello World") = -862545276, even: descending c, b, a.
    expect(layout(oddEven, "Hello World", 8, ["a", "b", "c"])).toEqual({ c: [0, 1, 6], b: [2, 3, 7], a: [4, 5] });
  });
});

describe("round-robin (ROUND_ROBIN)", () => {
  it("rotates the sorted agents left by the hash modulo their count", () => {
    // hash("a") = 97 = 32 * 3 + 1: offset 1, order b, c, a, then AVG_ALLOCATION of 8.
    expect(layout(roundRobin, "a", 8, ["a", "b", "c"])).toEqual({ b: [0, 1, 6], c: [2, 3, 7], a: [4, 5] });
  });

  it("starts an even-hash job further along", () => {
    // hash("b") = 98 = 24 * 4 + 2: offset 2, order c, d, a, b, then AVG_ALLOCATION of 9.
    expect(layout(roundRobin, "b", 9, ["a", "b", "c", "d"])).toEqual({ c: [0, 1, 8], d: [2, 3], a: [4, 5], b: [6, 7] });
  });

  it("uses the absolute value of a negative hash", () => {
    // |hash("orders")| = 1008770331; its last two digits 31 give 31 mod 4 = 3: order d, a, b, c.
    expect(layout(roundRobin, "orders", 9, ["a", "b", "c", "d"])).toEqual({
      d: [0, 1, 8],
      a: [2, 3],
      b: [4, 5],
      c: [6, 7],
    });
  });

  it("handles a hash of -2^31, where Java's Math.abs stays negative", () => {
    // |hash("polygenelubricants")| = 2147483648, digit sum 47, so mod 3 = 2: order c, a, b.
    expect(layout(roundRobin, "polygenelubricants", 8, ["a", "b", "c"])).toEqual({
      c: [0, 1, 6],
      a: [2, 3, 7],
      b: [4, 5],
    });
  });
});

describe("strategyFor", () => {
  it("maps each strategy name to its strategy", () => {
    expect(strategyFor("sticky")).toBe(sticky);
    expect(strategyFor("balanced")).toBe(balanced);
    expect(strategyFor("odd-even")).toBe(oddEven);
    expect(strategyFor("round-robin")).toBe(roundRobin);
  });
});
