/**
 * The messages of the transport floor, built as the product builds them: the controller's
 * ExecutionContext of a no-op job's run (controller/core/executions.ts), split by the
 * controller's own dispatchParts and mapped field for field as its toResponse maps a dispatch
 * (controller/shell/agent-sessions.ts); and the agent's batch of terminal updates, split by
 * partsWithin with the agent's size estimate (agent/runtime/agent.ts). Pure: no I/O.
 */
import { randomBytes } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { DEFAULT_CORE_CONFIG } from "../../controller/core/config.js";
import { fencingToken } from "../../controller/core/disconnect-grace.js";
import { executionId } from "../../controller/core/execution-id.js";
import type { ExecutionContext } from "../../controller/core/messages.js";
import { dispatchParts } from "../../controller/shell/agent-sessions.js";
import { encodeDispatch } from "../../controller/shell/dispatch-encoding.js";
import type { ConnectRequestSchema, ConnectResponseSchema, ExecutionUpdateSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { partsWithin } from "../../shared/grpc/message-parts.js";
import { updateBytes } from "../../agent/runtime/agent.js";
import type { EncodedMessage } from "../../shared/grpc/service-definition.js";

export type ControllerMessage = MessageInitShape<typeof ConnectResponseSchema> | EncodedMessage<typeof ConnectResponseSchema>;
export type AgentMessage = MessageInitShape<typeof ConnectRequestSchema>;
/** An update as the floor agents send it: the texts the agent's size estimate reads are always set. */
export type UpdateInit = MessageInitShape<typeof ExecutionUpdateSchema> & { executionId: string; result: string; error: string };

/** The job the floor's executions belong to: the throughput scenario's, so that ids are as long. */
export const FLOOR_JOB = "throughput";
/** The handler that job names. */
export const FLOOR_HANDLER = "noop";
/** The controller term of every message: a single controller that started once. */
export const FLOOR_TERM = 1;
/** The job's revision: applied once. */
const REVISION = 1;
/** The throughput job sets no spec.timeoutSeconds: 0, no timeout (the field is then absent on the wire). */
const TIMEOUT_MS = 0;

/**
 * Which shards each agent runs, as placement spreads them: round robin of shards over the agents,
 * shard i to agent i mod `agents`. Index k of the result holds agent k's shards, ascending.
 */
export function roundRobinShards(shards: number, agents: number): number[][] {
  if (!Number.isInteger(agents) || agents < 1) throw new RangeError(`floor: agents is ${agents}; expected an integer of at least 1`);
  const owned: number[][] = Array.from({ length: agents }, () => []);
  for (let shard = 0; shard < shards; shard++) owned[shard % agents]!.push(shard);
  return owned;
}

/**
 * A W3C trace context as the controller's fire span injects it: one per fire, shared by every
 * execution of the fire (controller/shell/fire-tracing.ts). Version 00, sampled.
 */
export function fireTraceContext(): Record<string, string> {
  return { traceparent: `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01` };
}

/** One fire of the floor's job: its instant, its shard count and its trace context. */
export interface FloorFire {
  fireTime: number;
  shardCount: number;
  traceContext: Record<string, string>;
}

/**
 * The controller's ExecutionContext of `shard`'s first attempt at `fire`, with every field a
 * no-op job's run carries. Each shard is held under its own assignment of term 1 (generation
 * shard + 1, as assigned once when the job was applied), which its fencing token encodes.
 */
export function executionContext(fire: FloorFire, shard: number): ExecutionContext {
  const generation = shard + 1;
  return {
    executionId: executionId(FLOOR_JOB, fire.fireTime, shard, 1),
    job: FLOOR_JOB,
    shard,
    shardCount: fire.shardCount,
    shardParameter: "",
    parameter: "",
    fireTime: fire.fireTime,
    attempt: 1,
    revision: REVISION,
    handler: FLOOR_HANDLER,
    timeoutMs: TIMEOUT_MS,
    disconnectGraceMs: DEFAULT_CORE_CONFIG.disconnectGraceMs,
    fencingToken: fencingToken(FLOOR_TERM, generation),
    assignment: { job: FLOOR_JOB, shard, term: FLOOR_TERM, generation },
    traceContext: fire.traceContext,
  };
}

/**
 * The Dispatch messages that carry `executions` to one agent: split by the controller's
 * dispatchParts, each part encoded by the controller's own encodeDispatch.
 */
export function dispatchMessages(executions: readonly ExecutionContext[], term = FLOOR_TERM): EncodedMessage<typeof ConnectResponseSchema>[] {
  return dispatchParts(executions).map((part) => encodeDispatch(term, part));
}

/**
 * The terminal update of a run that started and ended within one batch: the agent then sends
 * only this, with both times (agent/core/report-book.ts).
 */
export function succeeded(id: string, startedAt: number, finishedAt: number): UpdateInit {
  return { executionId: id, state: ExecutionState.SUCCEEDED, startedAtUnixMs: BigInt(startedAt), finishedAtUnixMs: BigInt(finishedAt), result: "", error: "" };
}

/** The ExecutionUpdates messages of one turn's batch, split as the agent splits it. */
export function updateMessages(updates: readonly UpdateInit[]): AgentMessage[] {
  return partsWithin(updates, updateBytes).map((part) => ({ kind: { case: "executionUpdates", value: { updates: part } } }));
}
