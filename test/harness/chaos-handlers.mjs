// Handlers for the chaos and partition tests: like test/fixtures/recording-handlers.mjs, each run
// appends its start to the file named by SHARDLINE_TEST_RECORD, and also how it stopped: "end"
// when the work finished, "abort" when the agent aborted it (fence, revoke, shutdown). A run
// with a start and neither belongs to a process that died, which the test knows the time of.
// Appends are synchronous, so a record is on disk before the handler goes on.
import { appendFileSync } from "node:fs";

const record = (entry) => appendFileSync(process.env.SHARDLINE_TEST_RECORD, `${JSON.stringify(entry)}\n`);
const workMs = Number(process.env.SHARDLINE_TEST_WORK_MS ?? "200");

export default {
  async work(ctx) {
    const key = { job: ctx.job, shard: ctx.shard, fireTime: ctx.fireTime.getTime(), attempt: ctx.attempt, agent: ctx.agentId, pid: process.pid };
    record({ event: "start", ...key, at: Date.now() });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ctx.signal.removeEventListener("abort", onAbort);
        resolve();
      }, workMs);
      const onAbort = () => {
        clearTimeout(timer);
        record({ event: "abort", ...key, at: Date.now() });
        reject(new Error("aborted"));
      };
      if (ctx.signal.aborted) onAbort();
      else ctx.signal.addEventListener("abort", onAbort, { once: true });
    });
    record({ event: "end", ...key, at: Date.now() });
    return { shard: ctx.shard };
  },
};
