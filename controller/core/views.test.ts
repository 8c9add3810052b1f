import { describe, expect, it } from "vitest";
import { CoreHarness, testSpec } from "./testing/core-harness.js";

describe("job view", () => {
  it("lists the next five scheduled fires", () => {
    const h = new CoreHarness();
    h.apply(testSpec("job", { schedule: "0 */15 * * * *" }));
    const base = Date.UTC(2026, 0, 1, 0, 0, 0);
    expect(h.core.getJob("job").upcoming).toEqual([1, 2, 3, 4, 5].map((i) => base + i * 15 * 60_000));
  });
});
