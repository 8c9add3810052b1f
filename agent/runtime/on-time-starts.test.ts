import { describe, expect, it } from "vitest";
import type { ExecutionRun } from "../executors/execution-run.js";
import { OnTimeStarts, wallClockMs } from "./on-time-starts.js";

/** A run that records when it was started, and can be stopped before. */
function recordingRun(log: { id: string; at: number }[], id: string): ExecutionRun & { stopped: boolean; halt(): void } {
  const run = {
    stopped: false,
    context: {} as ExecutionRun["context"],
    finished: false,
    start(): void {
      if (!run.stopped) log.push({ id, at: wallClockMs() });
    },
    stop(): void {
      run.stopped = true;
    },
    halt(): void {
      run.stop();
    },
  };
  return run;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe("OnTimeStarts", () => {
  it("starts runs at their fire instant and never before it", async () => {
    const starts = new OnTimeStarts();
    const log: { id: string; at: number }[] = [];
    const now = wallClockMs();
    const instants = [now + 15, now + 15, now + 40, now + 3];
    instants.forEach((at, i) => starts.add(at, 250, recordingRun(log, `r${i}`)));
    await until(() => log.length === 4, "every run to start");
    for (const { id, at } of log) expect(at).toBeGreaterThanOrEqual(instants[Number(id.slice(1))]!);
    expect(log.map((r) => r.id)).toEqual(["r3", "r0", "r1", "r2"]);
  });

  it("starts a run whose instant has passed at once", () => {
    const starts = new OnTimeStarts();
    const log: { id: string; at: number }[] = [];
    starts.add(wallClockMs() - 5, 250, recordingRun(log, "late"));
    expect(log.map((r) => r.id)).toEqual(["late"]);
  });

  it("waits no longer than the most it was told, however far its instant (a clock behind)", async () => {
    const starts = new OnTimeStarts();
    const log: { id: string; at: number }[] = [];
    starts.add(wallClockMs() + 3_600_000, 20, recordingRun(log, "skewed"));
    await until(() => log.length === 1, "the run to start");
  });

  it("does not start a run stopped while it waited", async () => {
    const starts = new OnTimeStarts();
    const log: { id: string; at: number }[] = [];
    const at = wallClockMs() + 10;
    const stopped = recordingRun(log, "stopped");
    starts.add(at, 250, stopped);
    starts.add(at, 250, recordingRun(log, "kept"));
    stopped.halt();
    await until(() => log.length === 1, "the kept run to start");
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(log.map((r) => r.id)).toEqual(["kept"]);
  });
});
