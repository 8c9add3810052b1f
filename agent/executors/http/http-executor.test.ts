import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { ExecutionContextSchema, HttpExecutorSchema, type ExecutionUpdate } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { HttpExecutor } from "./http-executor.js";

const FIRE = 1_700_000_000_000n;
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/** Term 3, generation 7: term * 2^32 + generation. */
const TOKEN = (3n << 32n) + 7n;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

type HttpInit = Omit<MessageInitShape<typeof HttpExecutorSchema>, "$typeName">;

/** Runs one HTTP execution and collects its reports; `terminal` resolves with the terminal one. */
function run(http: HttpInit, init: { timeoutMs?: number; fencingToken?: bigint } = {}) {
  const reports: ExecutionUpdate[] = [];
  let onTerminal!: (update: ExecutionUpdate) => void;
  const terminal = new Promise<ExecutionUpdate>((resolve) => (onTerminal = resolve));
  const executor = new HttpExecutor({
    agentId: "agent-1",
    maxResultBytes: 4096,
    report: (update) => {
      reports.push(update);
      if (update.state !== ExecutionState.RUNNING) onTerminal(update);
    },
  });
  const context = create(ExecutionContextSchema, {
    executionId: `billing/${FIRE}/3/1`,
    job: "billing",
    shard: 3,
    shardCount: 8,
    shardParameter: "shanghai",
    parameter: "month=current",
    fireTimeUnixMs: FIRE,
    attempt: 1,
    timeoutMs: init.timeoutMs ?? 0,
    traceContext: { traceparent: TRACEPARENT },
    fencingToken: init.fencingToken ?? TOKEN,
    revision: 7n,
    http: { method: "POST", connectTimeoutMs: 10_000, readTimeoutMs: 60_000, ...http },
  });
  const execution = executor.create(context);
  cleanups.push(() => execution.stop(ExecutionState.LOST, "test over"));
  execution.start();
  return { execution, reports, terminal };
}

interface Received {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
  /** Resolves when the server sees the request's connection go away. */
  closed: Promise<void>;
}

/** A real HTTP server on 127.0.0.1 that records each request and answers with `respond`. */
async function server(respond: (request: Received, response: ServerResponse) => void) {
  const received: Received[] = [];
  let onRequest: (request: Received) => void = () => {};
  const http = createServer((request, response) => {
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk: string) => (body += chunk));
    request.on("end", () => {
      const closed = once(response, "close").then(() => {});
      const seen: Received = { method: request.method ?? "", url: request.url ?? "", headers: request.headers, body, closed };
      received.push(seen);
      onRequest(seen);
      respond(seen, response);
    });
  });
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  cleanups.push(() => {
    http.closeAllConnections();
    return new Promise<void>((resolve) => http.close(() => resolve()));
  });
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    /** The next request, once its body has arrived. */
    nextRequest: () => new Promise<Received>((resolve) => (onRequest = resolve)),
  };
}

