import { describe, expect, it } from "vitest";
import { ReconnectPlan } from "./reconnect.js";

function plan(addresses = ["a:1", "b:1"]): ReconnectPlan {
  return new ReconnectPlan({ addresses, initialMs: 100, maxMs: 1_000, random: () => 0.5 });
}

describe("ReconnectPlan", () => {
  it("connects at once on start, then after a backoff that doubles with each attempt and a Welcome resets", () => {
    const p = plan(["only:1"]);
    p.start(0);
    expect(p.connectAt).toBe(0);
    p.opened();
    expect(p.connectAt).toBeUndefined();
    p.ended(false, 0);
    expect(p.connectAt).toBe(50);
    p.opened();
    p.ended(false, 50);
    expect(p.connectAt).toBe(150);
    p.opened();
    p.welcomed();
    p.ended(true, 1_000);
    expect(p.connectAt).toBe(1_050);
    expect(p.address).toBe("only:1");
  });

  it("tries the next replica after a stream with no Welcome, and keeps the address after a welcomed stream the controller ended", () => {
    const p = plan();
    p.ended(false, 0);
    expect(p.address).toBe("b:1");
    p.ended(false, 0);
    expect(p.address).toBe("a:1");
    p.ended(true, 0);
    expect(p.address).toBe("a:1");
  });

  it("moves on from a welcomed stream this side gave up on because the controller stopped answering", () => {
    const p = plan();
    p.unresponsive();
    p.ended(true, 0);
    expect(p.address).toBe("b:1");
  });

  it("follows a Redirect to the leader without rotating, then goes back to the replicas when the leader fails", () => {
    const p = plan();
    p.ended(false, 0);
    p.redirect("leader:1");
    expect(p.redirecting).toBe(true);
    p.ended(false, 100);
    expect(p.redirecting).toBe(false);
    expect(p.address).toBe("leader:1");
    expect(p.connectAt).toBe(150);
    p.ended(false, 200);
    expect(p.address).toBe("a:1");
  });
});
