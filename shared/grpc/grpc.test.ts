import { afterEach, describe, expect, it } from "vitest";
import { Client as GrpcClient, credentials, Metadata, status, type Server, type StatusObject } from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { ShardlineError } from "../errors.js";
import { AdminService, ListExecutionsResponseSchema } from "../gen/shardline/v1/admin_service_pb.js";
import { ExecutionSchema, JobSchema, type Job } from "../gen/shardline/v1/types_pb.js";
import { AgentService, ConnectRequestSchema, ConnectResponseSchema } from "../gen/shardline/v1/agent_service_pb.js";
import {
  addService,
  createClient,
  createServer,
  fromGrpcError,
  listen,
  shutdown,
  toGrpcStatus,
  type AddServiceOptions,
  type CallContext,
  type GrpcStatus,
  type MessageStream,
  type ServiceImpl,
} from "./index.js";
import { encodeRepeatedInSlices } from "./server.js";

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Starts a server on 127.0.0.1, port 0, and registers its shutdown for after the test. */
async function startServer(register: (server: Server) => void): Promise<string> {
  const server = createServer();
  register(server);
  const port = await listen(server, "127.0.0.1:0");
  cleanups.push(() => shutdown(server, 100));
  return `127.0.0.1:${port}`;
}

function adminClient(address: string) {
  const client = createClient(AdminService, address);
  cleanups.push(() => client.close());
  return client;
}

function agentClient(address: string) {
  const client = createClient(AgentService, address);
  cleanups.push(() => client.close());
  return client;
}

/** A raw grpc-js client that sends bytes as given, to play a stranger speaking bad protobuf. */
function rawClient(address: string): GrpcClient {
  const client = new GrpcClient(address, credentials.createInsecure());
  cleanups.push(() => client.close());
  return client;
}

const identity = (bytes: Buffer): Buffer => bytes;

