import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionLogLineSchema, GetExecutionLogsResponseSchema } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import { formatClock } from "./format.js";
import { appendLogPage, EMPTY_LOG_TAIL, type LogTail } from "./log-tail.js";

/** An answer holding the lines numbered `numbers`, as the controller sends it after `afterLine`. */
function page(numbers: number[], options: { dropped?: number; finished?: boolean; stream?: string; nextLine?: number } = {}) {
  const lines = numbers.map((n) => create(ExecutionLogLineSchema, { number: BigInt(n), timeUnixMs: BigInt(1_767_225_600_000 + n), stream: options.stream ?? "log", text: `INFO line ${n}` }));
  const next = options.nextLine ?? (numbers.length > 0 ? numbers.at(-1)! + 1 : 0);
  return create(GetExecutionLogsResponseSchema, { lines, nextLine: BigInt(next), dropped: BigInt(options.dropped ?? numbers[0] ?? 0), finished: options.finished ?? false });
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);
const numbers = (tail: LogTail): number[] => tail.lines.map((line) => line.number);
const gaps = (tail: LogTail): [number, number][] => tail.lines.filter((line) => line.missingBefore > 0).map((line) => [line.number, line.missingBefore]);

describe("an execution's log tail as the page follows it", () => {
  it("appends each answer's lines in order and goes on from its next_line", () => {
    let tail = appendLogPage(EMPTY_LOG_TAIL, page(range(0, 3)));
    tail = appendLogPage(tail, page(range(3, 5)));
    expect(numbers(tail)).toEqual([0, 1, 2, 3, 4]);
    expect(tail.lines[4]).toEqual({ number: 4, time: 1_767_225_600_004, stream: "log", text: "INFO line 4", missingBefore: 0 });
    expect(tail).toMatchObject({ dropped: 0, hidden: 0, nextLine: 5n, caughtUp: true, finished: false });
  });

  it("says how many earlier lines the log no longer held when the first line came", () => {
    const tail = appendLogPage(EMPTY_LOG_TAIL, page(range(20, 30), { finished: true }));
    expect(tail.dropped).toBe(20);
    expect(gaps(tail)).toEqual([]);
    expect(tail.finished).toBe(true);
    // Lines dropped on the controller after the page read them change nothing already shown.
    expect(appendLogPage(tail, page([], { dropped: 25, nextLine: 30, finished: true })).dropped).toBe(20);
  });

  it("takes the answer's dropped count while no line has come, then the first line's number", () => {
    const empty = appendLogPage(EMPTY_LOG_TAIL, page([], { dropped: 7, nextLine: 7 }));
    expect(empty).toMatchObject({ dropped: 7, lines: [], nextLine: 7n, finished: false });
    expect(appendLogPage(empty, page([9, 10], { dropped: 9 })).dropped).toBe(9);
  });

  it("marks where line numbers skip with how many are missing", () => {
    let tail = appendLogPage(EMPTY_LOG_TAIL, page([0, 1, 4, 5]));
    expect(gaps(tail)).toEqual([[4, 2]]);
    // The next answer starts past where this one ended: the controller dropped lines in between.
    tail = appendLogPage(tail, page([10, 11]));
    expect(gaps(tail)).toEqual([
      [4, 2],
      [10, 4],
    ]);
  });

  it("keeps a line sent twice once", () => {
    const tail = appendLogPage(appendLogPage(EMPTY_LOG_TAIL, page(range(0, 3))), page(range(1, 5)));
    expect(numbers(tail)).toEqual([0, 1, 2, 3, 4]);
    expect(gaps(tail)).toEqual([]);
  });

  it("shows at most the newest lines, counting those it took off the page", () => {
    let tail = appendLogPage(EMPTY_LOG_TAIL, page(range(0, 4)), 5);
    tail = appendLogPage(tail, page(range(4, 7)), 5);
    expect(numbers(tail)).toEqual([2, 3, 4, 5, 6]);
    expect(tail.hidden).toBe(2);
    expect(tail.dropped).toBe(0);
    // A gap after the lines taken off is still marked.
    tail = appendLogPage(tail, page([9]), 5);
    expect(numbers(tail)).toEqual([3, 4, 5, 6, 9]);
    expect(gaps(tail)).toEqual([[9, 2]]);
    expect(tail.hidden).toBe(3);
  });

  it("is not finished while an answer is a full page, even of an execution that has ended", () => {
    const full = appendLogPage(EMPTY_LOG_TAIL, page(range(0, 4), { finished: true }), 10, 4);
    expect(full).toMatchObject({ caughtUp: false, finished: false, nextLine: 4n });
    expect(appendLogPage(full, page([4], { finished: true }), 10, 4)).toMatchObject({ caughtUp: true, finished: true, nextLine: 5n });
  });

  it("is finished at once for an ended execution that wrote nothing", () => {
    expect(appendLogPage(EMPTY_LOG_TAIL, page([], { finished: true }))).toMatchObject({ dropped: 0, lines: [], finished: true });
  });
});

describe("a log line's time", () => {
  it("is the time of day in this browser's zone to the millisecond, dashes when unknown", () => {
    const at = new Date(2026, 11, 7, 9, 5, 3, 42).getTime();
    expect(formatClock(at)).toBe("09:05:03.042");
    expect(formatClock(BigInt(at))).toBe("09:05:03.042");
    expect(formatClock(0n)).toBe("--:--:--.---");
  });
});
