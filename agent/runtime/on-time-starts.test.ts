import { describe, expect, it } from "vitest";
import { OnTimeStarts, wallClockMs, type Starter } from "./on-time-starts.js";

/** Starts runs by recording when each was started; a run stopped before its start records nothing. */
function recordingStarter(log: { id: string; at: number }[]): Starter & { stopped: Set<string> } {
  const stopped = new Set<string>();
  return {
    stopped,
    start(id: string): void {
      if (!stopped.has(id)) log.push({ id, at: wallClockMs() });
    },
  };
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
    const starter = recordingStarter(log);
    instants.forEach((at, i) => starts.add(at, 250, starter, `r${i}`));
    await until(() => log.length === 4, "every run to start");
    for (const { id, at } of log) expect(at).toBeGreaterThanOrEqual(instants[Number(id.slice(1))]!);
    expect(log.map((r) => r.id)).toEqual(["r3", "r0", "r1", "r2"]);
  });

  it("starts a run whose instant has passed at once", () => {
    const starts = new OnTimeStarts();
    const log: { id: string; at: number }[] = [];
    starts.add(wallClockMs() - 5, 250, recordingStarter(log), "late");
    expect(log.map((r) => r.id)).toEqual(["late"]);
  });

  it("waits no longer than the most it was told, however far its instant (a clock behind)", async () => {
    const starts = new OnTimeStarts();
    const log: { id: string; at: number }[] = [];
    starts.add(wallClockMs() + 3_600_000, 20, recordingStarter(log), "skewed");
    await until(() => log.length === 1, "the run to start");
  });

  it("does not start a run stopped while it waited", async () => {
    const starts = new OnTimeStarts();
    const log: { id: string; at: number }[] = [];
    const at = wallClockMs() + 10;
    const starter = recordingStarter(log);
    starts.add(at, 250, starter, "stopped");
    starts.add(at, 250, starter, "kept");
    starter.stopped.add("stopped");
    await until(() => log.length === 1, "the kept run to start");
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(log.map((r) => r.id)).toEqual(["kept"]);
  });
});
