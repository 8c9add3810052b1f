import { describe, expect, it } from "vitest";
import type { CoreInput } from "./events.js";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

describe("the core's one entry point", () => {
  it("takes a recorded list of inputs, agent and admin alike, and answers each command as its method does", () => {
    const h = new CoreHarness();
    const spec = testSpec("job", { schedule: undefined, shards: 2 });
    const hello = { agentId: "a", labels: {}, capacity: 1, handlers: ["work"], executors: [], maxConcurrent: 0, version: "", held: [], executions: [] };
    const inputs: CoreInput[] = [
      { kind: "hello", session: "s-a", hello },
      { kind: "apply-job", name: "job", spec, manifest: "name: job" },
      { kind: "heartbeat", session: "s-a", seq: 1 },
      { kind: "tick" },
    ];
    for (const input of inputs) h.core.step(input, h.now);
    // Placement runs once per batch of steps, when the effects are taken.
    expect(h.core.take().messages.filter((m) => m.session === "s-a").map((m) => m.command.kind)).toEqual(["welcome", "assignments", "heartbeat-ack", "assignments"]);
    const applied = h.core.step({ kind: "apply-job", name: "job", spec, manifest: "name: job" }, h.now);
    expect(applied.changed).toBe(false);
    const fired = h.core.step({ kind: "trigger-job", name: "job", shards: [1] }, h.now);
    expect(fired.executionIds).toEqual([`job/${fired.fireTime}/1/1`]);
    expect(h.core.listAssignments("job").map((a) => a.agent)).toEqual(["a", "a"]);
    // Dispatched already: the cancel goes to its agent, which confirms it.
    expect(h.core.step({ kind: "cancel-execution", id: fired.executionIds[0]!, reason: "not needed" }, h.now)).toBe("pending");
    expect(h.core.take().messages.map((m) => m.command)).toContainEqual({ kind: "cancel", executionIds: fired.executionIds, reason: "not needed" });
  });

  it("refuses a bad input as the method does, changing nothing", () => {
    const h = new CoreHarness();
    expect(() => h.core.step({ kind: "delete-job", name: "nope" }, h.now)).toThrow(/^job "nope" not found$/);
    expect(() => h.core.step({ kind: "heartbeat", session: "unknown", seq: 1 }, h.now)).toThrow(/the first message must be a hello/);
    expect(h.core.take().events).toEqual([]);
  });
});
