/**
 * The demo's handler module: each shard of `sweep` "processes its region" for a few hundred
 * milliseconds and returns how many records it saw. Loaded by the demo's agent processes.
 */
const regions = ["eu-north", "eu-west", "us-east", "us-west", "ap-south", "ap-east"];

export default {
  /**
   * The rollout demo's job (demo --rollout): rolls up its region's billing in a few hundred
   * milliseconds; a revision whose parameter says "broken" fails on every shard it reaches.
   */
  async rollup(ctx: { shard: number; parameter: string; revision: number; signal: AbortSignal }): Promise<{ region: string; revision: number }> {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, 100 + Math.floor(Math.random() * 200));
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new Error("aborted"));
      });
    });
    if (ctx.parameter.includes("broken")) throw new Error(`revision ${ctx.revision} (${ctx.parameter}): the new rollup divides by zero on ${regions[ctx.shard % regions.length]}`);
    return { region: regions[ctx.shard % regions.length]!, revision: ctx.revision };
  },
  async sweep(ctx: { shard: number; signal: AbortSignal }): Promise<{ region: string; records: number }> {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, 150 + Math.floor(Math.random() * 200));
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new Error("aborted"));
      });
    });
    return { region: regions[ctx.shard % regions.length]!, records: 1000 + Math.floor(Math.random() * 9000) };
  },
};
