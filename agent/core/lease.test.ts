import { describe, expect, it } from "vitest";
import { Lease } from "./lease.js";

describe("Lease", () => {
  it("is invalid before any ack", () => {
    const lease = new Lease();
    expect(lease.valid(0)).toBe(false);
    expect(lease.expiresAt).toBe(Number.NEGATIVE_INFINITY);
  });

  it("runs from the send time of the acked heartbeat, not from the ack's arrival", () => {
    const lease = new Lease();
    lease.sent(1n, 1_000);
    // The ack arrives 150 ms later; the lease still counts from 1,000.
    expect(lease.ack(1n, 300)).toBe(true);
    expect(lease.expiresAt).toBe(1_300);
    expect(lease.valid(1_299)).toBe(true);
    expect(lease.valid(1_300)).toBe(false);
  });

  it("ignores an ack of a heartbeat never sent", () => {
    const lease = new Lease();
    expect(lease.ack(7n, 300)).toBe(false);
    expect(lease.valid(0)).toBe(false);
  });

  it("forgets older heartbeats once a later one is acked", () => {
    const lease = new Lease();
    lease.sent(1n, 0);
    lease.sent(2n, 50);
    lease.sent(3n, 100);
    expect(lease.ack(2n, 300)).toBe(true);
    expect(lease.pending).toBe(1);
    expect(lease.ack(1n, 300)).toBe(false);
    expect(lease.expiresAt).toBe(350);
  });

  it("never moves the expiry backwards", () => {
    const lease = new Lease();
    lease.sent(2n, 500);
    lease.sent(1n, 100);
    lease.ack(2n, 300);
    lease.ack(1n, 300);
    expect(lease.expiresAt).toBe(800);
  });

  it("keeps a bounded number of unanswered heartbeats", () => {
    const lease = new Lease(3);
    for (let seq = 1n; seq <= 10n; seq++) lease.sent(seq, Number(seq) * 10);
    expect(lease.pending).toBe(3);
    expect(lease.ack(7n, 100)).toBe(false);
    expect(lease.ack(8n, 100)).toBe(true);
    expect(lease.expiresAt).toBe(180);
  });

  it("keeps the expiry when a stream's pending heartbeats are forgotten", () => {
    const lease = new Lease();
    lease.sent(1n, 0);
    lease.ack(1n, 300);
    lease.sent(2n, 50);
    lease.forgetPending();
    expect(lease.pending).toBe(0);
    expect(lease.valid(299)).toBe(true);
    expect(lease.ack(2n, 300)).toBe(false);
  });
});
