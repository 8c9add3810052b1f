/**
 * CPU time of the processes a measurement drives, read from /proc (Linux): user plus system time
 * of every thread of each process (a Node process's store thread, its libuv pool, its GC helpers),
 * as the kernel counts it. A rate moves with whatever else shares the machine; the CPU time one
 * execution costs moves much less, which is why the benchmark reports both.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

let ticksPerSecond: number | undefined;

/** The kernel's clock ticks per second, in which /proc/PID/stat counts CPU time. */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const read = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    ticksPerSecond = Number.isInteger(read) && read > 0 ? read : 100;
  }
  return ticksPerSecond;
}

/** CPU seconds (user + system, every thread) process `pid` has used since it started. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) is in parentheses and may hold spaces: count from after it.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 (utime) and 15 (stime) of proc(5); fields[0] is field 3.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks();
}

/** CPU seconds this process has used, to the microsecond. */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/** One process (or this one, with pid "self") whose CPU a meter counts, under a name for the report. */
export interface MeteredProcess {
  name: string;
  pid: number | "self";
}

/** CPU seconds each metered process used between start and stop, and their sum. */
export interface CpuReading {
  totalSeconds: number;
  /** By name; processes of one name are summed. */
  byName: Record<string, number>;
}

function cpuOf(process: MeteredProcess): number {
  return process.pid === "self" ? ownCpuSeconds() : processCpuSeconds(process.pid);
}

/** Counts the CPU time a set of processes uses between `start()` and `stop()`; stop before any of them exits. */
export class CpuMeter {
  #startedAt: number[] | undefined;

  constructor(private readonly processes: readonly MeteredProcess[]) {}

  start(): this {
    this.#startedAt = this.processes.map(cpuOf);
    return this;
  }

  stop(): CpuReading {
    const startedAt = this.#startedAt;
    if (startedAt === undefined) throw new Error("benchmark: a CPU meter was stopped before it started");
    const byName: Record<string, number> = {};
    let totalSeconds = 0;
    this.processes.forEach((process, i) => {
      const used = cpuOf(process) - startedAt[i]!;
      byName[process.name] = (byName[process.name] ?? 0) + used;
      totalSeconds += used;
    });
    return { totalSeconds, byName };
  }
}

/** Microseconds of CPU per unit of work. */
export function microsecondsEach(reading: CpuReading, units: number): number {
  return (reading.totalSeconds * 1e6) / units;
}
