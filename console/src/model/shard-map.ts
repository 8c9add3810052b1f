import type { ShardStatus } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import type { Agent } from "../../../shared/gen/shardline/v1/types_pb.js";

/** Labels read as an agent's cluster, first found wins: Shardline's own, then the plain one. */
export const CLUSTER_LABELS = ["shardline.dev/cluster", "cluster"] as const;
/** Labels read as an agent's zone: Kubernetes' well-known one, then the plain one. */
export const ZONE_LABELS = ["topology.kubernetes.io/zone", "zone"] as const;
/** Shown for a cluster or zone an agent does not declare. */
export const NO_LABEL = "—";

/** Where an agent runs, from its labels. */
export function topologyOf(labels: Readonly<Record<string, string>>): { cluster: string; zone: string } {
  const first = (keys: readonly string[]): string => keys.map((key) => labels[key]).find((value) => value !== undefined && value !== "") ?? NO_LABEL;
  return { cluster: first(CLUSTER_LABELS), zone: first(ZONE_LABELS) };
}

/** Sizes of the map, in CSS pixels: each row's height follows from them, so rows can be virtualised. */
export interface MapGeometry {
  /** A shard's square plus the gap after it. */
  pitch: number;
  /** Space above and below a cell's squares. */
  padding: number;
  /** The least height of an agent's row (its label's line). */
  minRowHeight: number;
  /** The height of a cluster/zone heading. */
  groupHeight: number;
  /** Squares on one line of a cell, at most. */
  maxPerLine: number;
  /** Squares drawn in one cell, at most; the rest are counted ("+N"). */
  maxSquares: number;
}

export const DEFAULT_GEOMETRY: MapGeometry = { pitch: 12, padding: 6, minRowHeight: 28, groupHeight: 26, maxPerLine: 24, maxSquares: 480 };

/** A job's column: how many squares go on a line, and so its width. */
export interface MapColumn {
  job: string;
  perLine: number;
  width: number;
}

/** A line of the map: a cluster/zone heading, an agent's shards, or the shards no agent owns. */
export type MapRow =
  | { kind: "group"; key: string; cluster: string; zone: string; agents: number; top: number; height: number }
  | {
      kind: "agent" | "unassigned";
      key: string;
      /** The agent's id; "" for the unassigned row. */
      agentId: string;
      /** Undefined for the unassigned row, and for an owner the controller no longer lists. */
      agent: Agent | undefined;
      /** The row's shards of each job, by shard number. */
      cells: ReadonlyMap<string, readonly ShardStatus[]>;
      top: number;
      height: number;
    };

/** A row before it is placed. */
type Unplaced<R = MapRow> = R extends MapRow ? Omit<R, "top" | "height"> : never;

/** The whole map: columns (jobs, by name) and rows, each row placed (top, height). */
export interface ShardMap {
  columns: readonly MapColumn[];
  rows: readonly MapRow[];
  height: number;
}

/**
 * The overview's map: the unassigned row first (what needs attention), then agents grouped by
 * cluster and zone (sorted, undeclared last), by id within a group; one column per job; each
 * cell the row's shards of that job. A shard whose owner the controller no longer lists (it was
 * just forgotten) gets a row of its own rather than vanishing.
 */
export function buildShardMap(jobNames: Iterable<string>, agents: Iterable<Agent>, shards: Iterable<ShardStatus>, geometry: MapGeometry = DEFAULT_GEOMETRY): ShardMap {
  const jobs = [...new Set(jobNames)].sort();
  const byAgent = new Map<string, Map<string, ShardStatus[]>>();
  const unassigned = new Map<string, ShardStatus[]>();
  for (const shard of shards) {
    let cells = unassigned;
    if (shard.agent !== "") {
      cells = byAgent.get(shard.agent) ?? new Map<string, ShardStatus[]>();
      byAgent.set(shard.agent, cells);
    }
    const cell = cells.get(shard.job);
    if (cell === undefined) cells.set(shard.job, [shard]);
    else cell.push(shard);
  }
  for (const cells of [unassigned, ...byAgent.values()]) for (const cell of cells.values()) cell.sort((a, b) => a.shard - b.shard);
  const known = new Map<string, Agent | undefined>();
  for (const agent of agents) known.set(agent.id, agent);
  for (const id of byAgent.keys()) if (!known.has(id)) known.set(id, undefined);

  const columns = jobs.map((job) => {
    let most = 1;
    for (const cells of [unassigned, ...byAgent.values()]) most = Math.max(most, Math.min(cells.get(job)?.length ?? 0, geometry.maxSquares));
    const perLine = Math.min(most, geometry.maxPerLine, Math.max(4, Math.ceil(Math.sqrt(most * 4))));
    return { job, perLine, width: perLine * geometry.pitch + 2 * geometry.padding };
  });
  const heightOf = (cells: ReadonlyMap<string, readonly ShardStatus[]>): number => {
    let lines = 1;
    for (const column of columns) lines = Math.max(lines, Math.ceil(Math.min(cells.get(column.job)?.length ?? 0, geometry.maxSquares) / column.perLine));
    return Math.max(geometry.minRowHeight, lines * geometry.pitch + 2 * geometry.padding);
  };

  const rows: MapRow[] = [];
  let top = 0;
  const place = (row: Unplaced, height: number): void => {
    rows.push({ ...row, top, height } as MapRow);
    top += height;
  };
  place({ kind: "unassigned", key: "unassigned", agentId: "", agent: undefined, cells: unassigned }, heightOf(unassigned));

  const groups = new Map<string, { cluster: string; zone: string; ids: string[] }>();
  for (const [id, agent] of known) {
    const { cluster, zone } = topologyOf(agent?.labels ?? {});
    const key = `${cluster}\u0000${zone}`;
    const group = groups.get(key) ?? { cluster, zone, ids: [] };
    group.ids.push(id);
    groups.set(key, group);
  }
  const sorted = [...groups.values()].sort((a, b) => compareLabel(a.cluster, b.cluster) || compareLabel(a.zone, b.zone));
  for (const group of sorted) {
    place({ kind: "group", key: `group:${group.cluster}\u0000${group.zone}`, cluster: group.cluster, zone: group.zone, agents: group.ids.length }, geometry.groupHeight);
    for (const id of group.ids.sort()) {
      const cells = byAgent.get(id) ?? new Map<string, ShardStatus[]>();
      place({ kind: "agent", key: `agent:${id}`, agentId: id, agent: known.get(id), cells }, heightOf(cells));
    }
  }
  return { columns, rows, height: top };
}

/** Declared values in order, the undeclared ("—") last. */
function compareLabel(a: string, b: string): number {
  if (a === b) return 0;
  if (a === NO_LABEL) return 1;
  if (b === NO_LABEL) return -1;
  return a < b ? -1 : 1;
}

/**
 * The rows to draw for a viewport scrolled to `scrollTop` and `viewport` pixels high, with
 * `overscan` pixels more on each side: [start, end) into `rows`, found by binary search.
 */
export function visibleRows(rows: readonly MapRow[], scrollTop: number, viewport: number, overscan = 200): [number, number] {
  const from = scrollTop - overscan;
  const to = scrollTop + viewport + overscan;
  let low = 0;
  let high = rows.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    const row = rows[middle]!;
    if (row.top + row.height <= from) low = middle + 1;
    else high = middle;
  }
  let end = low;
  while (end < rows.length && rows[end]!.top < to) end++;
  return [low, end];
}
