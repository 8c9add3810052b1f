import { readFileSync } from "node:fs";
import { executionStateName } from "../../shared/execution-view.js";
import type { Execution } from "../../shared/gen/shardline/v1/types_pb.js";
import type { TrackedProcess } from "./tracked-process.js";

// The checks of the invariants from two sources of evidence: the agents' own record of each run
// (test/harness/chaos-handlers.mjs) and the controller's executions (the admin API).

/** One line of the recording file written by test/harness/chaos-handlers.mjs. */
export interface RunRecord {
  event: "start" | "end" | "abort";
  job: string;
  shard: number;
  fireTime: number;
  attempt: number;
  agent: string;
  pid: number;
  at: number;
}

/** The records so far; a line still being appended (no newline yet) is left for the next read. */
export function readRuns(path: string): RunRecord[] {
  const lines = readFileSync(path, "utf8").split("\n");
  lines.pop();
  return lines.filter((line) => line !== "").map((line) => JSON.parse(line) as RunRecord);
}

/** One run as it happened on one process: when it started, and the last instant it may have run. */
export interface RunSpan {
  key: string;
  attempt: number;
  agent: string;
  pid: number;
  start: number;
  /** Its end or abort record; else the death of its process; else `now` (still running). */
  stop: number;
  how: "end" | "abort" | "died" | "open";
  /** Sub-spans in which the process could run the work (frozen spans cut out). */
  active: [number, number][];
  /**
   * The remainder of a run caught by a freeze, from the SIGCONT to the fence that the agent logged
   * right after it: a paused process cannot notice that its lease lapsed before its event loop
   * turns again, and the work's own timers come due first. No lease can prevent this; see
   * pauseOverlaps.
   */
  resumed: [number, number][];
}

const fireKey = (r: { job: string; fireTime: number; shard: number }): string => `${r.job}/${r.fireTime}/${r.shard}`;

/** How far a run's end or abort record may trail its agent's fence log line (same event-loop turn). */
const FENCE_RECORD_SLACK_MS = 100;

/**
 * The runs of the recording as spans of time, using what the test knows of each process (by
 * pid): its frozen spans are cut out, and a run with no end or abort record lasts until its
 * process died.
 */
export function runSpans(runs: RunRecord[], processes: TrackedProcess[], now = Date.now()): RunSpan[] {
  const byPid = new Map(processes.map((p) => [p.pid, p]));
  const runKey = (r: RunRecord): string => `${fireKey(r)}/${r.attempt}/${r.pid}`;
  const closes = new Map<string, RunRecord>();
  for (const run of runs) if (run.event !== "start" && !closes.has(runKey(run))) closes.set(runKey(run), run);
  const spans: RunSpan[] = [];
  for (const run of runs.filter((r) => r.event === "start")) {
    const close = closes.get(runKey(run));
    const process = byPid.get(run.pid);
    const died = process?.diedAt;
    const stop = close?.at ?? died ?? now;
    const how: RunSpan["how"] = close === undefined ? (died !== undefined ? "died" : "open") : close.event === "end" ? "end" : "abort";
    let active: [number, number][] = [[run.at, stop]];
    const frozen = [...(process?.frozen ?? []), ...(process?.frozenSince === undefined ? [] : [[process.frozenSince, now] as [number, number]])];
    for (const [from, to] of frozen) {
      active = active.flatMap(([a, b]): [number, number][] => {
        if (to <= a || from >= b) return [[a, b]];
        const parts: [number, number][] = [];
        if (from > a) parts.push([a, from]);
        if (to < b) parts.push([to, b]);
        return parts;
      });
    }
    const resumed = active.filter(([a, b]) => a > run.at && (process?.resumes ?? []).some(([thawed, fenced]) => a === thawed && b <= fenced + FENCE_RECORD_SLACK_MS));
    active = active.filter((part) => !resumed.includes(part));
    spans.push({ key: fireKey(run), attempt: run.attempt, agent: run.agent, pid: run.pid, start: run.at, stop, how, active, resumed });
  }
  return spans;
}

