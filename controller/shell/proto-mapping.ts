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
  type Revision as RevisionMessage,
  RevisionSchema,
  type RolloutStatus,
  RolloutStatusSchema,
} from "../../shared/gen/shardline/v1/types_pb.js";
import type {
  ExecutionLog as ExecutionLogMessage,
  ExecutionUpdate as ExecutionUpdateMessage,
  ExecutionUpdates,
  Hello,
  Release,
} from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { EXECUTION_LOG_LIMITS } from "../core/execution-log.js";
import { stateEnumOf, stateNameOf } from "../../shared/execution-state.js";
import { DEFAULT_WIRE_BUDGET } from "../../shared/grpc/index.js";
import { manifestShaped } from "../../shared/manifest/index.js";
import { spanContextFromCarrier } from "../../shared/telemetry/tracing.js";
import { type ExecutionRecord, type ExecutionStateName, FIRE_COMPLETE_SHARD, type RevisionRecord } from "../store/store.js";
import type { AgentView, JobView, RolloutView } from "../core/controller-core.js";
import type { TallyView } from "../core/rollout-view.js";
import { clip } from "../core/hello-rules.js";
import type { AgentHello, AssignmentRef, ExecutionUpdate } from "../core/messages.js";

/** The proto enum of a state name. */
export function stateToProto(state: ExecutionStateName): ExecutionState {
  return stateEnumOf(state);
}

