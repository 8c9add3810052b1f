import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import type { AgentCommand } from "./messages.js";
import { sticky } from "./sharding/sticky.js";
import type { ShardingStrategy } from "./sharding/strategy.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

/** Sticky, counting how often each job is placed: placement is the cost these tests bound. */
function countingHarness(): { h: CoreHarness; placements: Map<string, number> } {
  const placements = new Map<string, number>();
  const counting: ShardingStrategy = (input) => {
    placements.set(input.job, (placements.get(input.job) ?? 0) + 1);
    return sticky(input);
  };
  const h = new CoreHarness({ ...DEFAULT_CORE_CONFIG, customStrategies: new Map([["counting", counting]]) });
  return { h, placements };
}

const job = (name: string, shards = 4) => testSpec(name, { schedule: undefined, shards, strategy: "custom:counting" });

describe("placement", () => {
  it("places shards once for every agent that joined in one batch of steps, and gives each its share", () => {
    const { h, placements } = countingHarness();
    h.connect("a0");
    h.apply(job("job", 20));
    placements.clear();

    for (let i = 1; i < 10; i++) {
      h.core.hello(`batch-${i}`, { agentId: `a${i}`, labels: {}, capacity: 1, handlers: ["work"], executors: [], maxConcurrent: 0, version: "test", held: [], executions: [] }, h.now);
    }
    const effects = h.core.take();

    expect(placements.get("job")).toBe(1);
    const added = new Map<string, number>();
    for (const { session, command } of effects.messages) {
      if (command.kind !== "assignments") continue;
      added.set(session, (added.get(session) ?? 0) + (command as Extract<AgentCommand, { kind: "assignments" }>).add.length);
    }
    // a0 held all 20 and is asked to give back 18; each joiner gets its 2 once they are released.
    expect([...added].filter(([, count]) => count > 0)).toEqual([]);
    const revoked = effects.messages.flatMap(({ command }) => (command.kind === "assignments" ? command.revoke : []));
    expect(revoked).toHaveLength(18);
  });

  it("does not place again a job whose agents, spec and shard owners did not change", () => {
    const { h, placements } = countingHarness();
    h.connect("a");
    h.connect("b");
    h.apply(job("first"));
    h.apply(job("second"));
    expect(placements.get("first")).toBe(1);

    h.apply(job("third"));
    expect(placements.get("first")).toBe(1);
    expect(placements.get("second")).toBe(1);
    expect(placements.get("third")).toBe(1);

    h.apply(job("second", 6));
    expect(placements.get("first")).toBe(1);
    expect(placements.get("second")).toBe(2);
  });

  it("places every job again when an agent joins or is drained", () => {
    const { h, placements } = countingHarness();
    h.autoRelease = false;
    const a = h.connect("a");
    h.apply(job("first"));
    h.apply(job("second"));
    placements.clear();

    h.connect("b");
    expect(Object.fromEntries(placements)).toEqual({ first: 1, second: 1 });
    h.releaseRevoked("a");
    expect(a.shardsOf("first")).toHaveLength(2);

    placements.clear();
    h.core.drainAgent("b", h.now);
    h.flush();
    expect(Object.fromEntries(placements)).toEqual({ first: 1, second: 1 });
  });
});
