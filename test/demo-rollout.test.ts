import { describe, expect, it } from "vitest";
import { requireBuiltCli, shardline } from "./harness/processes.js";

describe("shardline demo --rollout, through the binary", () => {
  it("rolls a broken revision back within its canary wave, then takes a good one to every cluster", async () => {
    requireBuiltCli();
    // It stops by itself once the good revision has reached every cluster; the duration only bounds it.
    const { code, stdout, stderr } = await shardline(["demo", "--rollout", "--duration", "120"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(/rollout of revision 2 aborted: analysis at step 2: \d+ runs of revision 2 failed, more than maxFailures 1; every shard runs revision 1 from its next fire/);
    expect(stdout).toContain("rollup: revision 3 runs on every shard");
    const summary = stdout.slice(stdout.lastIndexOf("Rollout demo finished."));
    // Revision 2 never left the canary cluster, and failed every run it had.
    const broken = /^revision 2 ran on (.*): (\d+) runs, (\d+) failed$/m.exec(summary);
    expect(broken?.[1]).toBe("canary");
    expect(broken?.[2]).toBe(broken?.[3]);
    expect(summary).toMatch(/^revision 3 ran on canary, east, west: \d+ runs, 0 failed$/m);
  }, 180_000);
});
