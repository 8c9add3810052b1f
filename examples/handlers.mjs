// An agent's handler module: the default export maps handler names to functions.
// Run: shardline agent --id worker-1 --handlers examples/handlers.mjs
export default {
  async "billing-rollup"(ctx) {
    ctx.log.info({ region: ctx.shardParameter, fire: ctx.fireTime.toISOString() }, "rolling up");
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, 200);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(ctx.signal.reason ?? new Error("aborted"));
      });
    });
    return { region: ctx.shardParameter, rows: 42 };
  },
};
