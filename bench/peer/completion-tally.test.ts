import { describe, expect, it } from "vitest";
import { CompletionTally } from "./completion-tally.js";

describe("CompletionTally", () => {
  it("is done once the workers' counts add up to the jobs, and not before", () => {
    const tally = new CompletionTally(300, 2, 100);
    tally.record(0, 100, 1_000);
    tally.record(1, 199, 1_010);
    expect(tally.completed).toBe(299);
    expect(tally.done).toBe(false);
    tally.record(1, 200, 1_020);
    expect(tally.done).toBe(true);
  });

  it("keeps each worker's highest cumulative count, whatever order its reports arrive in", () => {
    const tally = new CompletionTally(1_000, 1, 100);
    tally.record(0, 300, 3_000);
    tally.record(0, 200, 2_000);
    expect(tally.completed).toBe(300);
    expect(tally.lastCompletedAt).toBe(3_000);
  });

  it("takes the last completion as the latest any worker reported", () => {
    const tally = new CompletionTally(1_000, 3, 100);
    expect(tally.lastCompletedAt).toBeUndefined();
    tally.record(2, 100, 5_000);
    tally.record(0, 100, 4_000);
    tally.record(1, 0, 9_000);
    expect(tally.lastCompletedAt).toBe(5_000);
  });

  it("is near the end once what workers may hold unreported could finish the run", () => {
    // Two workers batching by 100 may each hold 99 completions they have not reported.
    const tally = new CompletionTally(1_000, 2, 100);
    tally.record(0, 400, 1);
    tally.record(1, 400, 1);
    expect(tally.nearEnd).toBe(false);
    tally.record(1, 402, 1);
    expect(tally.nearEnd).toBe(true);
  });

  it("is near the end from the start when the run is smaller than one batch per worker", () => {
    expect(new CompletionTally(150, 2, 100).nearEnd).toBe(true);
  });

  it("refuses a report from a worker it does not know", () => {
    const tally = new CompletionTally(10, 2, 5);
    expect(() => tally.record(2, 1, 1)).toThrow(/names worker 2; workers are 0-1/);
  });
});