function overlapsBetween(spans: RunSpan[], parts: (span: RunSpan) => [number, number][], other: (span: RunSpan) => [number, number][]): string[] {
  const byKey = new Map<string, RunSpan[]>();
  for (const span of spans) byKey.set(span.key, [...(byKey.get(span.key) ?? []), span]);
  const problems: string[] = [];
  for (const [key, list] of byKey) {
    for (const x of list) {
      for (const y of list) {
        if (x === y) continue;
        const overlap = parts(x).some(([a, b]) => other(y).some(([c, d]) => a < d && c < b));
        if (overlap) problems.push(`${key}: ${describeSpan(x)} overlaps ${describeSpan(y)}`);
      }
    }
  }
  return problems;
}

/**
 * Invariant 2 from the agents' own evidence: pairs of runs of one (job, fireTime, shard) whose
 * running times overlap, on two processes (or twice on one).
 */
export function overlappingRuns(spans: RunSpan[]): string[] {
  const seen = new Set<string>();
  return overlapsBetween(spans, (s) => s.active, (s) => s.active).filter((line) => {
    // Each pair is found from both sides; keep one.
    const [key, rest] = line.split(": ", 2) as [string, string];
    const sides = rest.split(" overlaps ").sort().join("|");
    if (seen.has(key + sides)) return false;
    seen.add(key + sides);
    return true;
  });
}

/** Overlaps that only the remainder of a frozen run, between its SIGCONT and its agent's fence, takes part in. */
export function pauseOverlaps(spans: RunSpan[]): string[] {
  return overlapsBetween(spans, (s) => s.resumed, (s) => [...s.active, ...s.resumed]);
}

/**
 * "A fenced agent starts nothing new", from the agents' evidence: runs a process started between
 * a SIGCONT and the fence it logged right after it (its lease had lapsed while it was frozen).
 */
export function startsOnLapsedLease(runs: RunRecord[], processes: TrackedProcess[]): string[] {
  const byPid = new Map(processes.map((p) => [p.pid, p]));
  return runs
    .filter((r) => r.event === "start" && (byPid.get(r.pid)?.resumes ?? []).some(([thawed, fenced]) => r.at >= thawed && r.at <= fenced))
    .map((r) => `${fireKey(r)}: attempt ${r.attempt} started on ${r.agent} (pid ${r.pid}) at ${iso(r.at)}, after its SIGCONT and before the fence its lease had called for`);
}

/**
 * Fencing from the agents' evidence: an attempt of a (job, fireTime, shard) that started after a
 * later attempt had started (the agent ran work the controller had already declared lost and
 * given to another agent), or one attempt started twice.
 */
export function supersededStarts(runs: RunRecord[]): string[] {
  const byKey = new Map<string, RunRecord[]>();
  for (const run of runs.filter((r) => r.event === "start")) byKey.set(fireKey(run), [...(byKey.get(fireKey(run)) ?? []), run]);
  const problems: string[] = [];
  for (const [key, starts] of byKey) {
    const seen = new Map<number, RunRecord>();
    let highest: RunRecord | undefined;
    for (const start of starts.sort((x, y) => x.at - y.at)) {
      const again = seen.get(start.attempt);
      if (again !== undefined) problems.push(`${key}: attempt ${start.attempt} started twice, on ${again.agent} (pid ${again.pid}) at ${iso(again.at)} and on ${start.agent} (pid ${start.pid}) at ${iso(start.at)}`);
      if (highest !== undefined && start.attempt < highest.attempt) {
        problems.push(
          `${key}: attempt ${start.attempt} started on ${start.agent} (pid ${start.pid}) at ${iso(start.at)}, after attempt ${highest.attempt} had started on ${highest.agent} at ${iso(highest.at)}`,
        );
      }
      seen.set(start.attempt, start);
      if (highest === undefined || start.attempt > highest.attempt) highest = start;
    }
  }
  return problems;
}

/** An execution from the admin API, with the fields the accounting reads. */
export interface ExecutionFact {
  id: string;
  shard: number;
  fireTime: number;
  attempt: number;
  agent: string;
  state: string;
  error: string;
  cause: string;
}

