import { create } from "@bufbuild/protobuf";
import { ShardlineError } from "../../shared/errors.js";
import {
  AgentState,
  type Agent as AgentMessage,
  AgentSchema,
  type Assignment,
  type Execution as ExecutionMessage,
  ExecutionSchema,
  ExecutionState,
  type Job as JobMessage,
  JobSchema,
} from "../../shared/gen/shardline/v1/types_pb.js";
import type { ExecutionUpdate, Hello } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { type ExecutionRecord, type ExecutionStateName, FIRE_COMPLETE_SHARD } from "../store/store.js";
import type { AgentView, JobView } from "../core/controller-core.js";
import type { AgentHello, AssignmentRef, ExecutionReport } from "../core/messages.js";

const STATE_NAMES: Record<ExecutionState, ExecutionStateName | undefined> = {
  [ExecutionState.UNSPECIFIED]: undefined,
  [ExecutionState.PENDING]: "pending",
  [ExecutionState.RUNNING]: "running",
  [ExecutionState.SUCCEEDED]: "succeeded",
  [ExecutionState.FAILED]: "failed",
  [ExecutionState.TIMED_OUT]: "timed-out",
  [ExecutionState.CANCELLED]: "cancelled",
  [ExecutionState.LOST]: "lost",
  [ExecutionState.MISFIRED]: "misfired",
};

const STATE_ENUMS = new Map<ExecutionStateName, ExecutionState>(
  Object.entries(STATE_NAMES)
    .filter(([, name]) => name !== undefined)
    .map(([value, name]) => [name!, Number(value) as ExecutionState]),
);

/** The proto enum of a state name. */
export function stateToProto(state: ExecutionStateName): ExecutionState {
  return STATE_ENUMS.get(state)!;
}

/** The state name of a proto enum, or an error naming `field` for values an agent may not send. */
export function stateFromProto(state: ExecutionState, field: string): ExecutionStateName {
  const name = STATE_NAMES[state];
  if (name === undefined) {
    throw ShardlineError.invalid(field, state, "an ExecutionState other than UNSPECIFIED");
  }
  return name;
}

/** Converts a protobuf uint64/int64 into a number, refusing what a number cannot hold. */
export function toNumber(value: bigint, field: string): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw ShardlineError.invalid(field, value.toString(), `an integer from 0 to ${Number.MAX_SAFE_INTEGER}`);
  }
  return Number(value);
}

export function assignmentFromProto(assignment: Assignment, field: string): AssignmentRef {
  if (assignment.shard === undefined) throw ShardlineError.invalid(`${field}.shard`, undefined, "a ShardRef");
  return {
    job: assignment.shard.job,
    shard: assignment.shard.shard,
    term: toNumber(assignment.term, `${field}.term`),
    generation: toNumber(assignment.generation, `${field}.generation`),
  };
}

export function assignmentToProto(ref: AssignmentRef): { shard: { job: string; shard: number }; term: bigint; generation: bigint } {
  return { shard: { job: ref.job, shard: ref.shard }, term: BigInt(ref.term), generation: BigInt(ref.generation) };
}

export function reportFromProto(update: ExecutionUpdate, field: string): ExecutionReport {
  const report: ExecutionReport = {
    executionId: update.executionId,
    state: stateFromProto(update.state, `${field}.state`),
  };
  if (update.startedAtUnixMs !== 0n) report.startedAt = toNumber(update.startedAtUnixMs, `${field}.started_at_unix_ms`);
  if (update.finishedAtUnixMs !== 0n) report.finishedAt = toNumber(update.finishedAtUnixMs, `${field}.finished_at_unix_ms`);
  if (update.error !== "") report.error = update.error.slice(0, 4096);
  if (update.result !== "") report.result = update.result.slice(0, 4096);
  return report;
}

export function helloFromProto(hello: Hello): AgentHello {
  return {
    agentId: hello.agentId,
    labels: { ...hello.labels },
    capacity: hello.capacity === 0 ? 1 : hello.capacity,
    handlers: [...hello.handlers],
    executors: [...hello.executors],
    maxConcurrent: hello.maxConcurrent,
    version: hello.version,
    held: hello.held.map((a, i) => assignmentFromProto(a, `hello.held[${i}]`)),
    executions: hello.executions.map((u, i) => reportFromProto(u, `hello.executions[${i}]`)),
  };
}

/** An execution as the API shows it; `queuePosition` is its place in line while it waits. */
export function executionToProto(record: ExecutionRecord, queuePosition = 0): ExecutionMessage {
  return create(ExecutionSchema, {
    id: record.id,
    job: record.job,
    shard: record.shard === FIRE_COMPLETE_SHARD ? 0 : record.shard,
    fireTimeUnixMs: BigInt(record.fireTime),
    attempt: record.attempt,
    agent: record.agent,
    state: stateToProto(record.state),
    startedAtUnixMs: BigInt(record.startedAt ?? 0),
    finishedAtUnixMs: BigInt(record.finishedAt ?? 0),
    error: record.error ?? "",
    result: record.result ?? "",
    cause: record.cause,
    queuePosition,
    fireComplete: record.shard === FIRE_COMPLETE_SHARD,
  });
}

export function agentToProto(view: AgentView): AgentMessage {
  return create(AgentSchema, {
    id: view.id,
    labels: view.labels,
    capacity: view.capacity,
    handlers: view.handlers,
    version: view.version,
    state: view.state === "ready" ? AgentState.READY : view.state === "draining" ? AgentState.DRAINING : AgentState.LOST,
    shards: view.shards,
    leaseExpiresUnixMs: BigInt(view.leaseExpiresAt),
    cordoned: view.cordoned,
    connectedAtUnixMs: BigInt(view.connectedAt),
    maxConcurrent: view.maxConcurrent,
    running: view.running,
  });
}

export function jobToProto(view: JobView): JobMessage {
  return create(JobSchema, {
    name: view.record.name,
    manifest: view.record.manifest,
    specJson: JSON.stringify(view.record.spec),
    paused: view.record.paused,
    nextFireUnixMs: BigInt(view.nextFire ?? 0),
    lastFireUnixMs: BigInt(view.lastFire ?? 0),
    revision: BigInt(view.record.revision),
    disabledShards: view.record.disabledShards,
    upcomingFiresUnixMs: view.upcoming.map((t) => BigInt(t)),
  });
}
