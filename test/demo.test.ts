import { afterEach, describe, expect, it } from "vitest";
import { CliProcess, requireBuiltCli, waitFor } from "./harness/processes.js";

/** One Connect server-stream call's messages as they come (JSON envelopes), until `enough` says so. */
async function watchOverHttp(url: string, request: unknown, enough: (message: Record<string, unknown>) => boolean): Promise<void> {
  const json = new TextEncoder().encode(JSON.stringify(request));
  const body = new Uint8Array(5 + json.length);
  new DataView(body.buffer).setUint32(1, json.length);
  body.set(json, 5);
  const response = await fetch(url, { method: "POST", headers: { "content-type": "application/connect+json" }, body });
  const reader = response.body!.getReader();
  let buffered = new Uint8Array(0);
  try {
    for (;;) {
      while (buffered.length >= 5) {
        const length = new DataView(buffered.buffer, buffered.byteOffset).getUint32(1);
        if (buffered.length < 5 + length) break;
        const message = JSON.parse(new TextDecoder().decode(buffered.subarray(5, 5 + length))) as Record<string, unknown>;
        if (buffered[0]! & 2) throw new Error(`the watch ended: ${JSON.stringify(message)}`);
        buffered = buffered.subarray(5 + length);
        if (enough(message)) return;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error("the watch ended early");
      const next = new Uint8Array(buffered.length + value.length);
      next.set(buffered);
      next.set(value, buffered.length);
      buffered = next;
    }
  } finally {
    await reader.cancel();
  }
}

describe("npm run demo, through the binary", () => {
  let demo: CliProcess | undefined;
  afterEach(async () => {
    await demo?.stop();
    demo = undefined;
  });

  it("prints the web console's URL, where the demo's cluster is live, and ends with its summary", async () => {
    requireBuiltCli();
    demo = new CliProcess("demo", ["demo", "--duration", "20"]);
    const url = await waitFor("the console's URL", () => /^Web console: (http:\/\/127\.0\.0\.1:\d+\/) /m.exec(demo!.output)?.[1], 60_000);

    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);

    // What the console reads: the demo's six shards, each owned by one of its agents, in its clusters.
    const owners = new Map<string, string>();
    const clusters = new Set<string>();
    await watchOverHttp(`${url}shardline.v1.AdminService/Watch`, { topics: ["WATCH_TOPIC_SHARDS", "WATCH_TOPIC_AGENTS"] }, (message) => {
      for (const shard of (message.shards ?? []) as { job: string; shard: number; agent: string }[]) owners.set(`${shard.job}/${shard.shard}`, shard.agent);
      for (const agent of (message.agents ?? []) as { labels: Record<string, string> }[]) if (agent.labels.cluster !== undefined) clusters.add(agent.labels.cluster);
      return owners.size === 6 && [...owners.values()].every((agent) => /^agent-[abc]$/.test(agent)) && clusters.size === 2;
    });
    expect([...owners.keys()].sort()).toEqual(["sweep/0", "sweep/1", "sweep/2", "sweep/3", "sweep/4", "sweep/5"]);

    const { code } = await demo.exited;
    expect(code).toBe(0);
    expect(demo.output).toMatch(/Demo finished: \d+ fires, \d+ executions succeeded/);
  }, 120_000);
});
