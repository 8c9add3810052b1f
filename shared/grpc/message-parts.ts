/**
 * How much one batched stream message (a Dispatch, an ExecutionUpdates) carries at most, by
 * estimate: a quarter of the 4 MiB every gRPC peer accepts by default, so that an estimate that
 * is off, or a peer with a smaller limit, still has room.
 */
export const MESSAGE_BUDGET_BYTES = 1024 * 1024;

/**
 * Splits a batch into consecutive parts whose estimated sizes add up to at most `budget` each;
 * an item larger than the budget alone gets a part of its own. Order is kept.
 */
export function partsWithin<T>(items: readonly T[], sizeOf: (item: T) => number, budget = MESSAGE_BUDGET_BYTES): T[][] {
  const parts: T[][] = [];
  let part: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = sizeOf(item);
    if (part.length > 0 && bytes + size > budget) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(item);
    bytes += size;
  }
  if (part.length > 0) parts.push(part);
  return parts;
}
