import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { status, type Server } from "@grpc/grpc-js";
import {
  AgentService,
  ConnectResponseSchema,
  ExecutionContextSchema,
  type ConnectRequest,
  type ConnectRequestSchema,
  type ExecutionUpdate,
  type Hello,
} from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { AssignmentSchema, type Assignment, type ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { addService, createServer, listen, shutdown, type GrpcStatus, type MessageStream } from "../../../shared/grpc/index.js";
import type { HandlerMap } from "../../sdk.js";
import { Agent, type AgentEvents } from "../agent.js";
import type { AgentOptions } from "../agent-options.js";

/**
 * A controller played by a test over real gRPC on 127.0.0.1, and helpers to connect real Agents
 * to it: for the agent's tests, which script what a controller says and check what the agent
 * answers. Everything started here is stopped by runCleanups (call it in afterEach).
 */

/** What runCleanups undoes, last first; a test file may push its own. */
export const cleanups: (() => Promise<void> | void)[] = [];

/** Stops everything started since the last call, last first. */
export async function runCleanups(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
}

type Kind = NonNullable<ConnectRequest["kind"]["case"]>;
type ValueOf<K extends Kind> = Extract<ConnectRequest["kind"], { case: K }>["value"];
type ResponseKind = NonNullable<MessageInitShape<typeof ConnectResponseSchema>["kind"]>;

export const HEARTBEAT_MS = 50;
export const LEASE_MS = 300;
export const FIRE = 1_700_000_000_000n;

/** A promise and its resolver. */
export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

interface Waiter {
  kind: Kind;
  match: (value: never, index: never) => boolean;
  resolve: (value: never) => void;
}

/**
 * One agent stream as the scripted controller sees it: every message recorded, heartbeats
 * answered while autoAck is on, and take() to await the next message of a kind.
 */
export class ScriptedSession {
  readonly received: ConnectRequest[] = [];
  readonly closed: Promise<GrpcStatus>;
  autoAck = true;
  term: bigint;
  #consumed = new Set<number>();
  #waiters: Waiter[] = [];

  constructor(
    readonly stream: MessageStream<typeof ConnectRequestSchema, typeof ConnectResponseSchema>,
    readonly hello: Hello,
    term: bigint,
  ) {
    this.term = term;
    this.closed = new Promise((resolve) => stream.onClose(resolve));
  }

  /** Records a message and wakes whoever waits for it. */
  receive(message: ConnectRequest): void {
    const index = this.received.push(message) - 1;
    if (message.kind.case === "heartbeat" && this.autoAck) {
      this.send({ case: "heartbeatAck", value: { seq: message.kind.value.seq } });
    }
    for (const waiter of [...this.#waiters]) {
      if (this.#tryTake(index, waiter)) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        return;
      }
    }
  }

  /** The first message of `kind` not taken yet that matches, now or when it arrives. */
  take<K extends Kind>(kind: K, match: (value: ValueOf<K>, index: number) => boolean = () => true): Promise<ValueOf<K>> {
    return new Promise((resolve) => {
      const waiter = { kind, match, resolve } as unknown as Waiter;
      for (let index = 0; index < this.received.length; index++) {
        if (this.#tryTake(index, waiter)) return;
      }
      this.#waiters.push(waiter);
    });
  }

  /** Every execution update received so far, in order. */
  updates(): ExecutionUpdate[] {
    return this.received.flatMap((m) => (m.kind.case === "executionUpdates" ? m.kind.value.updates : []));
  }

  /** Waits until the updates received include one of `id` in `state`. */
  async update(id: string, state: ExecutionState): Promise<ExecutionUpdate> {
    for (;;) {
      const found = this.updates().find((u) => u.executionId === id && u.state === state);
      if (found) return found;
      await this.take("executionUpdates");
    }
  }

  /** Index in `received` of the first message matching. */
  indexOf(match: (message: ConnectRequest) => boolean): number {
    return this.received.findIndex(match);
  }

  send(kind: ResponseKind, term = this.term): void {
    this.stream.send(create(ConnectResponseSchema, { term, kind }));
  }

  welcome(dispatchAheadMs = 0): void {
    this.send({ case: "welcome", value: { sessionId: `s-${Math.random()}`, heartbeatIntervalMs: HEARTBEAT_MS, leaseTtlMs: LEASE_MS, dispatchAheadMs } });
  }

  snapshot(...add: Assignment[]): void {
    this.send({ case: "assignmentUpdate", value: { snapshot: true, add } });
  }

  #tryTake(index: number, waiter: Waiter): boolean {
    if (this.#consumed.has(index)) return false;
    const message = this.received[index]!;
    if (message.kind.case !== waiter.kind || !waiter.match(message.kind.value as never, index as never)) return false;
    this.#consumed.add(index);
    waiter.resolve(message.kind.value as never);
    return true;
  }
}

/** A controller played by the test over real gRPC on 127.0.0.1: it only records and obeys the script. */
export class ScriptedController {
  readonly sessions: ScriptedSession[] = [];
  #waiters: ((session: ScriptedSession) => void)[] = [];
  #taken = 0;
  term = 1n;

  private constructor(
    readonly server: Server,
    readonly port: number,
  ) {}

  static async start(port = 0): Promise<ScriptedController> {
    const server = createServer();
    const arrived = (session: ScriptedSession): void => controller.#arrived(session);
    const currentTerm = (): bigint => controller.term;
    addService(server, AgentService, {
      connect: (stream) => {
        let session: ScriptedSession | undefined;
        stream.onMessage((message) => {
          if (session) {
            session.receive(message);
          } else if (message.kind.case === "hello") {
            session = new ScriptedSession(stream, message.kind.value, currentTerm());
            arrived(session);
          } else {
            stream.close(status.FAILED_PRECONDITION, "hello first");
          }
        });
      },
    });
    const bound = await listen(server, `127.0.0.1:${port}`);
    const controller = new ScriptedController(server, bound);
    cleanups.push(() => controller.close());
    return controller;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The next stream that said Hello, in arrival order. */
  nextSession(): Promise<ScriptedSession> {
    const ready = this.sessions[this.#taken];
    if (ready) {
      this.#taken++;
      return Promise.resolve(ready);
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Cuts every stream and stops listening. */
  close(): Promise<void> {
    for (const session of this.sessions) session.stream.close(status.UNAVAILABLE, "controller going away");
    return shutdown(this.server, 0);
  }

  #arrived(session: ScriptedSession): void {
    this.sessions.push(session);
    const waiter = this.#waiters.shift();
    if (waiter) {
      this.#taken++;
      waiter(session);
    }
  }
}

export function startAgent(controller: ScriptedController, handlers: HandlerMap, options: Partial<AgentOptions> = {}): Agent {
  const agent = new Agent({
    controller: controller.address,
    id: "agent-1",
    handlers,
    labels: { zone: "eu-1" },
    capacity: 2,
    version: "9.9.9-test",
    reconnect: { initialMs: 10, maxMs: 100 },
    ...options,
  });
  cleanups.push(() => agent.stop());
  agent.start();
  return agent;
}

/** The next occurrence of an agent event whose arguments match. */
export function nextEvent<E extends keyof AgentEvents>(agent: Agent, event: E, match: (...args: AgentEvents[E]) => boolean = () => true): Promise<AgentEvents[E]> {
  return new Promise((resolve) => {
    const listener = (...args: AgentEvents[E]): void => {
      if (!match(...args)) return;
      agent.off(event, listener);
      resolve(args);
    };
    agent.on(event, listener);
  });
}

export function assignment(job: string, shard: number, term: bigint, generation: bigint): Assignment {
  return create(AssignmentSchema, { shard: { job, shard }, term, generation });
}

export type DispatchInit = Pick<MessageInitShape<typeof ExecutionContextSchema>, "handler" | "timeoutMs" | "script" | "http" | "fireTimeUnixMs" | "attempt" | "traceContext" | "revision">;

export function dispatch(session: ScriptedSession, id: string, on: Assignment, init: DispatchInit = {}): void {
  const shard = on.shard!;
  session.send({
    case: "dispatch",
    value: {
      executions: [
        create(ExecutionContextSchema, {
          executionId: id,
          job: shard.job,
          shard: shard.shard,
          shardCount: 4,
          shardParameter: `param-${shard.shard}`,
          parameter: "month=current",
          fireTimeUnixMs: init.fireTimeUnixMs ?? FIRE,
          attempt: init.attempt ?? 1,
          revision: init.revision ?? 0n,
          handler: init.handler ?? (init.script || init.http ? "" : "work"),
          timeoutMs: init.timeoutMs ?? 0,
          assignment: on,
          ...(init.script ? { script: init.script } : {}),
          ...(init.http ? { http: init.http } : {}),
          ...(init.traceContext ? { traceContext: init.traceContext } : {}),
        }),
      ],
    },
  });
}

/** Connects an agent to a fresh scripted controller, welcomes it and hands it `held`. */
export async function connected(handlers: HandlerMap, held: Assignment[] = [], options: Partial<AgentOptions> = {}, dispatchAheadMs = 0) {
  const controller = await ScriptedController.start();
  const agent = startAgent(controller, handlers, options);
  const session = await controller.nextSession();
  const ready = nextEvent(agent, "assignments");
  session.welcome(dispatchAheadMs);
  session.snapshot(...held);
  await ready;
  return { controller, agent, session };
}

