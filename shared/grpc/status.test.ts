import { Metadata, status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ShardlineError } from "../errors.js";
import { fromGrpcError, LEADER_TRAILER, toGrpcStatus } from "./status.js";

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
