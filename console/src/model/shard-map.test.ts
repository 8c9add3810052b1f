import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ShardStatusSchema } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentSchema } from "../../../shared/gen/shardline/v1/types_pb.js";
import { buildShardMap, DEFAULT_GEOMETRY, NO_LABEL, topologyOf, visibleRows } from "./shard-map.js";

const agent = (id: string, labels: Record<string, string> = {}) => create(AgentSchema, { id, labels });
const shard = (job: string, n: number, owner: string) => create(ShardStatusSchema, { job, shard: n, agent: owner });

describe("the shard map", () => {
  it("reads the cluster and the zone from Shardline's or Kubernetes' labels first, then the plain ones, — when absent", () => {
    expect(topologyOf({ "shardline.dev/cluster": "east", cluster: "x", "topology.kubernetes.io/zone": "east-1a", zone: "y" })).toEqual({ cluster: "east", zone: "east-1a" });
    expect(topologyOf({ cluster: "west", zone: "west-b" })).toEqual({ cluster: "west", zone: "west-b" });
    expect(topologyOf({})).toEqual({ cluster: NO_LABEL, zone: NO_LABEL });
    expect(topologyOf({ cluster: "" })).toEqual({ cluster: NO_LABEL, zone: NO_LABEL });
  });

  it("puts the unassigned row first, then agents grouped by cluster and zone (undeclared last), by id within a group", () => {
    const agents = [agent("w-9"), agent("e-2", { cluster: "east", zone: "b" }), agent("e-1", { cluster: "east", zone: "a" }), agent("e-3", { cluster: "east", zone: "a" }), agent("c-1", { cluster: "canary" })];
    const map = buildShardMap(["rollup"], agents, [shard("rollup", 0, "e-1"), shard("rollup", 1, ""), shard("rollup", 2, "e-3")]);
    const lines = map.rows.map((row) => (row.kind === "group" ? `[${row.cluster}/${row.zone}:${row.agents}]` : row.kind === "unassigned" ? "unassigned" : row.agentId));
    expect(lines).toEqual(["unassigned", "[canary/—:1]", "c-1", "[east/a:2]", "e-1", "e-3", "[east/b:1]", "e-2", "[—/—:1]", "w-9"]);
  });

  it("puts each shard in its owner's row and its job's column, sorted by number; no owner is the unassigned row", () => {
    const map = buildShardMap(["sweep", "rollup"], [agent("w-1"), agent("w-2")], [shard("rollup", 3, "w-1"), shard("rollup", 1, "w-1"), shard("sweep", 0, "w-2"), shard("rollup", 0, "")]);
    expect(map.columns.map((column) => column.job)).toEqual(["rollup", "sweep"]);
    const row = (id: string) => map.rows.find((r) => r.kind !== "group" && r.agentId === id);
    const cells = (id: string, job: string) => {
      const found = row(id);
      return found === undefined || found.kind === "group" ? undefined : found.cells.get(job)?.map((s) => s.shard);
    };
    expect(cells("w-1", "rollup")).toEqual([1, 3]);
    expect(cells("w-2", "sweep")).toEqual([0]);
    expect(cells("", "rollup")).toEqual([0]);
    expect(cells("w-2", "rollup")).toBeUndefined();
  });

  it("keeps the shards of an owner the controller no longer lists, in a row of its own", () => {
    const map = buildShardMap(["rollup"], [], [shard("rollup", 0, "gone-1")]);
    const row = map.rows.find((r) => r.kind === "agent");
    expect(row).toMatchObject({ agentId: "gone-1", agent: undefined });
  });

  it("moves a shard to its new owner's row when a change says so (an agent drained or lost)", () => {
    const agents = [agent("w-1"), agent("w-2")];
    const before = buildShardMap(["rollup"], agents, [shard("rollup", 0, "w-1")]);
    const after = buildShardMap(["rollup"], agents, [shard("rollup", 0, "w-2")]);
    const owner = (map: typeof before) => map.rows.find((r) => r.kind === "agent" && r.cells.has("rollup"));
    expect(owner(before)).toMatchObject({ agentId: "w-1" });
    expect(owner(after)).toMatchObject({ agentId: "w-2" });
  });

  it("places rows one under the other, taller where a cell holds more lines of squares", () => {
    const shards = Array.from({ length: 100 }, (_, n) => shard("big", n, n < 90 ? "w-1" : "w-2"));
    const map = buildShardMap(["big"], [agent("w-1"), agent("w-2")], shards);
    for (let i = 1; i < map.rows.length; i++) expect(map.rows[i]!.top).toBe(map.rows[i - 1]!.top + map.rows[i - 1]!.height);
    const column = map.columns[0]!;
    expect(column.perLine).toBeLessThanOrEqual(DEFAULT_GEOMETRY.maxPerLine);
    const heights = Object.fromEntries(map.rows.filter((r) => r.kind === "agent").map((r) => [r.kind === "agent" ? r.agentId : "", r.height]));
    expect(heights["w-1"]).toBe(Math.ceil(90 / column.perLine) * DEFAULT_GEOMETRY.pitch + 2 * DEFAULT_GEOMETRY.padding);
    expect(heights["w-2"]).toBe(DEFAULT_GEOMETRY.minRowHeight);
    expect(map.height).toBe(map.rows.reduce((sum, r) => sum + r.height, 0));
  });

  it("draws only the rows in view: 1,000 agents and 10,000 shards give a few dozen rows at any scroll position", () => {
    const agents = Array.from({ length: 1000 }, (_, i) => agent(`w-${String(i).padStart(4, "0")}`, { cluster: `c${i % 4}`, zone: `z${i % 12}` }));
    const shards = Array.from({ length: 10_000 }, (_, n) => shard(`job-${n % 20}`, Math.floor(n / 20), `w-${String(n % 1000).padStart(4, "0")}`));
    const started = performance.now();
    const map = buildShardMap(Array.from({ length: 20 }, (_, i) => `job-${i}`), agents, shards);
    const took = performance.now() - started;
    expect(map.rows.filter((r) => r.kind === "agent")).toHaveLength(1000);
    for (const scrollTop of [0, 5_000, map.height / 2, map.height - 600]) {
      const [start, end] = visibleRows(map.rows, scrollTop, 600);
      expect(end - start).toBeLessThan(60);
      const drawn = map.rows.slice(start, end);
      expect(drawn[0]!.top).toBeLessThanOrEqual(Math.max(0, scrollTop));
      expect(drawn[drawn.length - 1]!.top + drawn[drawn.length - 1]!.height).toBeGreaterThanOrEqual(Math.min(map.height, scrollTop + 600));
    }
    // Built at each change (at most a few times a second): it must stay well inside a frame's budget or two.
    expect(took).toBeLessThan(250);
  });

  it("finds nothing to draw past the end, and everything for a viewport taller than the map", () => {
    const map = buildShardMap(["rollup"], [agent("w-1")], [shard("rollup", 0, "w-1")]);
    expect(visibleRows(map.rows, 0, 10_000)).toEqual([0, map.rows.length]);
    expect(visibleRows(map.rows, map.height + 10_000, 600)).toEqual([map.rows.length, map.rows.length]);
  });
});
