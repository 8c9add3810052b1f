import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { ShardlineError } from "../../shared/errors.js";
import type { ConnectRequestSchema, ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { type CallContext, isInternalFailure, type MessageStream, toGrpcStatus } from "../../shared/grpc/index.js";
import type { Logger } from "../../shared/logging.js";
import { VERSION } from "../../shared/version.js";
import type { ControllerCore } from "../core/controller-core.js";
import type { AgentCommand, ExecutionContext } from "../core/messages.js";
import { MESSAGE_BUDGET_BYTES, partsWithin } from "../../shared/grpc/message-parts.js";
import type { Outbound, SessionClose } from "../core/outbox.js";
import type { CoreDriver } from "./core-driver.js";
import { type AgentRequest, AgentStreamProtocol } from "./agent-stream-protocol.js";
import { encodeDispatch, executionToProto } from "./dispatch-encoding.js";
import { assignmentToProto } from "./proto-mapping.js";

type AgentStream = MessageStream<typeof ConnectRequestSchema, typeof ConnectResponseSchema>;
type Response = MessageInitShape<typeof ConnectResponseSchema>;

/** Who is on a session: its address, its agent once its Hello is accepted, its certificate's names with mutual TLS. */
interface SessionName {
  peer: string;
  agent?: string;
  identities?: readonly string[];
}

/** Default of AgentSessionsOptions.helloTimeoutMs. */
export const DEFAULT_HELLO_TIMEOUT_MS = 10_000;

/** Options of AgentSessions. */
export interface AgentSessionsOptions {
  /**
   * How long a stream may stay open without a Hello: one that never says who it is holds a
   * stream and its buffers for nothing. Agents send Hello at once. Default 10 s.
   */
  helloTimeoutMs?: number;
}

/**
 * The controller's side of `AgentService.Connect`: decodes each agent's messages into core
 * events, and encodes the core's commands into stream messages, coalescing consecutive commands
 * of one kind for one agent into a single message (one gRPC message costs 10-15 us on these cores: see docs/architecture.md, "Performance targets").
 *
 * A stream is a stranger's until its Hello: every message is checked (agent-stream-protocol.ts)
 * before it reaches the core, a bad one ends that stream alone with a status naming the field,
 * and nothing a stream sends is applied to any other agent's state.
 */
export class AgentSessions {
  private readonly streams = new Map<string, AgentStream>();
  /** Who is on each session, by agent id once its Hello is accepted and by address: for log lines. */
  private readonly names = new Map<string, SessionName>();
  /** The session of each agent id said in a Hello, to tell when a stream takes over another's id. */
  private readonly sessionOfAgent = new Map<string, string>();
  private readonly helloTimeoutMs: number;

  constructor(
    private readonly core: ControllerCore,
    private readonly driver: CoreDriver,
    private readonly logger: Logger,
    options: AgentSessionsOptions = {},
  ) {
    this.helloTimeoutMs = options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS;
  }

  /** The AgentService.Connect implementation. */
  readonly connect = (stream: AgentStream, context: CallContext): void => {
    const session = randomUUID();
    const protocol = new AgentStreamProtocol();
    this.streams.set(session, stream);
    const name: SessionName = { peer: context.peer, ...(context.peerIdentities === undefined ? {} : { identities: context.peerIdentities }) };
    this.names.set(session, name);
    const refuse = (error: unknown): void => {
      const { code, details } = toGrpcStatus(error);
      if (isInternalFailure(error)) this.logger.error({ err: error, session, agent: name.agent }, "an agent's message failed in the controller");
      this.logger.warn({ session, peer: context.peer, agent: name.agent, code, details }, "closing an agent stream after a bad message");
      stream.close(code, details);
    };
    const helloTimer = setTimeout(() => {
      const details = `hello: none within ${this.helloTimeoutMs} ms of opening the stream; the first message must be a hello`;
      this.logger.warn({ session, peer: context.peer, code: status.DEADLINE_EXCEEDED, details }, "closing an agent stream that said no hello");
      stream.close(status.DEADLINE_EXCEEDED, details);
    }, this.helloTimeoutMs);
    helloTimer.unref();
    stream.onMessage((message) => {
      let request: AgentRequest;
      try {
        request = protocol.accept(message);
      } catch (error) {
        refuse(error);
        return;
      }
      if (request.kind === "hello") clearTimeout(helloTimer);
      try {
        this.apply(session, request, name);
      } catch (error) {
        // The core refuses a Hello it finds wrong, and any message on a stream it has already
        // ended (its agent's lease expired, or a newer stream of the same agent replaced it):
        // that stream is about to be closed with the core's reason, which the agent must get.
        if (request.kind !== "hello" && error instanceof ShardlineError && error.code === "failed-precondition") {
          this.logger.debug({ session, agent: name.agent, kind: request.kind }, "ignored a message on a stream the controller has ended");
          return;
        }
        refuse(error);
      }
    });
    stream.onClose(() => {
      clearTimeout(helloTimer);
      this.streams.delete(session);
      this.names.delete(session);
      if (name.agent !== undefined && this.sessionOfAgent.get(name.agent) === session) this.sessionOfAgent.delete(name.agent);
      this.driver.post((now) => this.core.streamClosed(session, now));
      this.driver.forgetSession(session);
    });
  };

  /** Hands one checked message to the core. Throws what the core throws. */
  private apply(session: string, request: AgentRequest, name: SessionName): void {
    switch (request.kind) {
      case "hello": {
        const { hello } = request;
        // With mutual TLS an agent is who its certificate says: it cannot connect under another
        // agent's id and take that agent's shards.
        if (name.identities !== undefined && !name.identities.includes(hello.agentId)) {
          throw new ShardlineError(
            "permission-denied",
            `hello.agent_id: ${hello.agentId} is not a name of this client's certificate (${name.identities.join(", ") || "none"}); ` +
              "with mutual TLS an agent connects only under an id its certificate names (its CN or a DNS SAN)",
          );
        }
        this.driver.postFromAgent(session, false, (now) => this.core.hello(session, hello, now, name.peer));
        // Refused (another process holds the id): the core ends this stream; it speaks for nobody.
        if (this.core.agentOfSession(session) === undefined) return;
        name.agent = hello.agentId;
        this.noteTakeover(session, hello.agentId, name.peer);
        return;
      }
      case "heartbeat": {
        const { seq, warning } = request;
        if (warning !== undefined) this.logger.warn({ session, peer: name.peer, agent: name.agent }, warning);
        // Its ack skips the queue of other work when it waits for nothing (CoreDriver.postFromAgent).
        this.driver.postFromAgent(session, true, (now) => this.core.heartbeat(session, seq, now));
        return;
      }
      case "execution-updates": {
        const { reports } = request;
        this.driver.postFromAgent(session, false, (now) => this.core.executionUpdates(session, reports, now));
        return;
      }
      case "release": {
        const { released } = request;
        this.driver.postFromAgent(session, false, (now) => this.core.release(session, released, now));
        return;
      }
      case "goodbye": {
        const { reason } = request;
        this.driver.postFromAgent(session, false, (now) => this.core.goodbye(session, reason, now));
        return;
      }
      case "ignored":
        if (request.warning !== undefined) this.logger.warn({ session, peer: name.peer, agent: name.agent }, request.warning);
        return;
    }
  }

  /**
   * A Hello accepted with the id of an agent connected on another stream replaces that stream
   * (the core closes it): the same process reconnected before its old stream was seen to die (a
   * second process is refused by the core, unless the agent sends no Hello.instance_id). The line
   * names both addresses so that an operator can tell.
   */
  private noteTakeover(session: string, agent: string, peer: string): void {
    const previous = this.sessionOfAgent.get(agent);
    this.sessionOfAgent.set(agent, session);
    if (previous === undefined || previous === session || !this.streams.has(previous)) return;
    const previousPeer = this.names.get(previous)?.peer;
    this.logger.warn(
      { agent, session, peer, previousSession: previous, previousPeer },
      `agent ${agent} connected again from ${peer}; its stream from ${previousPeer ?? "an unknown address"} is replaced`,
    );
  }

  /**
   * Sends the core's messages and closes the streams it asked to close. Each stream is ordered on
   * its own, and no order holds between two streams, so a batch's messages go out stream by
   * stream, each stream's in the core's order, its neighbouring commands merged (coalesce): the
   * core makes a fire's executions shard by shard, and with neighbouring shards on different
   * agents a fire of a thousand shards on a hundred agents would otherwise be a thousand
   * Dispatches of one execution instead of a hundred of ten.
   */
  readonly deliver = (messages: Outbound[], closes: SessionClose[]): void => {
    for (const [session, commands] of bySession(messages)) {
      let i = 0;
      while (i < commands.length) {
        let merged = commands[i]!;
        let j = i + 1;
        if (j < commands.length) merged = mergeable(merged);
        while (j < commands.length) {
          const next = coalesce(merged, commands[j]!);
          if (next === undefined) break;
          merged = next;
          j++;
        }
        this.send(session, merged);
        i = j;
      }
    }
    for (const { session, reason, code } of closes) {
      const stream = this.streams.get(session);
      if (stream === undefined) continue;
      this.streams.delete(session);
      stream.close(code === undefined ? status.ABORTED : toGrpcStatus(new ShardlineError(code, reason)).code, reason);
      if (code !== undefined) {
        const fields = { session, peer: this.names.get(session)?.peer, code, reason };
        // A second live process under one id is a misconfiguration; a restarted one waiting out its predecessor's lease is not.
        if (code === "already-exists") this.logger.warn(fields, "refused an agent's Hello: another process holds its id");
        else this.logger.info(fields, "refused an agent's Hello for now");
      }
    }
  };

  /** Ends every agent stream, for a controller shutdown. */
  closeAll(reason: string): void {
    for (const [session, stream] of this.streams) {
      this.streams.delete(session);
      stream.close(status.UNAVAILABLE, reason);
    }
  }

  get size(): number {
    return this.streams.size;
  }

  /** The messages waiting in each greeted agent's send queue, for metrics. */
  sendQueues(): { agent: string; queued: number }[] {
    const queues: { agent: string; queued: number }[] = [];
    for (const [session, stream] of this.streams) {
      const agent = this.names.get(session)?.agent;
      if (agent !== undefined) queues.push({ agent, queued: stream.queued });
    }
    return queues;
  }

  private send(session: string, command: AgentCommand): void {
    if (command.kind !== "dispatch") {
      this.sendOne(session, command);
      return;
    }
    for (const executions of dispatchParts(command.executions)) {
      if (!this.sendOne(session, { kind: "dispatch", executions })) return;
    }
  }

  /** Sends one message; false when the stream is gone or was just disconnected. */
  private sendOne(session: string, command: AgentCommand): boolean {
    const stream = this.streams.get(session);
    if (stream === undefined) return false;
    const message = command.kind === "dispatch" ? encodeDispatch(this.core.term, command.executions) : toResponse(this.core.term, command);
    if (stream.send(message)) return true;
    // Not full: the agent half-closed (it said goodbye) and the stream ends once what is queued
    // is out; its onClose tells the core. Nothing is lost that the agent still wanted.
    if (stream.queued < stream.maxQueued) return true;
    this.disconnectStuck(session, stream);
    return false;
  }

  /**
   * The agent stopped reading its stream: what it has not read fills its bounded send queue. It
   * must not slow the controller or the other agents, nor hold the memory of an ever-growing
   * backlog, so it is disconnected and handled as any agent that lost its stream: its shards stay
   * fenced until its lease expires, then move. The stream's onClose tells the core.
   */
  private disconnectStuck(session: string, stream: AgentStream): void {
    const { agent, peer } = this.names.get(session) ?? {};
    // Only a greeted agent is sent anything, so it has a name; the session id is a fallback.
    const who = agent === undefined ? `the agent on session ${session}` : `agent ${agent}`;
    const reason =
      `${who} is not reading its stream: ${stream.maxQueued} messages wait in its send queue, the controller's limit; ` +
      "disconnected, its shards move once its lease expires";
    this.logger.warn({ agent, session, peer, queued: stream.queued, maxQueued: stream.maxQueued }, reason);
    this.streams.delete(session);
    stream.close(status.RESOURCE_EXHAUSTED, reason);
  }
}

/**
 * Splits a dispatch into messages of at most MESSAGE_BUDGET_BYTES by estimate (an execution
 * larger than that goes alone). A fire of a job with a 32 KiB pod template and hundreds of shards
 * on one agent would otherwise make one message the agent refuses, and its stream would fail the
 * same way after every reconnect. The estimate counts only the fields that can be large, so that
 * the common case costs a few additions per execution.
 */
export function dispatchParts(executions: readonly ExecutionContext[], budget = MESSAGE_BUDGET_BYTES): ExecutionContext[][] {
  return partsWithin(executions, estimatedBytes, budget);
}

/**
 * An upper estimate of an execution's encoded size: UTF-16 lengths (a UTF-8 byte count can be up
 * to three per code unit) of the strings that have no bound but the manifest's, plus 1 KiB for
 * the rest (ids, numbers, trace context, a script's or request's short fields).
 */
function estimatedBytes(execution: ExecutionContext): number {
  let bytes = 1024 + 3 * (execution.parameter.length + execution.shardParameter.length);
  if (execution.kubernetes !== undefined) bytes += 3 * execution.kubernetes.podTemplateJson.length;
  if (execution.http !== undefined) {
    bytes += 3 * (execution.http.body.length + execution.http.url.length);
    for (const [name, value] of Object.entries(execution.http.headers)) bytes += 3 * (name.length + value.length);
  }
  if (execution.script !== undefined) {
    for (const arg of execution.script.args) bytes += 3 * arg.length;
    for (const [name, value] of Object.entries(execution.script.env)) bytes += 3 * (name.length + value.length);
  }
  for (const outcome of execution.fireOutcome ?? []) bytes += 128 + 3 * (outcome.error?.length ?? 0);
  return bytes;
}

/**
 * Merges two consecutive commands to one agent when one message can say both, in order. The
 * first is a merge of this function's own making (or a fresh copy), so it is extended in place:
 * a turn that dispatches a thousand executions to one agent merges in linear time.
 */
function coalesce(first: AgentCommand, second: AgentCommand): AgentCommand | undefined {
  if (first.kind === "dispatch" && second.kind === "dispatch") {
    for (const execution of second.executions) first.executions.push(execution);
    return first;
  }
  // An agent applies snapshot, then adds, then revokes, and ignores an older (term, generation):
  // so two updates merge safely unless the second replaces the whole set.
  if (first.kind === "assignments" && second.kind === "assignments" && !second.snapshot) {
    for (const ref of second.add) first.add.push(ref);
    for (const ref of second.revoke) first.revoke.push(ref);
    return first;
  }
  if (first.kind === "cancel" && second.kind === "cancel" && first.reason === second.reason) {
    for (const id of second.executionIds) first.executionIds.push(id);
    return first;
  }
  return undefined;
}

/** Each session's commands in the order made, the sessions in the order of their first command. */
function bySession(messages: readonly Outbound[]): Map<string, AgentCommand[]> {
  const sessions = new Map<string, AgentCommand[]>();
  for (const { session, command } of messages) {
    const commands = sessions.get(session);
    if (commands === undefined) sessions.set(session, [command]);
    else commands.push(command);
  }
  return sessions;
}

/** A copy of a command that coalesce may extend without touching the core's own arrays. */
function mergeable(command: AgentCommand): AgentCommand {
  switch (command.kind) {
    case "dispatch":
      return { ...command, executions: [...command.executions] };
    case "assignments":
      return { ...command, add: [...command.add], revoke: [...command.revoke] };
    case "cancel":
      return { ...command, executionIds: [...command.executionIds] };
    default:
      return command;
  }
}

function toResponse(term: number, command: AgentCommand): Response {
  const base = { term: BigInt(term) };
  switch (command.kind) {
    case "welcome":
      return {
        ...base,
        kind: {
          case: "welcome",
          value: {
            sessionId: command.sessionId,
            heartbeatIntervalMs: command.heartbeatIntervalMs,
            leaseTtlMs: command.leaseTtlMs,
            controllerVersion: VERSION,
            dispatchAheadMs: command.dispatchAheadMs,
          },
        },
      };
    case "heartbeat-ack":
      return { ...base, kind: { case: "heartbeatAck", value: { seq: BigInt(command.seq), leaseExpiresUnixMs: BigInt(command.leaseExpiresAt), leaseTtlMs: command.leaseTtlMs } } };
    case "assignments":
      return {
        ...base,
        kind: {
          case: "assignmentUpdate",
          value: { snapshot: command.snapshot, add: command.add.map(assignmentToProto), revoke: command.revoke.map(assignmentToProto) },
        },
      };
    case "dispatch":
      // What encodeDispatch sends, as a message (sendOne sends the bytes).
      return { ...base, kind: { case: "dispatch", value: { executions: command.executions.map(executionToProto) } } };
    case "cancel":
      return { ...base, kind: { case: "cancel", value: { executionIds: command.executionIds, reason: command.reason } } };
  }
}
