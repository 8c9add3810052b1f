import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShardlineError } from "../../../shared/errors.js";
import { checkStrategyLoaded, loadCustomStrategies, loadCustomStrategy, parseStrategyFlag } from "./custom-strategy.js";
import type { ShardingInput } from "./strategy.js";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "shardline-strategy-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let written = 0;

/** Writes an ES module with this source to the temp dir and returns its absolute path. */
async function strategyModule(source: string): Promise<string> {
  const path = join(dir, `strategy-${++written}.mjs`);
  await writeFile(path, source);
  return path;
}

/** The error loading a module fails with; its message must name the flag and the module. */
async function loadFailure(source: string): Promise<string> {
  const path = await strategyModule(source);
  const error = await loadCustomStrategy("mine", path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ShardlineError);
  const failure = error as ShardlineError;
  expect(failure.code).toBe("invalid-argument");
  expect(failure.details.field).toBe("--strategy");
  expect(failure.message).toContain(`--strategy mine=${path}: ${path} `);
  expect(failure.message).not.toContain("\n");
  return failure.message;
}

/** Round robin over the agents sorted by id: a valid, deterministic strategy. */
const ROUND_ROBIN = `
export default function ({ shardCount, agents }) {
  const ids = agents.map((a) => a.id).sort();
  const placement = new Map();
  if (ids.length === 0) return placement;
  for (let shard = 0; shard < shardCount; shard++) placement.set(shard, ids[shard % ids.length]);
  return placement;
}
`;

function input(shardCount: number, ids: string[], previous: [number, string][] = []): ShardingInput {
  return { job: "orders", shardCount, agents: ids.map((id) => ({ id, capacity: 1, load: 0 })), previous: new Map(previous) };
}

describe("loadCustomStrategy", () => {
  it("loads a valid module and places shards as its default export says", async () => {
    const strategy = await loadCustomStrategy("rr", await strategyModule(ROUND_ROBIN));
    expect([...strategy(input(5, ["b", "a"]))]).toEqual([
      [0, "a"],
      [1, "b"],
      [2, "a"],
      [3, "b"],
      [4, "a"],
    ]);
    expect(strategy(input(3, [])).size).toBe(0);
  });

  it("loads a module given relative to the working directory", async () => {
    const path = await strategyModule(ROUND_ROBIN);
    const strategy = await loadCustomStrategy("rr", relative(process.cwd(), path));
    expect(strategy(input(2, ["a"])).get(1)).toBe("a");
  });

  it("loads the example region-affinity strategy", async () => {
    const strategy = await loadCustomStrategy("by-region", "examples/strategies/by-region.mjs");
    // Shards 0 and 3 are eu, 1 is us, 2 is ap (no ap agent: round robin over all, shard 2 of 2 -> first).
    expect(Object.fromEntries(strategy(input(4, ["worker-us", "worker-eu"])))).toEqual({
      0: "worker-eu",
      1: "worker-us",
      2: "worker-eu",
      3: "worker-eu",
    });
  });

  it("gives the strategy frozen copies, so it cannot change the caller's data", async () => {
    const path = await strategyModule(`
      export default function ({ shardCount, agents, previous }) {
        const placement = new Map();
        const frozen = Object.isFrozen(agents) && agents.every(Object.isFrozen);
        let mapLocked = false;
        try { previous.set(0, "x"); } catch { mapLocked = true; }
        for (let shard = 0; shard < shardCount && agents.length > 0; shard++) {
          placement.set(shard, frozen && mapLocked ? agents[0].id : "not-frozen");
        }
        return placement;
      }
    `);
    const strategy = await loadCustomStrategy("frozen", path);
    const given = input(2, ["a"], [[0, "a"]]);
    expect(strategy(given).get(0)).toBe("a");
    expect([...given.previous]).toEqual([[0, "a"]]);
    expect(Object.isFrozen(given.agents)).toBe(false);
  });

  it("hands back a copy of the answer, not the Map the strategy may keep", async () => {
    const path = await strategyModule(`
      const cached = new Map();
      export default function ({ shardCount, agents }) {
        cached.clear();
        for (let shard = 0; shard < shardCount && agents.length > 0; shard++) cached.set(shard, agents[0].id);
        return cached;
      }
    `);
    const strategy = await loadCustomStrategy("cached", path);
    const first = strategy(input(2, ["a"]));
    strategy(input(1, ["b"]));
    expect([...first]).toEqual([
      [0, "a"],
      [1, "a"],
    ]);
  });

  it("refuses a module that cannot be imported", async () => {
    // Under vitest the syntax error comes from its module transform, under node from node itself.
    expect(await loadFailure("export default function (")).toMatch(/ cannot be imported: \w*Error: /);
    const missing = join(dir, "missing.mjs");
    const error = (await loadCustomStrategy("gone", missing).catch((e: unknown) => e)) as ShardlineError;
    expect(error.message).toMatch(new RegExp(`^--strategy gone=.*missing\\.mjs: .* cannot be imported: `));
  });

  it("refuses a module with no default export", async () => {
    expect(await loadFailure("export function place() { return new Map(); }")).toContain(" has no default export; expected ");
  });

  it("refuses a default export that is not a function", async () => {
    expect(await loadFailure("export default { place() { return new Map(); } };")).toContain(" has a default export that is an object, not a function");
  });

  it("refuses a strategy that throws on some input, naming the input", async () => {
    const message = await loadFailure(`
      export default function ({ shardCount, agents }) {
        if (shardCount === 7) throw new Error("seven is unlucky");
        const placement = new Map();
        for (let shard = 0; shard < shardCount && agents.length > 0; shard++) placement.set(shard, agents[0].id);
        return placement;
      }
    `);
    expect(message).toContain(" threw on 7 shards, no agents, no previous assignment: Error: seven is unlucky");
  });

  it("refuses a strategy that sorts its input in place, and says why that fails", async () => {
    const message = await loadFailure(`
      export default function ({ shardCount, agents }) {
        const ids = agents.sort((a, b) => (a.id < b.id ? -1 : 1)).map((a) => a.id);
        const placement = new Map();
        for (let shard = 0; shard < shardCount && ids.length > 0; shard++) placement.set(shard, ids[shard % ids.length]);
        return placement;
      }
    `);
    expect(message).toMatch(/ threw on 1 shard, agents agent-c \(capacity 1\), agent-a \(capacity 2\), agent-b \(capacity 3\), no previous assignment: TypeError: .*\(its input is frozen: copy agents or previous before sorting or changing them\)/);
  });

  it("refuses a strategy that places a shard on an agent it was not given", async () => {
    const message = await loadFailure(`
      export default function ({ shardCount, agents }) {
        const placement = new Map();
        for (let shard = 0; shard < shardCount && agents.length > 0; shard++) placement.set(shard, shard === 3 ? "x" : agents[0].id);
        return placement;
      }
    `);
    expect(message).toContain(' shard 3 was placed on "x", which is not one of the agents given, on 4 shards, agents solo (capacity 1), no previous assignment');
  });

  it("refuses a strategy that leaves a shard unplaced", async () => {
    const message = await loadFailure(`
      export default function ({ shardCount, agents }) {
        const placement = new Map();
        for (let shard = 0; shard < shardCount - 1 && agents.length > 0; shard++) placement.set(shard, agents[0].id);
        return placement;
      }
    `);
    expect(message).toContain(" left shard 0 unplaced, on 1 shard, agents solo (capacity 1)");
  });

  it("refuses a strategy that places shards when there are no agents, or returns no Map", async () => {
    expect(await loadFailure(`export default () => new Map([[0, "ghost"]]);`)).toContain(' placed shard 0 on "ghost" although no agents were given');
    expect(await loadFailure(`export default () => ({});`)).toContain(" returned an object instead of a Map of shard number to agent id");
    expect(await loadFailure(`export default async () => new Map();`)).toContain(" returned a Promise instead of a Map of shard number to agent id (a strategy must be synchronous)");
  });

  it("refuses a strategy that is not deterministic", async () => {
    const message = await loadFailure(`
      export default function ({ shardCount, agents }) {
        const placement = new Map();
        for (let shard = 0; shard < shardCount && agents.length > 0; shard++) {
          placement.set(shard, agents[Math.floor(Math.random() * agents.length)].id);
        }
        return placement;
      }
    `);
    expect(message).toContain(" is not deterministic: the same input gave two different placements (shard ");
    expect(message).toContain("agents agent-c (capacity 1), agent-a (capacity 2), agent-b (capacity 3)");
  });
});

