import { create } from "@bufbuild/protobuf";
import { ExecutionUpdateSchema } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import type { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { AgentCore } from "../agent-core.js";
import type { AssignmentRef } from "../assignment-table.js";
import type { AgentEffect, AgentInput, AgentMessage, DispatchedRun } from "../events.js";

/** The agent core's test world, shared by its concept tests (agent-core.test.ts, drain.test.ts). */

export const TTL = 2_000;
export const BEAT = 500;
export const FIRE = 1_700_000_000_000;

export function shard(shard: number, generation = 1n): AssignmentRef {
  return { job: "job", shard, term: 1n, generation };
}

export function run(executionId: string, on: AssignmentRef | undefined, fireTimeUnixMs = FIRE, graceMs = 0): DispatchedRun {
  return { executionId, job: "job", assignment: on, hook: false, fireTimeUnixMs, graceMs };
}

/** An agent core on a fake clock: `at` moves the clock, every step returns the effects it made. */
export class Harness {
  readonly core = new AgentCore({ drainGraceMs: 10_000, welcomeTimeoutMs: 5_000, addresses: ["a:1", "b:1"], reconnect: { initialMs: 100, maxMs: 5_000 }, random: () => 0.5 });
  now = 0;

  step(input: AgentInput): AgentEffect[] {
    this.core.step(input, this.now);
    return this.core.take();
  }

  /** Moves the clock to `at`, stepping every deadline on the way, and returns what they made. */
  at(at: number): AgentEffect[] {
    const effects: AgentEffect[] = [];
    for (let next = this.core.nextDeadline(); next !== undefined && next <= at; next = this.core.nextDeadline()) {
      this.now = Math.max(this.now, next);
      effects.push(...this.step({ kind: "tick" }));
    }
    this.now = at;
    return effects;
  }

  /** Opens a stream and welcomes it, holding `shards`. */
  connect(...shards: AssignmentRef[]): AgentEffect[] {
    const effects = this.step({ kind: "stream-opened" });
    effects.push(...this.step({ kind: "welcome", term: 1n, sessionId: "s", heartbeatIntervalMs: BEAT, leaseTtlMs: TTL, dispatchAheadMs: 250 }));
    effects.push(...this.step({ kind: "assignments", term: 1n, snapshot: true, add: shards, revoke: [] }));
    return effects;
  }

  dispatch(...runs: DispatchedRun[]): AgentEffect[] {
    return this.step({ kind: "dispatch", term: 1n, runs, atUnixMs: FIRE });
  }

  report(executionId: string, state: ExecutionState): AgentEffect[] {
    return this.step({ kind: "run-report", update: create(ExecutionUpdateSchema, { executionId, state }) });
  }
}

export function sent(effects: AgentEffect[]): AgentMessage[] {
  return effects.flatMap((e) => (e.kind === "send" ? [e.message] : []));
}

export function kinds(effects: AgentEffect[]): string[] {
  return effects.filter((e) => e.kind !== "log").map((e) => (e.kind === "send" ? `send ${e.message.kind}` : e.kind));
}

export function hello(effects: AgentEffect[]): Extract<AgentMessage, { kind: "hello" }> {
  const message = sent(effects).find((m) => m.kind === "hello");
  if (message?.kind !== "hello") throw new Error("no Hello sent");
  return message;
}
