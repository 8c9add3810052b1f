import { Metadata, status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ShardlineError } from "../errors.js";
import { fromGrpcError, LEADER_TRAILER, messageTooLarge, sizeText, toGrpcStatus } from "./status.js";

describe("the leader trailer", () => {
  it("carries a follower's answer naming the leader, and brings it back as details.leader", () => {
    const sent = toGrpcStatus(new ShardlineError("unavailable", "this controller is a follower; the leader is at 10.0.0.2:7070", { leader: "10.0.0.2:7070" }));
    expect(sent.code).toBe(status.UNAVAILABLE);
    expect(sent.metadata?.get(LEADER_TRAILER)).toEqual(["10.0.0.2:7070"]);
    const received = fromGrpcError(sent);
    expect(received.code).toBe("unavailable");
    expect(received.details.leader).toBe("10.0.0.2:7070");
  });

  it("sends no trailer for other errors, and reads none that is empty", () => {
    expect(toGrpcStatus(new ShardlineError("not-found", "job x not found")).metadata).toBeUndefined();
    const metadata = new Metadata();
    metadata.set(LEADER_TRAILER, "");
    expect(fromGrpcError({ code: status.UNAVAILABLE, details: "down", metadata }).details.leader).toBeUndefined();
  });
});

describe("a message refused for its size", () => {
  it("is invalid-argument naming the size and the limit, and that no flag raises it", () => {
    // grpc-js 1.14 writes "vs", other versions "vs.": both are read.
    for (const details of ["Received message larger than max (10485820 vs 4194304)", "Received message larger than max (10485820 vs. 4194304)"]) {
      const received = fromGrpcError({ code: status.RESOURCE_EXHAUSTED, details });
      expect(received.code).toBe("invalid-argument");
      expect(received.message).toBe(
        "a message of 10485820 bytes is over the 4194304 bytes (4 MiB) its receiver accepts in one message; " +
          "the limit is fixed (no flag raises it): send or ask for less in one call",
      );
      expect(received.details).toEqual({ value: "10485820 bytes", allowed: "at most 4194304 bytes" });
      expect((received.cause as { code: status }).code).toBe(status.RESOURCE_EXHAUSTED);
    }
    expect(messageTooLarge("Received message larger than max (5 vs. 4)")).toEqual({ bytes: 5, limit: 4 });
  });

  it("leaves every other RESOURCE_EXHAUSTED as it was: unavailable, with the server's text", () => {
    const details = "ListJobs: too many calls from alice; retry in 5 ms (the controller's --admin-rate-limit)";
    expect(fromGrpcError({ code: status.RESOURCE_EXHAUSTED, details })).toMatchObject({ code: "unavailable", message: details });
    // The text alone is not enough: only RESOURCE_EXHAUSTED is a size refusal.
    expect(fromGrpcError({ code: status.INTERNAL, details: "Received message larger than max (5 vs 4)" }).code).toBe("internal");
    expect(messageTooLarge("Bandwidth exhausted or memory limit exceeded")).toBeUndefined();
  });

  it("states a limit in bytes, and in MiB or KiB when it is a whole number of them", () => {
    expect(sizeText(128 * 1024 * 1024)).toBe("134217728 bytes (128 MiB)");
    expect(sizeText(256 * 1024)).toBe("262144 bytes (256 KiB)");
    expect(sizeText(1000)).toBe("1000 bytes");
  });
});
