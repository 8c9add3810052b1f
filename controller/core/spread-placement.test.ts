import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "./config.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

const spreadJob = (name: string, shards: number, spreadBy = ["zone"]) =>
  testSpec(name, { schedule: undefined, shards, placement: { selector: {}, spreadBy } });

function shardsByAgent(h: CoreHarness, job: string, agents: string[]): Record<string, number> {
  return Object.fromEntries(agents.map((id) => [id, h.agents.get(id)!.shardsOf(job).length]));
}

describe("placement across zones (spec.placement.spreadBy)", () => {
  it("shares a job's shards evenly between zones, however many agents each zone has", () => {
    const h = new CoreHarness();
    for (const id of ["x1", "x2", "x3"]) h.connect(id, { labels: { zone: "x" } });
    h.connect("y1", { labels: { zone: "y" } });
    h.apply(spreadJob("job", 8));

    expect(shardsByAgent(h, "job", ["x1", "x2", "x3", "y1"])).toEqual({ x1: 2, x2: 1, x3: 1, y1: 4 });
  });

  it("spreads across nodes within a zone when spreadBy names both", () => {
    const h = new CoreHarness();
    h.connect("x-n1-a", { labels: { zone: "x", node: "n1" } });
    h.connect("x-n1-b", { labels: { zone: "x", node: "n1" } });
    h.connect("x-n2-a", { labels: { zone: "x", node: "n2" } });
    h.connect("y-n3-a", { labels: { zone: "y", node: "n3" } });
    h.apply(spreadJob("job", 8, ["zone", "node"]));

    expect(shardsByAgent(h, "job", ["x-n1-a", "x-n1-b", "x-n2-a", "y-n3-a"])).toEqual({ "x-n1-a": 1, "x-n1-b": 1, "x-n2-a": 2, "y-n3-a": 4 });
  });

  it("gives no shards of a spread job to an agent without the label, and the others' shards as usual", () => {
    const h = new CoreHarness();
    h.connect("x1", { labels: { zone: "x" } });
    h.connect("unzoned");
    h.apply(spreadJob("spread", 4));
    h.apply(testSpec("plain", { schedule: undefined, shards: 4 }));

    expect(shardsByAgent(h, "spread", ["x1", "unzoned"])).toEqual({ x1: 4, unzoned: 0 });
    expect(shardsByAgent(h, "plain", ["x1", "unzoned"])).toEqual({ x1: 2, unzoned: 2 });
  });

  it("moves a lost zone's shards to the zones left once its agent's lease expires, and nothing else", () => {
    const h = new CoreHarness();
    h.connect("x1", { labels: { zone: "x" } });
    h.connect("y1", { labels: { zone: "y" } });
    h.connect("z1", { labels: { zone: "z" } });
    h.apply(spreadJob("job", 6));
    const before = { x1: h.agents.get("x1")!.shardsOf("job"), y1: h.agents.get("y1")!.shardsOf("job") };
    expect(shardsByAgent(h, "job", ["x1", "y1", "z1"])).toEqual({ x1: 2, y1: 2, z1: 2 });

    h.crash("z1");
    expect(shardsByAgent(h, "job", ["x1", "y1"])).toEqual({ x1: 2, y1: 2 });
    h.run(DEFAULT_CORE_CONFIG.leaseTtlMs + 500, ["z1"]);

    expect(shardsByAgent(h, "job", ["x1", "y1"])).toEqual({ x1: 3, y1: 3 });
    for (const shard of before.x1) expect(h.agents.get("x1")!.shardsOf("job")).toContain(shard);
    for (const shard of before.y1) expect(h.agents.get("y1")!.shardsOf("job")).toContain(shard);
  });

  it("evens the zones out when a new zone's agent joins, moving shards only to it", () => {
    const h = new CoreHarness();
    h.connect("x1", { labels: { zone: "x" } });
    h.connect("x2", { labels: { zone: "x" } });
    h.apply(spreadJob("job", 6));
    expect(shardsByAgent(h, "job", ["x1", "x2"])).toEqual({ x1: 3, x2: 3 });

    h.connect("y1", { labels: { zone: "y" } });

    expect(shardsByAgent(h, "job", ["x1", "x2", "y1"])).toEqual({ x1: 2, x2: 1, y1: 3 });
  });
});