/** The state name of a proto enum, or an error naming `field` for values an agent may not send. */
export function stateFromProto(state: ExecutionState, field: string): ExecutionStateName {
  const name = stateNameOf(state);
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

/**
 * The most entries one repeated field of an agent's message may hold: the wire budget's, which
 * refuses more before decoding. No real message comes close: 4 MiB, the largest message the
 * controller accepts, holds about 80,000 real execution updates (an id of some 40 characters
 * and two timestamps each). The bound is for tiny, empty entries, of which 4 MiB holds two million.
 */
export const MAX_ENTRIES = DEFAULT_WIRE_BUDGET.maxEntries;

/** Execution ids as executionId() makes them (`job/fireTime/shard/attempt`), with room to spare. */
const EXECUTION_ID = /^[A-Za-z0-9._:/-]{1,256}$/;
const EXECUTION_ID_ALLOWED = "the id of an execution as received in Dispatch: 1-256 letters, digits, '.', '_', ':', '/' and '-'";
/** A job name, as metadata.name allows it: a DNS-1123 label. */
const JOB_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** The latest instant a JavaScript Date can hold: anything later breaks every reader of the record. */
const MAX_UNIX_MS = 8_640_000_000_000_000;
/** An agent's free text (Execution.error, Execution.result) is cut to this many characters. */
const MAX_TEXT = 4096;

/**
 * Refuses a repeated field of more than MAX_ENTRIES entries, worded as the wire budget words it:
 * for messages that did not come through shared/grpc's deserialiser, which checks it first.
 */
export function checkEntries(count: number, field: string): void {
  if (count > MAX_ENTRIES) throw ShardlineError.invalid(field, `more than ${MAX_ENTRIES} entries`, `at most ${MAX_ENTRIES} in one message`);
}

function unixMsFromProto(value: bigint, field: string): number {
  if (value < 0n || value > BigInt(MAX_UNIX_MS)) {
    throw ShardlineError.invalid(field, value.toString(), `a Unix time in milliseconds from 0 (none) to ${MAX_UNIX_MS}`);
  }
  return Number(value);
}

function executionIdFromProto(id: string, field: string): string {
  if (!EXECUTION_ID.test(id)) throw ShardlineError.invalid(field, clip(id), EXECUTION_ID_ALLOWED);
  return id;
}

export function assignmentFromProto(assignment: Assignment, field: string): AssignmentRef {
  if (assignment.shard === undefined) throw ShardlineError.invalid(`${field}.shard`, undefined, "a ShardRef");
  if (!JOB_NAME.test(assignment.shard.job)) {
    throw ShardlineError.invalid(`${field}.shard.job`, clip(assignment.shard.job), "a job name: 1-63 lowercase letters, digits and '-'");
  }
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

/** The assignments of a Release, each with the field named should it be malformed. */
export function releaseFromProto(release: Release): AssignmentRef[] {
  checkEntries(release.assignments.length, "release.assignments");
  return release.assignments.map((a, i) => assignmentFromProto(a, `release.assignments[${i}]`));
}

/** The states an agent may report in ExecutionUpdates; PENDING and MISFIRED are the controller's to give. */
const REPORTABLE: ReadonlySet<ExecutionStateName> = new Set(["running", "succeeded", "failed", "timed-out", "cancelled", "lost"]);
/** Hello may also list a run dispatched ahead of its fire instant and not started yet. */
const HELD: ReadonlySet<ExecutionStateName> = new Set([...REPORTABLE, "pending"]);

/** One execution update; `held`: it comes in a Hello, which may also list PENDING runs. */
export function updateFromProto(update: ExecutionUpdateMessage, field: string, held = false): ExecutionUpdate {
  const state = stateNameOf(update.state);
  if (state === undefined || !(held ? HELD : REPORTABLE).has(state)) {
    const allowed = `${held ? "PENDING, " : ""}RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED or LOST`;
    throw ShardlineError.invalid(`${field}.state`, stateName(update.state), allowed);
  }
  const report: ExecutionUpdate = { executionId: executionIdFromProto(update.executionId, `${field}.execution_id`), state };
  if (update.startedAtUnixMs !== 0n) report.startedAt = unixMsFromProto(update.startedAtUnixMs, `${field}.started_at_unix_ms`);
  if (update.finishedAtUnixMs !== 0n) report.finishedAt = unixMsFromProto(update.finishedAtUnixMs, `${field}.finished_at_unix_ms`);
  // Free text, cut rather than refused: a handler's error message is not the agent's to bound.
  if (update.error !== "") report.error = update.error.slice(0, MAX_TEXT);
  if (update.result !== "") report.result = update.result.slice(0, MAX_TEXT);
  if (update.log !== undefined && (update.log.lines.length > 0 || update.log.keptFrom > 0n)) report.log = logFromProto(update.log, `${field}.log`);
  return report;
}

/**
 * An ExecutionLog, checked: its numbers must be possible, its lines at most a chunk's bound.
 * Text is cut rather than refused, as error and result are: a run's output is not the agent's to
 * bound, and the store's own bound (execution-log.ts) holds whatever an agent sends.
 */
function logFromProto(log: ExecutionLogMessage, field: string): NonNullable<ExecutionUpdate["log"]> {
  const limits = EXECUTION_LOG_LIMITS;
  if (log.lines.length > limits.maxLinesPerChunk) {
    throw ShardlineError.invalid(`${field}.lines`, `${log.lines.length} lines`, `at most ${limits.maxLinesPerChunk} in one ExecutionLog`);
  }
  const firstLine = toNumber(log.firstLine, `${field}.first_line`);
  const keptFrom = toNumber(log.keptFrom, `${field}.kept_from`);
  if (firstLine + log.lines.length > Number.MAX_SAFE_INTEGER) {
    throw ShardlineError.invalid(`${field}.first_line`, log.firstLine.toString(), `a number that leaves room for its ${log.lines.length} lines below 2^53`);
  }
  if (keptFrom > firstLine + log.lines.length) {
    throw ShardlineError.invalid(`${field}.kept_from`, log.keptFrom.toString(), `at most first_line + the number of lines (${firstLine + log.lines.length})`);
  }
  const lines = log.lines.map((line, i) => ({
    time: line.timeUnixMs === 0n ? 0 : unixMsFromProto(line.timeUnixMs, `${field}.lines[${i}].time_unix_ms`),
    stream: line.stream.slice(0, limits.maxStreamChars),
    text: line.text.slice(0, limits.maxLineChars),
  }));
  return { firstLine, lines, keptFrom };
}

/**
 * The reports of an ExecutionUpdates, in order. Besides each report's fields, the batch must be
 * a possible history: an execution reports RUNNING at most, then one terminal state, so nothing
 * may follow a terminal report of the same execution in the same message. (Across messages the
 * controller cannot tell such a report from a late one after a failover, which the protocol
 * says to ignore; the core does.)
 */
export function updatesFromProto(updates: ExecutionUpdates): ExecutionUpdate[] {
  checkEntries(updates.updates.length, "execution_updates.updates");
  const ended = new Map<string, number>();
  return updates.updates.map((update, i) => {
    const field = `execution_updates.updates[${i}]`;
    const report = updateFromProto(update, field);
    const end = ended.get(report.executionId);
    if (end !== undefined) {
      throw ShardlineError.invalid(
        `${field}.state`,
        stateName(update.state),
        `no update of ${report.executionId} after its ${stateName(updates.updates[end]!.state)} in execution_updates.updates[${end}]`,
      );
    }
    if (report.state !== "running") ended.set(report.executionId, i);
    return report;
  });
}

/** The proto's name of a state, for messages: `SUCCEEDED`, or the number when it has none. */
function stateName(state: ExecutionState): string {
  return ExecutionState[state] ?? String(state);
}

export function helloFromProto(hello: Hello): AgentHello {
  checkEntries(hello.held.length, "hello.held");
  checkEntries(hello.executions.length, "hello.executions");
  return {
    agentId: hello.agentId,
    labels: { ...hello.labels },
    capacity: hello.capacity === 0 ? 1 : hello.capacity,
    handlers: [...hello.handlers],
    executors: [...hello.executors],
    maxConcurrent: hello.maxConcurrent,
    version: hello.version,
    held: hello.held.map((a, i) => assignmentFromProto(a, `hello.held[${i}]`)),
    executions: hello.executions.map((u, i) => updateFromProto(u, `hello.executions[${i}]`, true)),
    instanceId: hello.instanceId,
  };
}

/**
 * An execution as the API shows it; `queuePosition` is its place in line while it waits, and
 * `waitingReason` why it waits.
 */
export function executionToProto(record: ExecutionRecord, queuePosition = 0, waitingReason = ""): ExecutionMessage {
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
    waitingReason,
    revision: BigInt(record.revision ?? 0),
    traceId: record.traceContext === undefined ? "" : (spanContextFromCarrier(record.traceContext)?.traceId ?? ""),
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
    instanceId: view.instanceId,
    refusedHellos: view.refusedHellos,
    lastRefusal: view.lastRefusal ?? "",
  });
}

