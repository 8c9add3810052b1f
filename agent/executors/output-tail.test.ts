import { describe, expect, it } from "vitest";
import { OutputTail, tailUtf8, truncateUtf8, withTail } from "./output-tail.js";

describe("OutputTail", () => {
  it("keeps the last bytes of a stream, however it was chunked", () => {
    const tail = new OutputTail(10);
    for (const chunk of ["0123", "4567", "89ab", "cdef"]) tail.push(Buffer.from(chunk));
    expect(tail.text()).toBe("6789abcdef");
    tail.push("g");
    expect(tail.text()).toBe("789abcdefg");
    expect(tail.text(3)).toBe("efg");
  });

  it("never starts inside a multi-byte character", () => {
    const tail = new OutputTail(5);
    tail.push(Buffer.from("日本語"));
    expect(tail.text()).toBe("語");
  });

  it("holds no more than the limit plus one chunk while a stream flows", () => {
    const tail = new OutputTail(4096);
    const chunk = Buffer.alloc(1024, "a");
    for (let i = 0; i < 10_000; i++) tail.push(chunk);
    expect(tail.text()).toHaveLength(4096);
  });
});

describe("withTail", () => {
  it("cuts the start of the tail, not its end, and drops trailing line breaks", () => {
    const text = withTail("exit code 1", `${"a".repeat(100)}last line\n`, 30);
    expect(text).toBe("exit code 1: aaaaaaaalast line");
    expect(withTail("exit code 1", "\n", 30)).toBe("exit code 1");
  });
});

describe("truncateUtf8 and tailUtf8", () => {
  it("never cut a multi-byte character", () => {
    expect(truncateUtf8("héllo", 2)).toBe("h");
    expect(truncateUtf8("😀😀", 5)).toBe("😀");
    expect(Buffer.byteLength(truncateUtf8("日本語".repeat(2_000), 4096))).toBeLessThanOrEqual(4096);
    expect(tailUtf8("héllo", 4)).toBe("llo");
    expect(tailUtf8("😀😀", 5)).toBe("😀");
  });

  it("keep short text whole", () => {
    expect(truncateUtf8("ok", 4096)).toBe("ok");
    expect(tailUtf8("ok", 4096)).toBe("ok");
  });
});
