import { describe, expect, it } from "vitest";
import { Backoff } from "./backoff.js";

describe("Backoff", () => {
  it("doubles the ceiling each attempt up to maxMs", () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 1_000, random: () => 0.999999 });
    expect([1, 2, 3, 4, 5, 6].map(() => backoff.next())).toEqual([99, 199, 399, 799, 999, 999]);
  });

  it("draws each wait uniformly below the ceiling (full jitter)", () => {
    const draws = [0, 0.5, 0.25];
    const backoff = new Backoff({ initialMs: 100, maxMs: 5_000, random: () => draws.shift() ?? 0 });
    expect([backoff.next(), backoff.next(), backoff.next()]).toEqual([0, 100, 100]);
  });

  it("starts over after reset", () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 5_000, random: () => 0.5 });
    backoff.next();
    backoff.next();
    expect(backoff.ceilingMs).toBe(400);
    backoff.reset();
    expect(backoff.attempt).toBe(0);
    expect(backoff.next()).toBe(50);
  });

  it("never overflows after very many attempts", () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 5_000, random: () => 0.5 });
    for (let i = 0; i < 5_000; i++) backoff.next();
    expect(backoff.next()).toBe(2_500);
  });
});