/** A job as the API shows it, with how its rollout stands (`rollout`, from core.rollout()). */
export function jobToProto(view: JobView, rollout?: RolloutView): JobMessage {
  return create(JobSchema, {
    name: view.record.name,
    manifest: view.record.manifest,
    // Its shape follows the manifest's (the proto says so): spec.handler, spec.script, ... as written.
    specJson: JSON.stringify(manifestShaped(view.record.spec)),
    paused: view.record.paused,
    nextFireUnixMs: BigInt(view.nextFire ?? 0),
    lastFireUnixMs: BigInt(view.lastFire ?? 0),
    revision: BigInt(view.record.revision),
    disabledShards: view.record.disabledShards,
    upcomingFiresUnixMs: view.upcoming.map((t) => BigInt(t)),
    waitingReason: view.waitingReason ?? "",
    ...(rollout === undefined ? {} : { rollout: rolloutToProto(rollout) }),
  });
}

/** How a job's rollout stands, as the API shows it (GetRollout, Job.rollout). */
export function rolloutToProto(view: RolloutView): RolloutStatus {
  return create(RolloutStatusSchema, {
    phase: view.phase,
    currentRevision: BigInt(view.currentRevision),
    stableRevision: BigInt(view.stableRevision),
    targetRevision: BigInt(view.targetRevision),
    steps: view.steps,
    step: view.step,
    stepStartedAtUnixMs: BigInt(view.stepStartedAt),
    shardsByRevision: view.shardsByRevision.map(({ revision, shards }) => ({ revision: BigInt(revision), shards })),
    windowStartedAtUnixMs: BigInt(view.since),
    target: tallyToProto(view.target),
    stable: tallyToProto(view.stable),
    reason: view.reason ?? "",
    endedAtUnixMs: BigInt(view.endedAt ?? 0),
    waiting: view.waiting ?? "",
  });
}

function tallyToProto(tally: TallyView): { runs: number; failures: number; p95DurationMs?: bigint } {
  return { runs: tally.runs, failures: tally.failures, ...(tally.p95Ms === undefined ? {} : { p95DurationMs: BigInt(Math.round(tally.p95Ms)) }) };
}

/** One revision of a job, as ListRevisions shows it. */
export function revisionToProto(record: RevisionRecord): RevisionMessage {
  return create(RevisionSchema, {
    job: record.job,
    revision: BigInt(record.revision),
    manifest: record.manifest,
    specHash: record.hash,
    appliedAtUnixMs: BigInt(record.appliedAt),
    appliedBy: record.appliedBy,
    undoOf: BigInt(record.undoOf ?? 0),
  });
}
