// The handlers of the orders-agent image: plain ES modules, no build step. The Dockerfile copies
// this file to /app/handlers/orders.mjs, and the agent loads it with
// --handlers=/app/handlers/orders.mjs (agent-patch.yaml). Outside Kubernetes:
//   ORDERS_API_URL=http://127.0.0.1:8080 shardline agent --handlers examples/kubernetes-handlers/orders.mjs
/* global fetch -- Node's own since Node 18; the agent runs on Node 24 */
import { URL, URLSearchParams } from "node:url";

/** How far back a rollup looks: spec.parameter `window=15m` (or a trigger's --parameter); `m`, `h` or `d`. */
function windowMs(parameter) {
  if (parameter === "") return 15 * 60_000;
  const match = /^window=(\d{1,4})([mhd])$/.exec(parameter);
  if (match === null) throw new Error(`parameter "${parameter}" is not window=N followed by m, h or d (e.g. window=15m)`);
  return Number(match[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2]];
}

export default {
  /**
   * Sums one region's orders over the window that ends at the fire instant. Each shard is a
   * region (spec.shardParameters), so the shards of one fire share the work and a fire that runs
   * again (a retry, a failover) covers the same window.
   */
  async "orders-rollup"(ctx) {
    const region = ctx.shardParameter || `shard-${ctx.shard}`;
    const to = ctx.fireTime;
    const from = new Date(to.getTime() - windowMs(ctx.parameter));
    ctx.log.info({ region, from: from.toISOString(), to: to.toISOString(), shard: ctx.shard, of: ctx.shardCount }, "rolling up orders");
    const url = new URL("/orders", process.env.ORDERS_API_URL);
    url.search = new URLSearchParams({ region, from: from.toISOString(), to: to.toISOString() }).toString();
    // ctx.signal aborts the request on a timeout, a cancel, or when a drain's grace runs out.
    const response = await fetch(url, { signal: ctx.signal });
    if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
    const orders = await response.json();
    const total = orders.reduce((sum, order) => sum + order.amount, 0);
    // Where the rollup is written, make the write conditional on ctx.fencingToken, and call
    // ctx.assertLease() right before it (README, "Fencing your side effects").
    ctx.assertLease();
    return { region, from: from.toISOString(), to: to.toISOString(), orders: orders.length, total };
  },
};

export const listeners = {
  beforeExecution() {
    // Fails the execution with this message, rather than every handler with a confusing one.
    if (!process.env.ORDERS_API_URL) throw new Error("ORDERS_API_URL is not set: the agent container's env names the orders service");
  },
};
