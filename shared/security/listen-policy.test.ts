import { describe, expect, it } from "vitest";
import { ShardlineError } from "../errors.js";
import { checkPlaintextListen, isLoopbackHost } from "./listen-policy.js";

describe("listen policy", () => {
  it.each([
    ["127.0.0.1", true],
    ["127.5.0.9", true],
    ["localhost", true],
    ["[::1]", true],
    ["::ffff:127.0.0.1", true],
    ["0.0.0.0", false],
    ["::", false],
    ["10.0.0.4", false],
    ["shardline-controller", false],
  ])("takes %s for loopback: %s", (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });

  it("refuses plaintext on a reachable address naming the flag, unless TLS is on or --insecure is given", () => {
    expect(() => checkPlaintextListen("--listen", "0.0.0.0:7070", false, false)).toThrow(ShardlineError);
    expect(() => checkPlaintextListen("--listen", "0.0.0.0:7070", false, false)).toThrow(/^--listen: "0.0.0.0:7070" is not allowed; expected a loopback address/);
    expect(() => checkPlaintextListen("--http", "[::]:7071", false, false)).toThrow(/^--http:/);
    expect(() => checkPlaintextListen("--listen", "0.0.0.0:7070", true, false)).not.toThrow();
    expect(() => checkPlaintextListen("--listen", "0.0.0.0:7070", false, true)).not.toThrow();
    expect(() => checkPlaintextListen("--listen", "127.0.0.1:7070", false, false)).not.toThrow();
  });
});
