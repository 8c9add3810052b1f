/**
 * A floor agent process: many agents that each do only what the transport must, each on its own
 * client and stream made by the product's client helper with the agent's options: a Hello, a
 * heartbeat every Welcome.heartbeat_interval_ms, and for every ExecutionContext received one
 * SUCCEEDED update, batched as the agent batches its reports (one ExecutionUpdates message per
 * agent per event-loop turn, split by partsWithin). No handler, no core. Started with
 * child_process.fork by bench/floor/floor-processes.ts; commands and reports are in ./ipc.ts.
 */
import { randomUUID } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { AgentService, type ConnectRequestSchema, type ConnectResponse, type ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { createClient, type Client, type MessageStream } from "../../shared/grpc/index.js";
import { VERSION } from "../../shared/version.js";
import type { FloorAgentCommand, FloorAgentCount, FloorAgentReport } from "./ipc.js";
import { type AgentMessage, FLOOR_HANDLER, succeeded, type UpdateInit, updateMessages } from "./messages.js";

type AgentStream = MessageStream<typeof ConnectResponseSchema, typeof ConnectRequestSchema>;

/** The agent's default ceiling of its reconnect backoff, which it gives its client (agent/runtime/agent-options.ts). */
const MAX_RECONNECT_BACKOFF_MS = 5_000;
/** What an agent heartbeats at when a Welcome says 0. */
const DEFAULT_HEARTBEAT_INTERVAL_MS = 500;

/** One instance id for the process, as an agent process has. */
const INSTANCE_ID = randomUUID();

const count: FloorAgentCount = { received: 0, echoed: 0, dispatchMessages: 0, updateMessages: 0, heartbeatsSent: 0, acksReceived: 0 };
const agents: FloorAgent[] = [];
/** Agents this process was told to start; it reports `welcomed` once that many were. */
let expected = 0;
let welcomed = 0;
let stopping = false;

/** Sends a report to the parent; `then` runs once it is handed over (to exit only after it). */
function report(message: FloorAgentReport, then?: () => void): void {
  if (process.send === undefined) then?.();
  else process.send(message, undefined, {}, () => then?.());
}

function fail(reason: string): void {
  report({ type: "failed", reason: `floor agent process ${process.pid}: ${reason}` });
}

/** One agent: a stream, a heartbeat timer, and the reports of the current turn. */
class FloorAgent {
  readonly #client: Client<typeof AgentService>;
  readonly #stream: AgentStream;
  #heartbeat: NodeJS.Timeout | undefined;
  #seq = 0n;
  #outbox: UpdateInit[] = [];
  #flush: NodeJS.Immediate | undefined;
  #welcomed = false;

  constructor(
    readonly id: string,
    controller: string,
  ) {
    this.#client = createClient(AgentService, controller, { maxReconnectBackoffMs: MAX_RECONNECT_BACKOFF_MS });
    this.#stream = this.#client.connect({ onError: (error) => fail(`agent ${id}'s stream listener failed: ${String(error)}`) });
    this.#stream.onMessage((message) => this.#onMessage(message));
    this.#stream.onClose((closed) => {
      this.#stopTimers();
      if (!stopping) fail(`agent ${id}'s stream closed (${status[closed.code]}: ${closed.details})`);
    });
    this.#send({
      kind: {
        case: "hello",
        value: { agentId: id, capacity: 1, handlers: [FLOOR_HANDLER], version: VERSION, maxConcurrent: 0, instanceId: INSTANCE_ID },
      },
    });
  }

  #onMessage(message: ConnectResponse): void {
    const kind = message.kind;
    switch (kind.case) {
      case "welcome": {
        if (this.#welcomed) return fail(`agent ${this.id} was welcomed twice on one stream`);
        this.#welcomed = true;
        this.#heartbeat = setInterval(() => this.#beat(), kind.value.heartbeatIntervalMs || DEFAULT_HEARTBEAT_INTERVAL_MS);
        if (++welcomed === expected) report({ type: "welcomed", agents: welcomed });
        return;
      }
      case "heartbeatAck":
        count.acksReceived++;
        return;
      case "dispatch": {
        count.dispatchMessages++;
        for (const context of kind.value.executions) {
          const at = Date.now();
          this.#outbox.push(succeeded(context.executionId, at, at));
        }
        count.received += kind.value.executions.length;
        // The turn's reports go out together at its end, as the agent's flush-soon sends them.
        this.#flush ??= setImmediate(() => this.#sendReports());
        return;
      }
      default:
        fail(`agent ${this.id} received a ${kind.case ?? "empty"} message, which the echo controller never sends`);
    }
  }

  #sendReports(): void {
    this.#flush = undefined;
    const updates = this.#outbox;
    this.#outbox = [];
    for (const message of updateMessages(updates)) {
      count.updateMessages++;
      this.#send(message);
    }
    count.echoed += updates.length;
  }

  #beat(): void {
    this.#seq++;
    count.heartbeatsSent++;
    this.#send({ kind: { case: "heartbeat", value: { seq: this.#seq } } });
  }

  #send(message: AgentMessage): void {
    // The agent closes a stream the controller does not read; here that is a broken run.
    if (!this.#stream.send(message) && !this.#stream.closed) fail(`agent ${this.id}'s send queue is full: the echo controller is not reading`);
  }

  #stopTimers(): void {
    clearInterval(this.#heartbeat);
    if (this.#flush !== undefined) clearImmediate(this.#flush);
    this.#flush = undefined;
  }

  stop(): void {
    this.#stopTimers();
    this.#stream.close(status.CANCELLED, "the floor agent stopped");
    this.#client.close();
  }
}

process.on("message", (command: FloorAgentCommand) => {
  switch (command.type) {
    case "start":
      if (expected > 0) return fail("started twice");
      expected = command.ids.length;
      for (const id of command.ids) agents.push(new FloorAgent(id, command.controller));
      return;
    case "count":
      report({ type: "count", count: { ...count } });
      return;
    case "stop":
      stopping = true;
      for (const agent of agents) agent.stop();
      report({ type: "stopped" }, () => process.exit(0));
      return;
  }
});

// The parent going away ends this process too: a benchmark never leaves load behind.
process.on("disconnect", () => process.exit(0));
