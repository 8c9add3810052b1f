import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RepeatedWarnings } from "./repeated-warnings.js";

function capture() {
  const lines: { msg: string; repeated?: number; job?: string }[] = [];
  const logger = pino({ level: "warn" }, { write: (line: string) => lines.push(JSON.parse(line) as (typeof lines)[number]) });
  return { lines, logger };
}

describe("repeated warnings", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("logs the first line of a cause at once and folds its repeats within the window into one line with a count", () => {
    vi.useFakeTimers();
    const { lines, logger } = capture();
    const warnings = new RepeatedWarnings(logger, 60_000);
    const summary = (count: number): string => `${count} more executions of job orphan misfired: no owner`;
    for (let fire = 0; fire < 238; fire++) warnings.warn("orphan misfired", { job: "orphan" }, `execution orphan/${fire} misfired: no owner`, summary);
    expect(lines.map((l) => l.msg)).toEqual(["execution orphan/0 misfired: no owner"]);

    vi.advanceTimersByTime(60_000);
    expect(lines.slice(1)).toEqual([expect.objectContaining({ msg: "237 more executions of job orphan misfired: no owner", repeated: 237, job: "orphan" })]);

    warnings.warn("orphan misfired", { job: "orphan" }, "execution orphan/238 misfired: no owner", summary);
    expect(lines.at(-1)!.msg).toBe("execution orphan/238 misfired: no owner");
  });

  it("keeps causes apart, and logs nothing more for a cause that did not repeat", () => {
    vi.useFakeTimers();
    const { lines, logger } = capture();
    const warnings = new RepeatedWarnings(logger, 1_000);
    warnings.warn("a", {}, "a once", (n) => `${n} more a`);
    warnings.warn("b", {}, "b once", (n) => `${n} more b`);
    warnings.warn("b", {}, "b again", (n) => `${n} more b`);
    vi.advanceTimersByTime(1_000);
    expect(lines.map((l) => l.msg)).toEqual(["a once", "b once", "1 more b"]);
  });

  it("logs what is folded when flushed, as the controller stops", () => {
    const { lines, logger } = capture();
    const warnings = new RepeatedWarnings(logger);
    warnings.warn("a", {}, "a", (n) => `${n} more a`);
    warnings.warn("a", {}, "a", (n) => `${n} more a`);
    warnings.flush();
    expect(lines.map((l) => l.msg)).toEqual(["a", "1 more a"]);
  });
});