describe("HttpExecutor", () => {
  it("reports SUCCEEDED for a 2xx status, with the tail of the response body as the result", async () => {
    const { url } = await server((_request, response) => response.writeHead(201).end(`${"x".repeat(10_000)}created\n`));
    const { reports, terminal } = run({ url: `${url}/jobs` });
    const done = await terminal;
    expect(reports.map((r) => r.state)).toEqual([ExecutionState.RUNNING, ExecutionState.SUCCEEDED]);
    expect(done.result.endsWith("xcreated")).toBe(true);
    expect(Buffer.byteLength(done.result)).toBeLessThanOrEqual(4096);
  });

  it("sends the execution context as JSON, with the execution id, fencing token, revision and trace context in headers", async () => {
    const http = await server((_request, response) => response.end("ok"));
    const done = await run({ url: `${http.url}/hooks/billing?token=secret`, headers: { Authorization: "Bearer t0ken", "X-Team": "finance" } }).terminal;
    expect(done).toMatchObject({ state: ExecutionState.SUCCEEDED, result: "ok" });
    const [request] = http.received;
    expect(request?.method).toBe("POST");
    expect(request?.url).toBe("/hooks/billing?token=secret");
    expect(request?.headers).toMatchObject({
      "content-type": "application/json",
      authorization: "Bearer t0ken",
      "x-team": "finance",
      "x-shardline-execution-id": `billing/${FIRE}/3/1`,
      "shardline-fencing-token": String(TOKEN),
      "shardline-revision": "7",
      traceparent: TRACEPARENT,
    });
    expect(JSON.parse(request?.body ?? "")).toEqual({
      executionId: `billing/${FIRE}/3/1`,
      job: "billing",
      shard: 3,
      shardCount: 8,
      shardParameter: "shanghai",
      parameter: "month=current",
      fireTime: "2023-11-14T22:13:20.000Z",
      attempt: 1,
      agentId: "agent-1",
      fencingToken: String(TOKEN),
      revision: 7,
    });
  });

  it("sends the fencing token in the Shardline-Fencing-Token header, in full, over a header of that name in the spec", async () => {
    const http = await server((_request, response) => response.end("ok"));
    // 2^63 - 1, the largest token below 2^63: far past 2^53, where a number would lose digits.
    const token = ((2n ** 31n - 1n) << 32n) + 4_294_967_295n;
    const done = await run({ url: http.url, body: "{}", headers: { "Shardline-Fencing-Token": "1" } }, { fencingToken: token }).terminal;
    expect(done.state).toBe(ExecutionState.SUCCEEDED);
    expect(http.received[0]?.headers["shardline-fencing-token"]).toBe("9223372036854775807");
    expect(http.received[0]?.body).toBe("{}");
  });

  it("takes a ${env:NAME} header value from the agent's environment, and fails naming the header when it is not set", async () => {
    const http = await server((_request, response) => response.end("ok"));
    process.env.SHARDLINE_TEST_API_TOKEN = "Bearer from-env";
    try {
      const done = await run({ url: http.url, headers: { Authorization: "${env:SHARDLINE_TEST_API_TOKEN}" } }).terminal;
      expect(done.state).toBe(ExecutionState.SUCCEEDED);
      expect(http.received[0]?.headers.authorization).toBe("Bearer from-env");
    } finally {
      delete process.env.SHARDLINE_TEST_API_TOKEN;
    }
    const missing = await run({ url: http.url, headers: { Authorization: "${env:SHARDLINE_TEST_API_TOKEN}" } }).terminal;
    expect(missing.state).toBe(ExecutionState.FAILED);
    expect(missing.error).toContain("spec.http.headers.Authorization: ${env:SHARDLINE_TEST_API_TOKEN} names no environment variable");
    expect(http.received).toHaveLength(1);
  });

  it("sends the spec's body as it is, with the spec's method and content type", async () => {
    const http = await server((_request, response) => response.writeHead(204).end());
    const done = await run({ url: http.url, method: "PUT", body: "month=current", headers: { "Content-Type": "text/plain" } }).terminal;
    expect(done).toMatchObject({ state: ExecutionState.SUCCEEDED, result: "" });
    expect(http.received[0]).toMatchObject({ method: "PUT", body: "month=current", headers: { "content-type": "text/plain" } });
  });

  it("fails a non-2xx status, with the status and the tail of the body", async () => {
    const { url } = await server((_request, response) => response.writeHead(500).end("database is down\n"));
    expect(await run({ url }).terminal).toMatchObject({ state: ExecutionState.FAILED, error: "HTTP 500: database is down" });
  });

  it("fails a redirect: it is not followed", async () => {
    const { url } = await server((_request, response) => response.writeHead(302, { location: "/elsewhere" }).end());
    expect(await run({ url }).terminal).toMatchObject({ state: ExecutionState.FAILED, error: "HTTP 302" });
  });

  it("fails with a read timeout when the server accepts but never answers, and drops the connection", async () => {
    const http = await server(() => {});
    const arrived = http.nextRequest();
    const { terminal } = run({ url: `${http.url}/slow?token=secret`, readTimeoutMs: 100 });
    const request = await arrived;
    const done = await terminal;
    expect(done).toMatchObject({ state: ExecutionState.FAILED, error: `read timeout: POST ${http.url}/slow sent nothing for 100 ms` });
    await request.closed;
  });

  it("fails with a network error when nothing listens", async () => {
    const http = createServer();
    http.listen(0, "127.0.0.1");
    await once(http, "listening");
    const { port } = http.address() as AddressInfo;
    await new Promise((resolve) => http.close(resolve));
    const done = await run({ url: `http://127.0.0.1:${port}/` }).terminal;
    expect(done.state).toBe(ExecutionState.FAILED);
    expect(done.error).toMatch(new RegExp(`^network error: POST http://127\\.0\\.0\\.1:${port}/ failed: .*ECONNREFUSED`));
  });

  it("fails with a connect timeout when the server's accept queue is full", async () => {
    // A listener whose event loop is blocked: the kernel completes handshakes into its accept
    // queue (backlog 1 holds two), then drops further SYNs, so the next connect hangs.
    const listener = spawn(
      process.execPath,
      [
        "-e",
        `const s = require("node:net").createServer();
         s.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => {
           process.stdout.write(s.address().port + "\\n");
           Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
         });`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    cleanups.push(async () => {
      if (listener.exitCode === null && listener.signalCode === null) {
        listener.kill("SIGKILL");
        await once(listener, "exit");
      }
    });
    const [line] = (await once(listener.stdout, "data")) as [Buffer];
    const url = `http://127.0.0.1:${Number(String(line).trim())}/`;

    // The requests that still fit into the queue connect, and time out reading; then one cannot connect.
    const errors: string[] = [];
    for (let attempt = 0; attempt < 8; attempt++) {
      const done = await run({ url, connectTimeoutMs: 150, readTimeoutMs: 150 }).terminal;
      expect(done.state).toBe(ExecutionState.FAILED);
      errors.push(done.error);
      if (done.error.startsWith("connect timeout")) break;
    }
    expect(errors.at(-1)).toBe(`connect timeout: no connection for POST ${url} within 150 ms`);
    expect(errors.slice(0, -1).every((error) => error.startsWith("read timeout"))).toBe(true);
  });

  it("reports TIMED_OUT after the execution's timeout and aborts the request", async () => {
    const http = await server(() => {});
    const arrived = http.nextRequest();
    const { terminal } = run({ url: http.url }, { timeoutMs: 100 });
    const request = await arrived;
    expect(await terminal).toMatchObject({ state: ExecutionState.TIMED_OUT, error: "timed out after 100 ms" });
    await request.closed;
  });

  it("cancels: reports CANCELLED at once and aborts the request", async () => {
    const http = await server(() => {});
    const arrived = http.nextRequest();
    const { execution, terminal } = run({ url: http.url });
    const request = await arrived;
    execution.stop(ExecutionState.CANCELLED, "cancelled by an operator");
    expect(execution.finished).toBe(true);
    expect(await terminal).toMatchObject({ state: ExecutionState.CANCELLED, error: "cancelled by an operator" });
    await request.closed;
  });

  it("reports LOST when fenced and aborts the request", async () => {
    const http = await server(() => {});
    const arrived = http.nextRequest();
    const { execution, terminal } = run({ url: http.url });
    const request = await arrived;
    execution.stop(ExecutionState.LOST, "fenced: no heartbeat ack within the lease");
    expect(await terminal).toMatchObject({ state: ExecutionState.LOST });
    await request.closed;
  });

  it("fails an execution without a usable URL, without reporting RUNNING", async () => {
    const { reports, terminal } = run({ url: "ftp://example.com/file" });
    expect(await terminal).toMatchObject({ state: ExecutionState.FAILED, error: 'the execution names no valid http or https URL: "ftp://example.com/file"' });
    expect(reports).toHaveLength(1);
  });
});
