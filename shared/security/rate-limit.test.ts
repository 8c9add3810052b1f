import { describe, expect, it } from "vitest";
import { RateLimiter } from "./rate-limit.js";

describe("RateLimiter", () => {
  it("lets a client make its burst at once, then one call per 1/perSecond, each client on its own", () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 3, now: () => now });
    expect([limiter.take("a"), limiter.take("a"), limiter.take("a")]).toEqual([0, 0, 0]);
    expect(limiter.take("a")).toBe(100);
    expect(limiter.take("b")).toBe(0);
    now = 100;
    expect(limiter.take("a")).toBe(0);
    expect(limiter.take("a")).toBe(100);
  });

  it("refills no more than the burst however long a client was idle", () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 2, now: () => now });
    limiter.take("a");
    now = 60_000;
    expect([limiter.take("a"), limiter.take("a"), limiter.take("a") > 0]).toEqual([0, 0, true]);
  });

  it("tracks at most maxClients, forgetting the idlest first", () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 1, burst: 1, maxClients: 2, now: () => now });
    limiter.take("a");
    now = 1;
    limiter.take("b");
    now = 2;
    limiter.take("a");
    limiter.take("c");
    expect(limiter.size).toBe(2);
    // b, the idlest, was forgotten: it starts again with a full bucket; a was not.
    expect(limiter.take("a")).toBeGreaterThan(0);
    expect(limiter.take("b")).toBe(0);
  });
});
