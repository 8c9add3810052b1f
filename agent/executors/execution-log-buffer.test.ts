import { describe, expect, it } from "vitest";
import { ExecutionLogBuffer } from "./execution-log-buffer.js";

const texts = (buffer: ExecutionLogBuffer, final = false) => {
  const log = buffer.takeUnsent(final);
  return log && { first: Number(log.firstLine), keptFrom: Number(log.keptFrom), lines: log.lines.map((l) => `${l.stream}:${l.text}`) };
};

describe("an execution's log on the agent", () => {
  it("splits writes into lines, holding a partial line until its break or the run's end", () => {
    const buffer = new ExecutionLogBuffer({ maxBytes: 1000, maxLines: 100 }, () => 7);
    buffer.write("stdout", "one\ntw");
    buffer.write("stderr", "oops\r\n");
    buffer.write("stdout", "o\nthr");
    expect(texts(buffer)).toEqual({ first: 0, keptFrom: 0, lines: ["stdout:one", "stderr:oops", "stdout:two"] });
    expect(texts(buffer)).toBeUndefined();
    expect(texts(buffer, true)).toEqual({ first: 3, keptFrom: 0, lines: ["stdout:thr"] });
  });

  it("drops the oldest lines past either bound and says from which line it keeps", () => {
    const buffer = new ExecutionLogBuffer({ maxBytes: 1000, maxLines: 3 });
    for (let i = 0; i < 5; i++) buffer.line("log", `line ${i}`);
    expect(texts(buffer)).toEqual({ first: 2, keptFrom: 2, lines: ["log:line 2", "log:line 3", "log:line 4"] });
    const bytes = new ExecutionLogBuffer({ maxBytes: 10, maxLines: 100 });
    bytes.line("log", "aaaa");
    bytes.line("log", "bbbb");
    bytes.line("log", "cccc");
    expect(texts(bytes)).toEqual({ first: 1, keptFrom: 1, lines: ["log:bbbb", "log:cccc"] });
  });

  it("ships only what is new, and a drop of lines shipped already", () => {
    const buffer = new ExecutionLogBuffer({ maxBytes: 1000, maxLines: 2 });
    buffer.line("log", "a");
    expect(texts(buffer)).toEqual({ first: 0, keptFrom: 0, lines: ["log:a"] });
    buffer.line("log", "b");
    buffer.line("log", "c");
    expect(texts(buffer)).toEqual({ first: 1, keptFrom: 1, lines: ["log:b", "log:c"] });
  });
});
