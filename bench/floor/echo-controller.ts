/**
 * The echo controller: a process that serves AgentService.Connect as the controller serves it
 * (the same grpc-js server, built by the same helpers with the same options) and does only what
 * the transport must: welcomes each Hello, acks each heartbeat, sends each fire's executions as
 * Dispatch messages built and split as the controller builds them, and counts the terminal
 * updates that come back. No store, no core, no placement beyond round robin: what it costs per
 * execution is the floor under the controller's own cost. Started with child_process.fork by
 * bench/floor/floor-processes.ts; commands and reports are in ./ipc.ts.
 */
import { randomUUID } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { DEFAULT_CORE_CONFIG } from "../../controller/core/config.js";
import { AgentService, type ConnectRequest, type ConnectRequestSchema, type ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import {
  addService,
  createServer,
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  listen,
  shutdown,
  type CallContext,
  type MessageStream,
} from "../../shared/grpc/index.js";
import { VERSION } from "../../shared/version.js";
import type { EchoCommand, EchoReport, EchoTally } from "./ipc.js";
import { type ControllerMessage, dispatchMessages, executionContext, FLOOR_TERM, fireTraceContext, roundRobinShards } from "./messages.js";

type AgentStream = MessageStream<typeof ConnectRequestSchema, typeof ConnectResponseSchema>;

/** One fire sent: how many of its executions have not come back. */
interface Fire {
  index: number;
  executions: number;
  remaining: number;
}

/** How long a stopping echo controller waits for its calls to end before it cuts them. */
const SHUTDOWN_GRACE_MS = 2_000;

const TERM = BigInt(FLOOR_TERM);
const { heartbeatIntervalMs, leaseTtlMs, leaseMarginMs, dispatchAheadMs } = DEFAULT_CORE_CONFIG;

/** Welcomed agents' streams, by agent id. */
const streams = new Map<string, AgentStream>();
/** The welcomed agents in placement order (by id, numbers in ids compared as numbers); rebuilt when they change. */
let placementOrder: string[] | undefined;
/** Every execution sent and not yet back, with its fire. */
const outstanding = new Map<string, Fire>();
let fires = 0;
let lastFireTime = 0;
let stopping = false;
const tally: EchoTally = { agents: 0, dispatched: 0, dispatchMessages: 0, completed: 0, unsuccessful: 0, strays: 0, updateMessages: 0, heartbeatsAcked: 0 };

/** Sends a report to the parent; `then` runs once it is handed over (to exit only after it). */
function report(message: EchoReport, then?: () => void): void {
  if (process.send === undefined) then?.();
  else process.send(message, undefined, {}, () => then?.());
}

function fail(reason: string): void {
  report({ type: "failed", reason: `echo controller: ${reason}` });
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

function connect(stream: AgentStream, context: CallContext): void {
  const session = randomUUID();
  let agent: string | undefined;
  stream.onMessage((message: ConnectRequest) => {
    const kind = message.kind;
    if (kind.case === "hello") {
      if (agent !== undefined) {
        fail(`agent ${agent} sent a second Hello`);
        return;
      }
      agent = kind.value.agentId;
      if (streams.has(agent)) fail(`agent ${agent} connected twice (again from ${context.peer})`);
      streams.set(agent, stream);
      placementOrder = undefined;
      send(stream, {
        term: TERM,
        kind: { case: "welcome", value: { sessionId: session, heartbeatIntervalMs, leaseTtlMs, controllerVersion: VERSION, dispatchAheadMs } },
      });
      return;
    }
    if (agent === undefined) {
      fail(`a ${kind.case ?? "empty"} message came before the Hello, from ${context.peer}`);
      return;
    }
    switch (kind.case) {
      case "heartbeat":
        tally.heartbeatsAcked++;
        send(stream, {
          term: TERM,
          kind: { case: "heartbeatAck", value: { seq: kind.value.seq, leaseExpiresUnixMs: BigInt(Math.round(now()) + leaseTtlMs + leaseMarginMs), leaseTtlMs } },
        });
        return;
      case "executionUpdates":
        tally.updateMessages++;
        for (const update of kind.value.updates) counted(update.executionId, update.state);
        return;
      default:
        fail(`agent ${agent} sent a ${kind.case ?? "empty"} message, which no floor agent sends`);
    }
  });
  stream.onClose((closed) => {
    if (agent === undefined || streams.get(agent) !== stream) return;
    streams.delete(agent);
    placementOrder = undefined;
    if (!stopping && outstanding.size > 0) {
      fail(`agent ${agent}'s stream closed (${status[closed.code]}: ${closed.details}) with ${outstanding.size} executions outstanding`);
    }
  });
}

function send(stream: AgentStream, message: ControllerMessage): void {
  // The controller disconnects an agent whose send queue is full; here that is a broken run.
  if (!stream.send(message) && !stream.closed) fail(`an agent's send queue is full (${stream.queued} messages): it is not reading`);
}

/** One update back: a terminal one completes its execution, and the last of a fire completes the fire. */
function counted(executionId: string, state: ExecutionState): void {
  if (state === ExecutionState.RUNNING) return;
  const fire = outstanding.get(executionId);
  if (fire === undefined) {
    tally.strays++;
    return;
  }
  outstanding.delete(executionId);
  tally.completed++;
  if (state !== ExecutionState.SUCCEEDED) tally.unsuccessful++;
  if (--fire.remaining === 0) report({ type: "completed", trigger: fire.index, executions: fire.executions, at: now() });
}

/** Sends one fire: each connected agent gets its round-robin share of `shards` executions. */
function trigger(shards: number, agents: number): void {
  if (streams.size !== agents) {
    fail(`a trigger found ${streams.size} agents connected; ${agents} were expected`);
    return;
  }
  placementOrder ??= [...streams.keys()].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  const owned = roundRobinShards(shards, placementOrder.length);
  // A trigger's fire instant is its time; two fires of one job never share an instant (nor ids).
  lastFireTime = Math.max(Date.now(), lastFireTime + 1);
  const fireSpec = { fireTime: lastFireTime, shardCount: shards, traceContext: fireTraceContext() };
  const fire: Fire = { index: fires++, executions: shards, remaining: shards };
  placementOrder.forEach((agent, k) => {
    const contexts = owned[k]!.map((shard) => executionContext(fireSpec, shard));
    if (contexts.length === 0) return;
    for (const context of contexts) outstanding.set(context.executionId, fire);
    tally.dispatched += contexts.length;
    const stream = streams.get(agent)!;
    for (const message of dispatchMessages(contexts)) {
      tally.dispatchMessages++;
      send(stream, message);
    }
  });
}

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  for (const stream of streams.values()) stream.close(status.UNAVAILABLE, "the echo controller is stopping");
  streams.clear();
  await shutdown(server, SHUTDOWN_GRACE_MS);
  report({ type: "stopped" }, () => process.exit(0));
}

process.on("message", (command: EchoCommand) => {
  switch (command.type) {
    case "trigger":
      trigger(command.shards, command.agents);
      return;
    case "tally":
      report({ type: "tally", tally: { ...tally, agents: streams.size } });
      return;
    case "stop":
      void stop();
      return;
  }
});

// The parent going away ends this process too: a benchmark never leaves a server behind.
process.on("disconnect", () => process.exit(0));

// As the controller builds its gRPC server (controller/shell/servers.ts).
const server = createServer({ maxReceiveMessageBytes: DEFAULT_MAX_RECEIVE_MESSAGE_BYTES });
addService(server, AgentService, { connect }, { onError: (error, method) => fail(`${method} failed: ${error instanceof Error ? error.message : String(error)}`) });
listen(server, "127.0.0.1:0").then(
  (port) => report({ type: "listening", address: `127.0.0.1:${port}` }),
  (error: unknown) => {
    report({ type: "failed", reason: `echo controller: cannot listen: ${error instanceof Error ? error.message : String(error)}` }, () => process.exit(1));
  },
);
