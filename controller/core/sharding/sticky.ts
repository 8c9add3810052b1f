import type { ShardingAgent, ShardingInput, ShardingStrategy } from "./strategy.js";

interface QuotaRow {
  agent: ShardingAgent;
  /** floor(S * c / C): the shards this agent is owed before the remainder is handed out. */
  floor: number;
  /** S * c - floor * C: the fractional part of its exact share, scaled by C to stay an integer. */
  remainder: number;
  /** Shards of this job it holds now. */
  held: number;
}

/**
 * Where an agent sits, outermost first: its value of each spec.placement.spreadBy label (for
 * example its zone, then its node). Every agent handed to a spreading strategy has one per level.
 */
export type TopologyOf = (agentId: string) => readonly string[];

/**
 * The default strategy: each agent's share of the job's shards is proportional to its capacity
 * (largest-remainder method), every shard stays where it is while its agent is eligible and
 * within its share, and only orphaned or excess shards move. With equal capacities an agent
 * leaving moves only its own shards, and an agent joining takes at most ceil(S / (N + 1)).
 * The result depends only on the input's content, not on the order of `agents`.
 */
export const sticky: ShardingStrategy = (input) => placeWithin(input, (held) => quotas(input.shardCount, input.agents, held));

/**
 * `sticky` with the shares set by topology (spec.placement.spreadBy): the job's shards are first
 * shared evenly between the domains of the first level — the distinct values of one agent label,
 * such as a zone — then within each domain between the domains of the next level (its nodes),
 * and within the last level between agents by capacity. Domains count equally whatever their
 * capacity, as Kubernetes' topology spread does, so the most and fewest shards per domain differ
 * by at most one. Shards stay where they are within those shares, as with `sticky`: an agent
 * leaving moves only its own shards, a domain leaving only its domain's.
 */
export function spreadSticky(topologyOf: TopologyOf, levels: number): ShardingStrategy {
  return (input) => {
    const domainHeld = heldByDomain(input, topologyOf, levels);
    return placeWithin(input, (held) => nestedQuotas(input.shardCount, input.agents, held, domainHeld, topologyOf, "", 0, levels));
  };
}

/**
 * The shards each domain holds now, by domain path ("zone", "zone\0node"...), counting the
 * shards of owners no longer eligible too while their place is known: a domain that keeps them
 * moves them within itself instead of across domains.
 */
function heldByDomain(input: ShardingInput, topologyOf: TopologyOf, levels: number): Map<string, number> {
  const held = new Map<string, number>();
  for (const [shard, owner] of input.previous) {
    if (shard < 0 || shard >= input.shardCount) continue;
    const place = topologyOf(owner);
    if (place.length < levels) continue;
    let path = "";
    for (let level = 0; level < levels; level++) {
      path = domainPath(path, place[level]!);
      held.set(path, (held.get(path) ?? 0) + 1);
    }
  }
  return held;
}

function domainPath(parent: string, domain: string): string {
  return parent === "" ? domain : `${parent}\0${domain}`;
}

/**
 * Keeps every shard on its owner while the owner is eligible and within its quota, and hands
 * the rest (orphaned or excess) to the agents owed the most.
 */
function placeWithin(input: ShardingInput, quotasFor: (held: ReadonlyMap<string, number>) => Map<string, number>): Map<number, string> {
  const { shardCount, agents, previous } = input;
  const assignment = new Map<number, string>();
  if (agents.length === 0 || shardCount <= 0) return assignment;

  const eligible = new Map(agents.map((agent) => [agent.id, agent]));
  const quota = quotasFor(heldShards(input, eligible));
  const assigned = new Map<string, number>();
  const orphans: number[] = [];

  for (let shard = 0; shard < shardCount; shard++) {
    const owner = previous.get(shard);
    const count = owner === undefined ? 0 : (assigned.get(owner) ?? 0);
    if (owner !== undefined && eligible.has(owner) && count < (quota.get(owner) ?? 0)) {
      assignment.set(shard, owner);
      assigned.set(owner, count + 1);
    } else {
      orphans.push(shard);
    }
  }

  if (orphans.length === 0) return assignment;
  const underserved = new UnderservedQueue(agents.map((agent) => ({ agent, deficit: (quota.get(agent.id) ?? 0) - (assigned.get(agent.id) ?? 0) })));
  for (const shard of orphans) assignment.set(shard, underserved.take().id);
  return assignment;
}

function heldShards(input: ShardingInput, eligible: ReadonlyMap<string, ShardingAgent>): Map<string, number> {
  const held = new Map<string, number>();
  for (const [shard, owner] of input.previous) {
    // Shards beyond a lowered shard count, and owners no longer eligible, hold nothing.
    if (shard < 0 || shard >= input.shardCount || !eligible.has(owner)) continue;
    held.set(owner, (held.get(owner) ?? 0) + 1);
  }
  return held;
}

/**
 * Each agent's share of `shardCount` shards when every domain of level `level` gets an even
 * share, split again within the domain from the next level down; the shares sum to shardCount.
 */