/** A promise and the function that settles it, for awaiting an event. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function closedStatus(stream: { onClose(listener: (status: GrpcStatus) => void): void }): Promise<GrpcStatus> {
  return new Promise((resolve) => stream.onClose(resolve));
}

function aborted(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    else signal.addEventListener("abort", () => resolve(signal.reason), { once: true });
  });
}

const jobs: Job[] = [
  create(JobSchema, { name: "billing-rollup", paused: false, revision: 3n }),
  create(JobSchema, { name: "log-compaction", paused: true, revision: 1n }),
];

const fakeAdmin: Partial<ServiceImpl<typeof AdminService>> = {
  async listJobs() {
    return { jobs };
  },
  async getJob(request) {
    const job = jobs.find((j) => j.name === request.name);
    if (!job) throw new ShardlineError("not-found", `job "${request.name}" does not exist`);
    return { job };
  },
};

describe("status mapping", () => {
  it("maps every ShardlineError code to its gRPC status and back", () => {
    const pairs = [
      ["invalid-argument", status.INVALID_ARGUMENT],
      ["not-found", status.NOT_FOUND],
      ["already-exists", status.ALREADY_EXISTS],
      ["failed-precondition", status.FAILED_PRECONDITION],
      ["unavailable", status.UNAVAILABLE],
    ] as const;
    for (const [code, grpcCode] of pairs) {
      const sent = toGrpcStatus(new ShardlineError(code, `it was ${code}`));
      expect(sent).toEqual({ code: grpcCode, details: `it was ${code}` });
      const received = fromGrpcError(sent);
      expect(received.code).toBe(code);
      expect(received.message).toBe(`it was ${code}`);
    }
  });

  it("hides anything that is not a ShardlineError behind a generic INTERNAL", () => {
    const failure = new TypeError("cannot read properties of undefined (reading 'x') at /srv/secret.ts:12");
    const sent = toGrpcStatus(failure);
    expect(sent.code).toBe(status.INTERNAL);
    expect(sent.details).not.toContain("secret");
    expect(toGrpcStatus("a string").code).toBe(status.INTERNAL);
    expect(toGrpcStatus(new ShardlineError("internal", "disk path /var/x")).details).not.toContain("/var/x");
  });

  it("tells a client to retry on UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED", () => {
    for (const code of [status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.CANCELLED]) {
      expect(fromGrpcError({ code, details: "x" }).code).toBe("unavailable");
    }
    expect(fromGrpcError({ code: status.UNKNOWN, details: "x" }).code).toBe("internal");
    expect(fromGrpcError(new Error("boom")).code).toBe("internal");
  });
});

describe("unary calls", () => {
  it("round-trips an AdminService call", async () => {
    const address = await startServer((server) => addService(server, AdminService, fakeAdmin));
    const client = adminClient(address);

    const listed = await client.listJobs({});
    expect(listed.jobs.map((j) => j.name)).toEqual(["billing-rollup", "log-compaction"]);
    expect(listed.jobs[0]?.revision).toBe(3n);

    const got = await client.getJob({ name: "log-compaction" });
    expect(got.job?.paused).toBe(true);
  });

  it("delivers a ShardlineError thrown by a handler with the same code and message", async () => {
    const address = await startServer((server) => addService(server, AdminService, fakeAdmin));
    const client = adminClient(address);

    const error = await client.getJob({ name: "nope" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as ShardlineError).code).toBe("not-found");
    expect((error as ShardlineError).message).toBe('job "nope" does not exist');
  });

  it("answers an unexpected exception with INTERNAL and reports it to the server's onError", async () => {
    const reported = deferred<[unknown, string]>();
    const options: AddServiceOptions = { onError: (error, method) => reported.resolve([error, method]) };
    const address = await startServer((server) =>
      addService(
        server,
        AdminService,
        {
          async listJobs() {
            throw new RangeError("index 7 out of range in /srv/controller/core.ts");
          },
        },
        options,
      ),
    );
    const client = adminClient(address);

    const error = (await client.listJobs({}).catch((e: unknown) => e)) as ShardlineError;
    expect(error.code).toBe("internal");
    expect(error.message).not.toContain("/srv");
    const [reportedError, method] = await reported.promise;
    expect(reportedError).toBeInstanceOf(RangeError);
    expect(method).toBe("ListJobs");
  });

  it("answers an unimplemented method with a failed-precondition ShardlineError", async () => {
    const address = await startServer((server) => addService(server, AdminService, fakeAdmin));
    const error = (await adminClient(address).pauseJob({ name: "x" }).catch((e: unknown) => e)) as ShardlineError;
    expect(error).toBeInstanceOf(ShardlineError);
    expect(error.code).toBe("failed-precondition");
  });

  it("aborts the handler's signal when the client aborts, and rejects with the abort reason", async () => {
    const started = deferred<CallContext>();
    const address = await startServer((server) =>
      addService(server, AdminService, {
        async listJobs(_request, context) {
          started.resolve(context);
          await aborted(context.signal);
          return {};
        },
      }),
    );
    const client = adminClient(address);
    const controller = new AbortController();

    const call = client.listJobs({}, { signal: controller.signal }).catch((e: unknown) => e);
    const context = await started.promise;
    expect(context.peer).toMatch(/^127\.0\.0\.1:\d+$/);
    controller.abort(new Error("user pressed ctrl-c"));

    expect(((await call) as Error).message).toBe("user pressed ctrl-c");
    expect(await aborted(context.signal)).toBeInstanceOf(ShardlineError);
  });

  it("fails a call past its deadline as unavailable, and aborts the handler", async () => {
    const started = deferred<CallContext>();
    const address = await startServer((server) =>
      addService(server, AdminService, {
        async listJobs(_request, context) {
          started.resolve(context);
          await aborted(context.signal);
          return {};
        },
      }),
    );

    const error = (await adminClient(address).listJobs({}, { deadlineMs: 50 }).catch((e: unknown) => e)) as ShardlineError;
    expect(error.code).toBe("unavailable");
    await aborted((await started.promise).signal);
  });

  it("passes request metadata to the handler", async () => {
    const address = await startServer((server) =>
      addService(server, AdminService, {
        async getJob(_request, context) {
          return { job: { name: String(context.metadata.get("traceparent")[0]) } };
        },
      }),
    );
    const response = await adminClient(address).getJob({ name: "x" }, { metadata: { traceparent: "00-abc-def-01" } });
    expect(response.job?.name).toBe("00-abc-def-01");
  });

  it("answers calls past maxConcurrentCalls with RESOURCE_EXHAUSTED naming the limit, without running them", async () => {
    const entered: (() => void)[] = [];
    const twoIn = deferred();
    let ran = 0;
    const address = await startServer((server) =>
      addService(
        server,
        AdminService,
        {
          async listJobs() {
            // The first two calls wait until the test lets them go.
            if (++ran <= 2) {
              await new Promise<void>((resolve) => {
                entered.push(resolve);
                if (entered.length === 2) twoIn.resolve();
              });
            }
            return { jobs };
          },
        },
        { maxConcurrentCalls: 2 },
      ),
    );
    const client = adminClient(address);

    const held = [client.listJobs({}), client.listJobs({})];
    await twoIn.promise;
    const refused = (await client.listJobs({}).catch((e: unknown) => e)) as ShardlineError;
    expect(refused).toBeInstanceOf(ShardlineError);
    // RESOURCE_EXHAUSTED reaches a TypeScript caller as "unavailable": retry after a backoff.
    expect(refused.code).toBe("unavailable");
    expect((refused.cause as StatusObject).code).toBe(status.RESOURCE_EXHAUSTED);
    expect(refused.message).toBe("shardline.v1.AdminService is already serving 2 calls, its limit of calls at once (fixed: no flag raises it); retry after a backoff");
    expect(ran).toBe(2);

    for (const release of entered) release();
    expect((await Promise.all(held)).map((r) => r.jobs.length)).toEqual([2, 2]);
    // The places are free again.
    expect((await client.listJobs({})).jobs.length).toBe(2);
    expect(ran).toBe(3);
  });

  it("frees a place when a call fails, and refuses a limit below 1", async () => {
    const address = await startServer((server) => addService(server, AdminService, fakeAdmin, { maxConcurrentCalls: 1 }));
    const client = adminClient(address);
    for (let i = 0; i < 3; i++) expect(((await client.getJob({ name: "nope" }).catch((e: unknown) => e)) as ShardlineError).code).toBe("not-found");
    expect((await client.getJob({ name: "billing-rollup" })).job?.name).toBe("billing-rollup");
    expect(() => addService(createServer(), AdminService, fakeAdmin, { maxConcurrentCalls: 0 })).toThrow(/maxConcurrentCalls: 0 is not allowed/);
  });

  it("sends a response encoded in slices, which the client decodes whole and in order", async () => {
    const ids = Array.from({ length: 1234 }, (_, i) => `sweep/1700000000000/${i}/1`);
    let turnsBetweenSlices = 0;
    const address = await startServer((server) =>
      addService(server, AdminService, {
        async listExecutions() {
          // Counts event-loop turns taken while the response is encoded.
          let encoding = true;
          const count = (): void => {
            if (!encoding) return;
            turnsBetweenSlices++;
            setImmediate(count);
          };
          setImmediate(count);
          const response = await encodeRepeatedInSlices(ListExecutionsResponseSchema, "executions", ExecutionSchema, ids, (id) => ({ id, shard: 1 }));
          encoding = false;
          return response;
        },
      }),
    );

    const listed = await adminClient(address).listExecutions({});
    expect(listed.executions.map((e) => e.id)).toEqual(ids);
    expect(listed.executions.every((e) => e.shard === 1)).toBe(true);
    expect(turnsBetweenSlices).toBeGreaterThanOrEqual(2);
    await expect(encodeRepeatedInSlices(ListExecutionsResponseSchema, "nope", ExecutionSchema, ids, (id) => ({ id }))).rejects.toThrow(
      /shardline\.v1\.ListExecutionsResponse\.nope is not a repeated shardline\.v1\.Execution field/,
    );
  });
});

describe("malformed requests", () => {
  it("answers undecodable bytes on Connect with INVALID_ARGUMENT and keeps serving others", async () => {
    const received: unknown[] = [];
    const address = await startServer((server) =>
      addService(server, AgentService, {
        connect(stream) {
          stream.onMessage((message) => {
            received.push(message);
            stream.send({ term: 1n, kind: { case: "heartbeatAck", value: { seq: 1n } } });
          });
        },
      }),
    );

    const raw = rawClient(address);
    const call = raw.makeBidiStreamRequest("/shardline.v1.AgentService/Connect", identity, identity, new Metadata());
    call.on("error", () => {});
    const rejected = new Promise<StatusObject>((resolve) => call.once("status", resolve));
    // Field 1 (hello), length-delimited, claims 100 bytes and carries 2.
    call.write(Buffer.from([0x0a, 0x64, 0x01, 0x02]));
    const { code, details } = await rejected;
    expect(code).toBe(status.INVALID_ARGUMENT);
    expect(details).toContain("malformed shardline.v1.ConnectRequest");
    expect(received).toEqual([]);

    const stream = agentClient(address).connect();
    const answered = new Promise((resolve) => stream.onMessage(resolve));
    stream.send({ kind: { case: "heartbeat", value: { seq: 1n } } });
    expect(await answered).toMatchObject({ term: 1n });
    stream.close(status.CANCELLED, "done");
  });

  it("answers undecodable bytes on a unary method with INVALID_ARGUMENT", async () => {
    const address = await startServer((server) => addService(server, AdminService, fakeAdmin));
    const raw = rawClient(address);
    const result = await new Promise<{ code?: number; details?: string }>((resolve) => {
      raw.makeUnaryRequest("/shardline.v1.AdminService/GetJob", identity, identity, Buffer.from([0xff, 0xff]), (error) =>
        resolve(error ?? {}),
      );
    });
    expect(result.code).toBe(status.INVALID_ARGUMENT);
    expect(result.details).toContain("malformed shardline.v1.GetJobRequest");
  });
});

describe("AgentService.Connect streams", () => {
  it("round-trips several messages both ways and closes OK on both sides when the agent ends", async () => {
    const serverClosed = deferred<GrpcStatus>();
    const address = await startServer((server) =>
      addService(server, AgentService, {
        connect(stream) {
          stream.onClose(serverClosed.resolve);
          stream.onMessage((message) => {
            switch (message.kind.case) {
              case "hello":
                stream.send({ term: 7n, kind: { case: "welcome", value: { sessionId: `s-${message.kind.value.agentId}` } } });
                break;
              case "heartbeat":
                stream.send({ term: 7n, kind: { case: "heartbeatAck", value: { seq: message.kind.value.seq } } });
                break;
              default:
                stream.close(status.INVALID_ARGUMENT, `unexpected ${String(message.kind.case)}`);
            }
          });
        },
      }),
    );

    const stream = agentClient(address).connect();
    const received: string[] = [];
    stream.onMessage((message) => {
      received.push(message.kind.case === "welcome" ? message.kind.value.sessionId : `ack ${message.kind.case === "heartbeatAck" ? message.kind.value.seq : "?"}`);
    });
    const clientClosed = closedStatus(stream);

    stream.send({ kind: { case: "hello", value: { agentId: "agent-1", handlers: ["billing-rollup"] } } });
    for (let seq = 1n; seq <= 3n; seq++) stream.send({ kind: { case: "heartbeat", value: { seq } } });
    stream.send(create(ConnectRequestSchema, { kind: { case: "heartbeat", value: { seq: 4n } } }));
    stream.end();

    expect((await clientClosed).code).toBe(status.OK);
    expect((await serverClosed.promise).code).toBe(status.OK);
    expect(received).toEqual(["s-agent-1", "ack 1", "ack 2", "ack 3", "ack 4"]);
  });

  it("tells the server when the agent cancels: onClose fires with CANCELLED and the signal aborts", async () => {
    const serverSide = deferred<{ closed: Promise<GrpcStatus>; context: CallContext }>();
    const address = await startServer((server) =>
      addService(server, AgentService, {
        connect(stream, context) {
          const closed = closedStatus(stream);
          stream.onMessage(() => serverSide.resolve({ closed, context }));
        },
      }),
    );

    const stream = agentClient(address).connect();
    stream.send({ kind: { case: "hello", value: { agentId: "a" } } });
    const { closed, context } = await serverSide.promise;
    const clientClosed = closedStatus(stream);
    stream.close(status.CANCELLED, "agent shutting down");

    expect(await closed).toEqual({ code: status.CANCELLED, details: "cancelled by the client" });
    await aborted(context.signal);
    expect(await clientClosed).toEqual({ code: status.CANCELLED, details: "agent shutting down" });
    expect(stream.send({ kind: { case: "goodbye", value: {} } })).toBe(false);
  });

  it("tells the agent when the server closes: the status code and details arrive, after the messages before it", async () => {
    const address = await startServer((server) =>
      addService(server, AgentService, {
        connect(stream) {
          stream.onMessage(() => {
            stream.send({ term: 2n, kind: { case: "redirect", value: {} } });
            stream.close(status.ALREADY_EXISTS, "agent a is connected elsewhere");
          });
        },
      }),
    );

    const stream = agentClient(address).connect();
    const received: unknown[] = [];
    stream.onMessage((message) => received.push(message.kind.case));
    const closed = closedStatus(stream);
    stream.send({ kind: { case: "hello", value: { agentId: "a" } } });

    const { code, details } = await closed;
    expect(code).toBe(status.ALREADY_EXISTS);
    expect(details).toBe("agent a is connected elsewhere");
    expect(received).toEqual(["redirect"]);
    expect(fromGrpcError({ code, details }).code).toBe("already-exists");
  });

  it("fires onClose exactly once, also for a listener added after the close", async () => {
    const address = await startServer((server) =>
      addService(server, AgentService, {
        connect(stream) {
          stream.onMessage(() => stream.close(status.FAILED_PRECONDITION, "no"));
        },
      }),
    );
    const stream = agentClient(address).connect();
    let calls = 0;
    stream.onClose(() => calls++);
    const first = closedStatus(stream);
    stream.onMessage(() => {});
    stream.send({ kind: { case: "hello", value: { agentId: "a" } } });
    await first;
    stream.close(status.CANCELLED, "again");
    stream.end();
    expect(await closedStatus(stream)).toEqual({ code: status.FAILED_PRECONDITION, details: "no" });
    expect(calls).toBe(1);
  });

  it("queues sends while a client does not read, refuses them past maxQueued, and drains when it reads", async () => {
    const maxQueued = 100;
    const bound = deferred<{ stream: MessageStream<typeof ConnectRequestSchema, typeof ConnectResponseSchema>; accepted: number }>();
    const payload = "x".repeat(4096);
    const address = await startServer((server) =>
      addService(
        server,
        AgentService,
        {
          connect(stream) {
            let accepted = 0;
            // One message per event-loop turn, letting the transport move data in between: a
            // reading client keeps up with this pace, so only a client that stops reading lets
            // the send queue fill.
            const pump = (): void => {
              if (!stream.send({ term: 1n, kind: { case: "welcome", value: { sessionId: payload } } })) {
                bound.resolve({ stream, accepted });
                return;
              }
              accepted++;
              setImmediate(pump);
            };
            pump();
          },
        },
        { maxQueued },
      ),
    );

    // The client opens the stream but adds no message listener, so it reads nothing.
    const client = agentClient(address).connect();
    const { stream, accepted } = await bound.promise;
    expect(stream.maxQueued).toBe(maxQueued);
    expect(stream.queued).toBe(maxQueued);
    // The rest sits in bounded buffers (grpc-js's and HTTP/2's windows), not in the client.
    expect(accepted - maxQueued).toBeLessThan(1_000);
    expect(stream.send({ term: 1n })).toBe(false);
    expect(stream.queued).toBe(maxQueued);

    const drained = new Promise<void>((resolve) => stream.onDrain(resolve));
    let received = 0;
    const allReceived = deferred();
    client.onMessage(() => {
      if (++received === accepted) allReceived.resolve();
    });
    await drained;
    expect(stream.queued).toBe(0);
    await allReceived.promise;
    const closed = closedStatus(client);
    stream.end();
    expect((await closed).code).toBe(status.OK);
    expect(received).toBe(accepted);
  });

  it("rejects a message that cannot be encoded in the sender's hands, not on the wire", async () => {
    const address = await startServer((server) => addService(server, AgentService, { connect() {} }));
    const stream = agentClient(address).connect();
    expect(() => stream.send({ kind: { case: "heartbeat", value: { seq: "not a number" as unknown as bigint } } })).toThrow();
    stream.close(status.CANCELLED, "done");
  });

  it("closes the stream with INTERNAL when a server listener throws, and reports the error", async () => {
    const reported = deferred<unknown>();
    const address = await startServer((server) =>
      addService(
        server,
        AgentService,
        {
          connect(stream) {
            stream.onMessage(() => {
              throw new Error("bug in the controller");
            });
          },
        },
        { onError: (error) => reported.resolve(error) },
      ),
    );
    const stream = agentClient(address).connect();
    const closed = closedStatus(stream);
    stream.send({ kind: { case: "hello", value: { agentId: "a" } } });
    const { code, details } = await closed;
    expect(code).toBe(status.INTERNAL);
    expect(details).not.toContain("bug");
    expect(((await reported.promise) as Error).message).toBe("bug in the controller");
  });
});

describe("server-streaming calls", () => {
  it("streams events until the handler returns", async () => {
    const address = await startServer((server) =>
      addService(server, AdminService, {
        async watchEvents(request, stream) {
          for (let i = 0; i < 3; i++) stream.send({ type: "fire", job: request.job, shard: i });
          await stream.drained();
        },
      }),
    );
    const shards: number[] = [];
    for await (const event of adminClient(address).watchEvents({ job: "billing-rollup" })) {
      expect(event.job).toBe("billing-rollup");
      shards.push(event.shard);
    }
    expect(shards).toEqual([0, 1, 2]);
  });

  it("cancels the call on the server when the client breaks out of the loop", async () => {
    const serverSignal = deferred<AbortSignal>();
    const address = await startServer((server) =>
      addService(server, AdminService, {
        async watchEvents(_request, stream, context) {
          serverSignal.resolve(context.signal);
          stream.send({ type: "agent.joined" });
          await aborted(context.signal);
          expect(stream.closed).toBe(true);
          expect(stream.send({ type: "too late" })).toBe(false);
        },
      }),
    );
    for await (const event of adminClient(address).watchEvents({})) {
      expect(event.type).toBe("agent.joined");
      break;
    }
    const reason = await aborted(await serverSignal.promise);
    expect(reason).toBeInstanceOf(ShardlineError);
  });

  it("cancels the call when the client's signal aborts, ending the loop with the reason", async () => {
    const serverSignal = deferred<AbortSignal>();
    const address = await startServer((server) =>
      addService(server, AdminService, {
        async watchEvents(_request, stream, context) {
          serverSignal.resolve(context.signal);
          stream.send({ type: "agent.joined" });
          await aborted(context.signal);
        },
      }),
    );
    const controller = new AbortController();
    const seen: string[] = [];
    const error = await (async () => {
      for await (const event of adminClient(address).watchEvents({}, { signal: controller.signal })) {
        seen.push(event.type);
        controller.abort(new Error("stop watching"));
      }
    })().catch((e: unknown) => e);
    expect(seen).toEqual(["agent.joined"]);
    expect((error as Error).message).toBe("stop watching");
    await aborted(await serverSignal.promise);
  });

  it("ends the loop with the handler's ShardlineError, after the events sent before it", async () => {
    const address = await startServer((server) =>
      addService(server, AdminService, {
        async watchEvents(request, stream) {
          stream.send({ type: "first" });
          throw new ShardlineError("not-found", `job "${request.job}" does not exist`);
        },
      }),
    );
    const seen: string[] = [];
    const error = await (async () => {
      for await (const event of adminClient(address).watchEvents({ job: "ghost" })) seen.push(event.type);
    })().catch((e: unknown) => e);
    expect(seen).toEqual(["first"]);
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as ShardlineError).code).toBe("not-found");
    expect((error as ShardlineError).message).toBe('job "ghost" does not exist');
  });
});

describe("listen and shutdown", () => {
  it("binds port 0 to a free port and refuses a port already in use", async () => {
    const address = await startServer((server) => addService(server, AdminService, fakeAdmin));
    const port = Number(address.split(":")[1]);
    expect(port).toBeGreaterThan(0);

    const second = createServer();
    cleanups.push(() => shutdown(second, 0));
    const error = (await listen(second, `127.0.0.1:${port}`).catch((e: unknown) => e)) as ShardlineError;
    expect(error).toBeInstanceOf(ShardlineError);
    expect(error.code).toBe("unavailable");
  });

  it("cuts open streams once the grace period is over", async () => {
    const server = createServer();
    addService(server, AgentService, { connect(stream) { stream.onMessage(() => {}); } });
    const port = await listen(server, "127.0.0.1:0");
    const stream = agentClient(`127.0.0.1:${port}`).connect();
    const closed = closedStatus(stream);
    stream.onMessage(() => {});
    stream.send({ kind: { case: "hello", value: { agentId: "a" } } });
    await shutdown(server, 20);
    expect((await closed).code).not.toBe(status.OK);
  });
});