describe("loadCustomStrategies", () => {
  it("loads every module by name and refuses a name given twice", async () => {
    const path = await strategyModule(ROUND_ROBIN);
    const loaded = await loadCustomStrategies([
      { name: "one", modulePath: path },
      { name: "two", modulePath: path },
    ]);
    expect([...loaded.keys()]).toEqual(["one", "two"]);
    const error = (await loadCustomStrategies([
      { name: "one", modulePath: path },
      { name: "one", modulePath: path },
    ]).catch((e: unknown) => e)) as ShardlineError;
    expect(error.message).toMatch(/^--strategy: "one=.*" is not allowed; expected each NAME once; "one" was already given$/);
  });
});

describe("parseStrategyFlag", () => {
  it("splits NAME=MODULE at the first '='", () => {
    expect(parseStrategyFlag("by-region=./examples/strategies/by-region.mjs")).toEqual({
      name: "by-region",
      modulePath: "./examples/strategies/by-region.mjs",
    });
    expect(parseStrategyFlag("x1=/opt/a=b.mjs")).toEqual({ name: "x1", modulePath: "/opt/a=b.mjs" });
  });

  it.each(["by-region", "=x.mjs", "by-region=", "By-Region=x.mjs", "-x=x.mjs", "a_b=x.mjs", `${"a".repeat(64)}=x.mjs`, "sticky=x.mjs", "round-robin=x.mjs"])(
    "refuses %j naming --strategy and what is allowed",
    (value) => {
      expect(() => parseStrategyFlag(value)).toThrow(
        `--strategy: ${JSON.stringify(value)} is not allowed; expected NAME=MODULE, where NAME is a DNS-1123 label (1 to 63 lowercase letters, digits and '-') other than sticky, balanced, odd-even, round-robin, and MODULE the path of an ES module`,
      );
    },
  );
});

describe("checkStrategyLoaded", () => {
  it("accepts built-in strategies and loaded custom ones", () => {
    const loaded = new Map([["by-region", () => new Map()]]);
    expect(() => checkStrategyLoaded("sticky", loaded)).not.toThrow();
    expect(() => checkStrategyLoaded("custom:by-region", loaded)).not.toThrow();
  });

  it("refuses custom:NAME for a strategy that was not loaded, listing the loaded ones", () => {
    const loaded = new Map([
      ["zeta", () => new Map()],
      ["alpha", () => new Map()],
    ]);
    expect(() => checkStrategyLoaded("custom:by-region", loaded)).toThrow(
      'spec.strategy: "custom:by-region" is not allowed; expected sticky, balanced, odd-even, round-robin, or custom:NAME for a loaded strategy (loaded: alpha, zeta)',
    );
    expect(() => checkStrategyLoaded("custom:by-region", new Map())).toThrow(/\(loaded: none\)$/);
  });
});