function nestedQuotas(
  shardCount: number,
  agents: readonly ShardingAgent[],
  held: ReadonlyMap<string, number>,
  domainHeld: ReadonlyMap<string, number>,
  topologyOf: TopologyOf,
  parent: string,
  level: number,
  levels: number,
): Map<string, number> {
  if (level === levels) return quotas(shardCount, agents, held);
  const members = new Map<string, ShardingAgent[]>();
  for (const agent of agents) {
    const domain = topologyOf(agent.id)[level]!;
    const list = members.get(domain);
    if (list === undefined) members.set(domain, [agent]);
    else list.push(agent);
  }
  // Each domain is one agent of capacity 1, holding what its shards' owners there hold.
  const domains: ShardingAgent[] = [];
  const heldHere = new Map<string, number>();
  for (const [domain, list] of members) {
    domains.push({ id: domain, capacity: 1, load: list.reduce((sum, agent) => sum + agent.load, 0) });
    heldHere.set(domain, domainHeld.get(domainPath(parent, domain)) ?? 0);
  }
  const quota = new Map<string, number>();
  for (const [domain, share] of quotas(shardCount, domains, heldHere)) {
    const within = nestedQuotas(share, members.get(domain)!, held, domainHeld, topologyOf, domainPath(parent, domain), level + 1, levels);
    for (const [agent, own] of within) quota.set(agent, own);
  }
  return quota;
}

/** Each agent's share of `shardCount` shards, by capacity; the shares sum to shardCount. */
function quotas(shardCount: number, agents: readonly ShardingAgent[], held: ReadonlyMap<string, number>): Map<string, number> {
  const totalCapacity = agents.reduce((sum, agent) => sum + agent.capacity, 0);
  const rows: QuotaRow[] = agents.map((agent) => {
    const scaled = shardCount * agent.capacity;
    const floor = Math.floor(scaled / totalCapacity);
    return { agent, floor, remainder: scaled - floor * totalCapacity, held: held.get(agent.id) ?? 0 };
  });
  const leftover = shardCount - rows.reduce((sum, row) => sum + row.floor, 0);
  // Only which rows rank among the first `leftover` matters, not their order: a selection, which
  // costs O(agents) where a sort costs O(agents log agents), once per job on every placement.
  selectFirst(rows, leftover, byClaimOnRemainder);

  const quota = new Map<string, number>();
  rows.forEach((row, rank) => quota.set(row.agent.id, row.floor + (rank < leftover ? 1 : 0)));
  return quota;
}

/**
 * Reorders `rows` so that its first `k` are the `k` that `compare` puts first (quickselect). The
 * set is unique when `compare` is a strict total order, so the result never depends on pivots.
 */
function selectFirst<T>(rows: T[], k: number, compare: (a: T, b: T) => number): void {
  let low = 0;
  let high = rows.length - 1;
  while (low < high && k > low && k <= high) {
    const pivot = rows[(low + high) >> 1]!;
    let i = low;
    let j = high;
    while (i <= j) {
      while (compare(rows[i]!, pivot) < 0) i++;
      while (compare(rows[j]!, pivot) > 0) j--;
      if (i <= j) {
        [rows[i], rows[j]] = [rows[j]!, rows[i]!];
        i++;
        j--;
      }
    }
    // rows[low..j] come before the pivot or equal it, rows[i..high] after: the k-th boundary is in one side.
    if (k <= j) high = j;
    else if (k > i) low = i;
    else return;
  }
}

/**
 * Who gets one of the leftover shards first. Among equal fractional parts, an agent already
 * holding more than its floor keeps that extra shard (giving the extra to anyone else would move
 * it); comparing "holds more than its floor" before raw counts keeps the result a fixed point
 * when capacities differ, since a big agent always holds more than a small one.
 */
function byClaimOnRemainder(a: QuotaRow, b: QuotaRow): number {
  return (
    b.remainder - a.remainder ||
    Number(b.held > b.floor) - Number(a.held > a.floor) ||
    b.held - a.held ||
    a.agent.load - b.agent.load ||
    compareIds(a.agent.id, b.agent.id)
  );
}

interface Deficit {
  agent: ShardingAgent;
  /** Shards it is owed beyond what it was given. */
  deficit: number;
}

/** True when `a` gets the next orphan before `b`: most owed, then least loaded, then lowest id. */
function before(a: Deficit, b: Deficit): boolean {
  return (b.deficit - a.deficit || a.agent.load - b.agent.load || compareIds(a.agent.id, b.agent.id)) < 0;
}

/**
 * The agents by who gets the next orphaned shard, as a binary heap: placing a job's shards on
 * thousands of agents costs log(agents) per shard instead of a scan of every agent.
 */
class UnderservedQueue {
  private readonly heap: Deficit[];

  constructor(rows: Deficit[]) {
    this.heap = rows;
    for (let i = (rows.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  /** The agent owed the most; it is then owed one shard less. */
  take(): ShardingAgent {
    const top = this.heap[0]!;
    top.deficit--;
    this.down(0);
    return top.agent;
  }

  private down(index: number): void {
    const heap = this.heap;
    for (let i = index; ; ) {
      const left = 2 * i + 1;
      const right = left + 1;
      let first = i;
      if (left < heap.length && before(heap[left]!, heap[first]!)) first = left;
      if (right < heap.length && before(heap[right]!, heap[first]!)) first = right;
      if (first === i) return;
      [heap[i], heap[first]] = [heap[first]!, heap[i]!];
      i = first;
    }
  }
}

/** Orders ids by UTF-16 code units, so the result does not depend on the host's locale. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
