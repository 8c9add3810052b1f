import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ConnectFailures, plainReason } from "./connect-failures.js";

/** grpc-js 1.14's texts for each failure, as seen on loopback. */
const REFUSED = { code: status.UNAVAILABLE, details: "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:7070. Resolution note: " };
const NO_NAME = { code: status.UNAVAILABLE, details: "Name resolution failed for target dns:no-such-host.invalid:7070" };
const TLS = {
  code: status.UNAVAILABLE,
  details: "No connection established. Last error: Error: 805C513B3F7F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n. Resolution note: ",
};

function clock() {
  let now = 1_000;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

describe("plainReason", () => {
  it("names refused connections, unresolved names, TLS failures and deadlines in plain words", () => {
    expect(plainReason(REFUSED)).toBe("connection refused");
    expect(plainReason(NO_NAME)).toBe("name not resolved");
    expect(plainReason(TLS)).toBe("TLS failure");
    expect(plainReason({ code: status.UNAVAILABLE, details: "No connection established. Last error: Error: self-signed certificate in certificate chain" })).toBe("TLS failure");
    expect(plainReason({ code: status.DEADLINE_EXCEEDED, details: "Deadline exceeded after 5.001s" })).toBe("deadline exceeded");
    expect(plainReason({ code: status.UNAVAILABLE, details: "no Welcome within 5000 ms" })).toBe("deadline exceeded (no Welcome within 5000 ms)");
    expect(plainReason({ code: status.UNAVAILABLE, details: "read ECONNRESET" })).toBe("connection reset");
  });

  it("keeps a controller's own answer, with its status", () => {
    expect(plainReason({ code: status.UNAVAILABLE, details: "no controller leads yet; retry shortly" })).toBe("UNAVAILABLE: no controller leads yet; retry shortly");
    expect(plainReason({ code: status.UNAUTHENTICATED, details: "no token" })).toBe("not authenticated: no token");
  });
});

describe("ConnectFailures", () => {
  it("speaks on the first failure, then only when the reason changes or a minute has passed, with the count", () => {
    const time = clock();
    const failures = new ConnectFailures({ clock: time, retryCeilingMs: 5_000 });
    const first = failures.failed("127.0.0.1:7070", REFUSED);
    expect(first).toMatchObject({
      level: "warn",
      message: "cannot reach the controller at 127.0.0.1:7070: connection refused; trying again with a backoff of up to 5 s",
      fields: { controller: "127.0.0.1:7070", reason: "connection refused", code: "UNAVAILABLE", details: REFUSED.details, attempts: 1 },
    });
    time.advance(3_000);
    expect(failures.failed("127.0.0.1:7070", REFUSED)).toBeUndefined();
    time.advance(3_000);
    expect(failures.failed("127.0.0.1:7070", NO_NAME)?.message).toBe(
      "cannot reach the controller at 127.0.0.1:7070: name not resolved; trying again with a backoff of up to 5 s",
    );
    time.advance(59_000);
    expect(failures.failed("127.0.0.1:7070", NO_NAME)).toBeUndefined();
    time.advance(1_000);
    expect(failures.failed("127.0.0.1:7070", NO_NAME)?.message).toBe(
      "cannot reach the controller at 127.0.0.1:7070: name not resolved, still: 5 failed attempts over 66 s; trying again with a backoff of up to 5 s",
    );
    expect(failures.reason).toBe(
      "cannot reach the controller at 127.0.0.1:7070: name not resolved (5 failed attempts so far); trying again with a backoff of up to 5 s",
    );
  });

  it("keeps each replica's last reason apart, so replicas failing in turn do not speak on every attempt", () => {
    const failures = new ConnectFailures({ clock: clock(), retryCeilingMs: 5_000 });
    expect(failures.failed("10.0.0.1:7070", REFUSED)).toBeDefined();
    expect(failures.failed("10.0.0.2:7070", TLS)).toBeDefined();
    expect(failures.failed("10.0.0.1:7070", REFUSED)).toBeUndefined();
    expect(failures.failed("10.0.0.2:7070", TLS)).toBeUndefined();
  });

  it("says once that a controller answered after failures, and forgets them", () => {
    const time = clock();
    const failures = new ConnectFailures({ clock: time, retryCeilingMs: 5_000 });
    expect(failures.succeeded("127.0.0.1:7070")).toBeUndefined();
    failures.failed("127.0.0.1:7070", REFUSED);
    time.advance(1_500);
    failures.failed("127.0.0.1:7070", REFUSED);
    expect(failures.succeeded("127.0.0.1:7070")).toMatchObject({
      level: "info",
      message: "reached the controller at 127.0.0.1:7070 after 2 failed attempts over 1.5 s",
      fields: { attempts: 2 },
    });
    expect(failures.reason).toBeUndefined();
    expect(failures.succeeded("127.0.0.1:7070")).toBeUndefined();
    expect(failures.failed("127.0.0.1:7070", REFUSED)?.fields).toMatchObject({ attempts: 1 });
  });
});
