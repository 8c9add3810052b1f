import { type ChildProcess, spawn } from "node:child_process";
import { setPriority } from "node:os";

/** The loops' niceness: background work, as `nice -n 10` runs it. */
const NICENESS = 10;

/**
 * Processes that spin on the CPU beside the processes under test, as background work on a busy
 * machine would (at niceness 10: the suite runs two such test files at once, beside whatever
 * else the machine runs, and loops at full priority would then starve the controller outright
 * rather than contend for its CPU): each ends on its own after `ms`, and stop() kills the ones
 * still running (call it in afterAll).
 */
export class BusyLoops {
  readonly #children: ChildProcess[] = [];

  constructor(count: number, ms: number) {
    for (let i = 0; i < count; i++) {
      const child = spawn(process.execPath, ["-e", `const end = Date.now() + ${ms}; while (Date.now() < end) {}`], { stdio: "ignore" });
      if (child.pid !== undefined) setPriority(child.pid, NICENESS);
      this.#children.push(child);
    }
  }

  stop(): void {
    for (const child of this.#children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}
