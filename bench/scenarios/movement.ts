import { strategyFor } from "../../controller/core/sharding/index.js";
import type { StrategyName } from "../../shared/manifest/job-spec.js";

export interface MovementResult {
  /** Shards whose owner changed when one agent left. */
  leave: number;
  /** Shards whose owner changed when one agent joined. */
  join: number;
}

/**
 * Shard movement of a strategy: place `shards` on `agents` agents, then count the shards whose
 * owner changes when the last agent leaves (its shards orphaned, as the controller sees them)
 * and, from the first layout, when one more agent joins.
 */
export function shardMovement(strategy: StrategyName, shards: number, agents: number): MovementResult {
  const place = strategyFor(strategy);
  const ids = Array.from({ length: agents }, (_, i) => `agent-${i}`);
  const layout = (alive: string[], previous: Map<number, string>): Map<number, string> =>
    place({ job: "movement", shardCount: shards, agents: alive.map((id) => ({ id, capacity: 1, load: 0 })), previous });
  const first = layout(ids, new Map());
  const leaver = ids[ids.length - 1]!;
  const survivors = new Map([...first].filter(([, owner]) => owner !== leaver));
  const afterLeave = layout(ids.slice(0, -1), survivors);
  const afterJoin = layout([...ids, `agent-${agents}`], first);
  return { leave: changed(first, afterLeave), join: changed(first, afterJoin) };
}

function changed(before: Map<number, string>, after: Map<number, string>): number {
  let moved = 0;
  for (const [shard, owner] of before) if (after.get(shard) !== owner) moved++;
  return moved;
}
