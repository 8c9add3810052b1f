import { describe, expect, it } from "vitest";
import { CoreHarness, testSpec, twoAgents, ownerOf } from "./testing/core-harness.js";

describe("assignment", () => {
  it("spreads a job's shards evenly over the agents", () => {
    const { a, b } = twoAgents();
    expect(a.shardsOf("job").length).toBe(2);
    expect(b.shardsOf("job").length).toBe(2);
    expect([...a.shardsOf("job"), ...b.shardsOf("job")].sort()).toEqual([0, 1, 2, 3]);
  });

  it("gives shards only to agents that declared the job's handler", () => {
    const h = new CoreHarness();
    const a = h.connect("a", { handlers: ["other"] });
    const b = h.connect("b");
    h.apply(testSpec("job", { schedule: undefined }));
    expect(a.shardsOf("job")).toEqual([]);
    expect(b.shardsOf("job")).toEqual([0, 1, 2, 3]);
  });

  it("gives a script job only to agents that run scripts, and sends the command with each execution", () => {
    const h = new CoreHarness();
    const plain = h.connect("plain");
    const runner = h.connect("runner", { handlers: [], executors: ["script"] });
    const script = { command: "report", args: ["--daily"], env: { MODE: "full" }, killGraceSeconds: 5 };
    h.apply(testSpec("job", { schedule: undefined, shards: 2, handler: "", script }));
    expect(plain.shardsOf("job")).toEqual([]);
    expect(runner.shardsOf("job")).toEqual([0, 1]);
    h.core.triggerJob("job", [0], undefined, h.now);
    h.flush();
    expect(runner.dispatched[0]!.script).toEqual({ command: "report", args: ["--daily"], env: { MODE: "full" }, killGraceMs: 5000 });
  });

  it("moves at most its fair share to an agent that joins", () => {
    const { h, a, b } = twoAgents(testSpec("job", { schedule: undefined, shards: 6 }));
    const c = h.connect("c");
    expect(c.shardsOf("job").length).toBe(2);
    expect(a.shardsOf("job").length + b.shardsOf("job").length).toBe(4);
  });
});

describe("fencing by term and generation", () => {
  it("stamps each dispatched execution with its assignment, and a move raises the generation", () => {
    const { h, a, b } = twoAgents();
    const before = new Map(h.core.listAssignments("job").map((x) => [x.shard, x.generation]));
    h.core.triggerJob("job", [], undefined, h.now);
    h.flush();
    for (const context of [...a.dispatched, ...b.dispatched]) {
      expect(context.assignment?.generation).toBe(before.get(context.shard));
      expect(context.assignment?.term).toBe(h.core.term);
    }
    h.core.drainAgent("a", h.now);
    h.flush();
    const moved = a.shardsOf("job");
    h.releaseRevoked("a");
    for (const shard of moved) {
      const after = h.core.listAssignments("job").find((x) => x.shard === shard)!;
      expect(after.agent).toBe("b");
      expect(after.generation).toBeGreaterThan(before.get(shard)!);
    }
  });

  it("ignores a release that names an older generation", () => {
    const { h, a } = twoAgents();
    const [ref] = [...a.held.values()];
    h.core.release(a.session, [{ ...ref!, generation: ref!.generation - 1 }], h.now);
    h.flush();
    expect(ownerOf(h, "job", ref!.shard)).toBe("a");
  });

  it("runs a restarted controller under a higher term", () => {
    const h = new CoreHarness();
    const first = h.core.term;
    h.start();
    expect(h.core.term).toBe(first + 1);
  });
});
