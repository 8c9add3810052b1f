import { describe, expect, it } from "vitest";
import { traceContextJson } from "./execution-columns.js";

describe("traceContextJson", () => {
  it("writes what JSON.stringify writes, for the usual contexts and for odd ones", () => {
    const inherited = Object.create({ inherited: "not own" }) as Record<string, string>;
    inherited.traceparent = "00-a-b-01";
    const contexts: unknown[] = [
      {},
      { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
      { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate: "vendor=opaque,other=1" },
      { "quote\"d": "back\\slash", tab: "a\tb", nul: "\u0000", del: "\u007f" },
      { ascii: "plain", latin: "ä ß", cjk: "名前=値", emoji: "🚀", lone: "\ud800x", trail: "x\udc00" },
      { "2": "two", "1": "one", b: "", a: "" },
      { number: 1 },
      { missing: undefined, kept: "yes" },
      { toJSON: () => "replaced" },
      inherited,
      null,
      ["a", "b"],
    ];
    for (const context of contexts) expect(traceContextJson(context as Record<string, string>)).toBe(JSON.stringify(context));
  });
});