export function executionFact(execution: Execution): ExecutionFact {
  return {
    id: execution.id,
    shard: execution.shard,
    fireTime: Number(execution.fireTimeUnixMs),
    attempt: execution.attempt,
    agent: execution.agent,
    state: executionStateName(execution.state),
    error: execution.error,
    cause: execution.cause,
  };
}

/** How the fires of a window ended, counted per final outcome, and what was wrong. */
export interface FireAccount {
  fires: number;
  outcomes: Map<string, number>;
  failovers: number;
  /** Each attempt that was re-run: its id, agent and reason. */
  reruns: string[];
  problems: string[];
}

/**
 * Invariant 3 for a job firing every `stepMs`: every instant in [from, to] of every shard has
 * executions numbered 1..n, each attempt but the last lost with a reason and re-run as a failover,
 * and the last one either succeeded or misfired with a reason. Nothing missing, nothing extra.
 */
export function accountFires(executions: ExecutionFact[], options: { shards: number; from: number; to: number; stepMs: number }): FireAccount {
  const byKey = new Map<string, ExecutionFact[]>();
  for (const e of executions) {
    if (e.fireTime < options.from || e.fireTime > options.to) continue;
    const key = `${e.fireTime}/${e.shard}`;
    byKey.set(key, [...(byKey.get(key) ?? []), e]);
  }
  const account: FireAccount = { fires: 0, outcomes: new Map(), failovers: 0, reruns: [], problems: [] };
  for (let fireTime = options.from; fireTime <= options.to; fireTime += options.stepMs) {
    for (let shard = 0; shard < options.shards; shard++) {
      account.fires++;
      const key = `${fireTime}/${shard}`;
      const attempts = (byKey.get(key) ?? []).sort((x, y) => x.attempt - y.attempt);
      byKey.delete(key);
      if (attempts.length === 0) {
        account.problems.push(`fire ${iso(fireTime)} of shard ${shard}: no execution at all (it vanished)`);
        continue;
      }
      const numbers = attempts.map((e) => e.attempt).join(",");
      if (attempts.some((e, i) => e.attempt !== i + 1)) account.problems.push(`${key}: attempts ${numbers}, expected 1..${attempts.length}`);
      const last = attempts[attempts.length - 1]!;
      for (const [i, e] of attempts.slice(0, -1).entries()) {
        const next = attempts[i + 1]!;
        if (e.state !== "lost" || e.error === "") account.problems.push(`${e.id}: ${e.state} (${e.error || "no reason"}) followed by attempt ${next.attempt}; only a lost attempt, with its reason, is re-run here`);
        if (next.cause !== "failover") account.problems.push(`${next.id}: cause ${next.cause}, expected failover after ${e.id} was ${e.state}`);
        account.failovers++;
        account.reruns.push(`${e.id} ${e.state} on ${e.agent || "no agent"} (${e.error || "no reason"}); re-run as attempt ${next.attempt} on ${next.agent || "no agent"}`);
      }
      const final = last.state === "misfired" && last.error !== "" ? "misfired" : last.state;
      if (final !== "succeeded" && final !== "misfired") {
        account.problems.push(`${last.id}: ended ${last.state} on ${last.agent || "no agent"} (${last.error || "no reason"}); expected succeeded, or misfired with a reason`);
      }
      account.outcomes.set(final, (account.outcomes.get(final) ?? 0) + 1);
    }
  }
  for (const [key, list] of byKey) {
    for (const e of list) account.problems.push(`${e.id} (${key}): an execution off the schedule's instants`);
  }
  return account;
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function describeSpan(span: RunSpan): string {
  const parts = [...span.active.map(([a, b]) => `${iso(a)}..${iso(b)}`), ...span.resumed.map(([a, b]) => `${iso(a)}..${iso(b)} after SIGCONT`)];
  return `attempt ${span.attempt} on ${span.agent} (pid ${span.pid}, ${span.how}; running ${parts.join(" + ")})`;
}
