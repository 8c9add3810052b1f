import { describe, expect, it } from "vitest";
import { EXECUTION_LOG_LIMITS, mergeExecutionLog, readExecutionLog } from "./execution-log.js";

const lines = (...texts: string[]): { time: number; stream: string; text: string }[] => texts.map((text) => ({ time: 1, stream: "log", text }));

describe("execution logs", () => {
  it("appends new lines in number order and keeps a resent line once", () => {
    let log = mergeExecutionLog(undefined, { executionId: "x", firstLine: 0, keptFrom: 0, lines: lines("a", "b") });
    log = mergeExecutionLog(log, { executionId: "x", firstLine: 0, keptFrom: 0, lines: lines("a", "b", "c") });
    expect(log.lines.map((l) => `${l.number}:${l.text}`)).toEqual(["0:a", "1:b", "2:c"]);
    expect(log.nextLine).toBe(3);
    expect(log.chars).toBe(3);
  });

  it("drops the lines its agent dropped, oldest first, and counts them", () => {
    let log = mergeExecutionLog(undefined, { executionId: "x", firstLine: 0, keptFrom: 0, lines: lines("a", "b", "c") });
    log = mergeExecutionLog(log, { executionId: "x", firstLine: 3, keptFrom: 2, lines: lines("d") });
    expect(log.lines.map((l) => l.text)).toEqual(["c", "d"]);
    expect(readExecutionLog(log, 0, 100)).toMatchObject({ nextLine: 4, dropped: 2 });
  });

  it("holds the controller's own bound whatever an agent sends", () => {
    const many = Array.from({ length: EXECUTION_LOG_LIMITS.maxLines + 5 }, (_, i) => `line ${i}`);
    const log = mergeExecutionLog(undefined, { executionId: "x", firstLine: 0, keptFrom: 0, lines: lines(...many) });
    expect(log.lines).toHaveLength(EXECUTION_LOG_LIMITS.maxLines);
    expect(log.keptFrom).toBe(5);
    const wide = "x".repeat(EXECUTION_LOG_LIMITS.maxLineChars);
    const big = mergeExecutionLog(undefined, { executionId: "x", firstLine: 0, keptFrom: 0, lines: lines(...Array.from({ length: 100 }, () => wide)) });
    expect(big.chars).toBeLessThanOrEqual(EXECUTION_LOG_LIMITS.maxChars);
  });

  it("reads from a line number on, and says where to go on from when nothing is new", () => {
    const log = mergeExecutionLog(undefined, { executionId: "x", firstLine: 0, keptFrom: 0, lines: lines("a", "b", "c") });
    expect(readExecutionLog(log, 1, 1)).toMatchObject({ nextLine: 2, lines: [{ number: 1, text: "b" }] });
    expect(readExecutionLog(log, 3, 10)).toMatchObject({ nextLine: 3, lines: [] });
    expect(readExecutionLog(undefined, 0, 10)).toMatchObject({ nextLine: 0, lines: [], dropped: 0 });
  });
});
