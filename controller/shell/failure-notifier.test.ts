import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentService, type ConnectResponse } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../../shared/grpc/index.js";
import { type RunningController, startController } from "./controller.js";
import type { ExecutionView } from "../../shared/execution-view.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Received {
  headers: IncomingHttpHeaders;
  body: ExecutionView;
}

/** A webhook receiver on 127.0.0.1 answering with `statuses` in turn, then 200; a status of 0 never answers. */
async function receiver(statuses: number[] = []) {
  const received: Received[] = [];
  const waiters: (() => void)[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      received.push({ headers: request.headers, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as ExecutionView });
      const status = statuses.shift() ?? 200;
      if (status !== 0) {
        response.statusCode = status;
        response.end();
      }
      waiters.splice(0).forEach((wake) => wake());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/shardline?token=s3cr3t`,
    received,
    /** Resolves once `count` requests have arrived. */
    async count(count: number): Promise<Received[]> {
      while (received.length < count) await new Promise<void>((resolve) => waiters.push(resolve));
      return received;
    },
  };
}

/** A controller on 127.0.0.1:0 with SQLite in a temp dir; its warn and error lines are kept. */
async function controller(initialBackoffMs = 5, maxInFlight = 100) {
  const dir = await mkdtemp(join(tmpdir(), "shardline-notifier-"));
  const lines: { level: number; msg: string; job?: string; execution?: string }[] = [];
  const logger = pino({ level: "warn" }, { write: (line: string) => lines.push(JSON.parse(line) as (typeof lines)[number]) });
  const running: RunningController = await startController({
    listen: "127.0.0.1:0",
    http: "127.0.0.1:0",
    store: `sqlite:${join(dir, "state.db")}`,
    heartbeatIntervalMs: 50,
    leaseTtlMs: 400,
    logger,
    failureWebhooks: { initialBackoffMs, attemptTimeoutMs: 10_000, maxInFlight },
  });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await running.stop();
  };
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  cleanups.push(stop);
  const admin = createClient(AdminService, running.grpcAddress);
  cleanups.push(() => admin.close());
  return { address: running.grpcAddress, admin, lines, stop };
}

function manifest(name: string, webhook?: { url: string; headers?: Record<string, string> }): string {
  return JSON.stringify({
    apiVersion: "shardline.dev/v1",
    kind: "ShardedJob",
    metadata: { name },
    spec: { handler: "work", ...(webhook ? { onFailure: { webhook } } : {}) },
  });
}

/** An agent speaking the proto by hand; it heartbeats until closed and reports what it is told to. */
async function rawAgent(address: string) {
  const client = createClient(AgentService, address);
  const stream = client.connect();
  const inbox: ConnectResponse[] = [];
  const waiters: (() => void)[] = [];
  stream.onMessage((message) => {
    inbox.push(message);
    waiters.splice(0).forEach((wake) => wake());
  });
  let seq = 0n;
  const heartbeat = setInterval(() => stream.send({ kind: { case: "heartbeat", value: { seq: ++seq } } }), 50);
  const close = (): void => {
    clearInterval(heartbeat);
    client.close();
  };
  cleanups.push(close);
  const next = async <K extends ConnectResponse["kind"]["case"]>(kind: K): Promise<Extract<ConnectResponse["kind"], { case: K }>["value"]> => {
    for (;;) {
      const index = inbox.findIndex((m) => m.kind.case === kind);
      if (index >= 0) return inbox.splice(index, 1)[0]!.kind.value as never;
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  };
  stream.send({ kind: { case: "hello", value: { agentId: "py-1", handlers: ["work"], capacity: 1 } } });
  await next("welcome");
  return {
    /** Waits for the next dispatch and answers each execution in it with `state`. */
    async finishNext(state: ExecutionState, error = ""): Promise<string> {
      const [execution] = (await next("dispatch")).executions;
      const executionId = execution!.executionId;
      stream.send({ kind: { case: "executionUpdates", value: { updates: [{ executionId, state: ExecutionState.RUNNING, startedAtUnixMs: 1_700_000_000_000n }] } } });
      stream.send({ kind: { case: "executionUpdates", value: { updates: [{ executionId, state, error, finishedAtUnixMs: 1_700_000_001_000n }] } } });
      return executionId;
    },
    /** Waits for the next dispatch and leaves it running. */
    async takeNext(): Promise<string> {
      const [execution] = (await next("dispatch")).executions;
      stream.send({ kind: { case: "executionUpdates", value: { updates: [{ executionId: execution!.executionId, state: ExecutionState.RUNNING }] } } });
      return execution!.executionId;
    },
    close,
  };
}

describe("failure webhooks", () => {
  it("POSTs a failed execution as JSON with the job's headers", async () => {
    const hook = await receiver();
    const { address, admin } = await controller();
    await admin.applyJob({ manifest: manifest("rollup", { url: hook.url, headers: { Authorization: "Bearer abc", "Content-Type": "text/plain" } }) });
    const agent = await rawAgent(address);
    await admin.triggerJob({ name: "rollup" });
    const id = await agent.finishNext(ExecutionState.FAILED, "ledger locked");

    const [delivery] = await hook.count(1);
    expect(delivery!.headers).toMatchObject({ authorization: "Bearer abc", "content-type": "application/json" });
    expect(delivery!.body).toEqual<ExecutionView>({
      id,
      job: "rollup",
      shard: 0,
      fireTime: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) as string,
      agent: "py-1",
      attempt: 1,
      state: "failed",
      startedAt: "2023-11-14T22:13:20.000Z",
      finishedAt: "2023-11-14T22:13:21.000Z",
      error: "ledger locked",
      result: null,
      cause: "trigger",
      queuePosition: null,
      fireComplete: false,
      waitingReason: null,
      revision: 1,
      traceId: null,
    });
  });

  it("retries with backoff until a 2xx: 500, 500, then 200 is three attempts", async () => {
    const hook = await receiver([500, 500]);
    const { address, admin, stop, lines } = await controller();
    await admin.applyJob({ manifest: manifest("rollup", { url: hook.url }) });
    const agent = await rawAgent(address);
    await admin.triggerJob({ name: "rollup" });
    const id = await agent.finishNext(ExecutionState.TIMED_OUT, "timed out after 10 ms");

    const deliveries = await hook.count(3);
    expect(deliveries.map((d) => [d.body.id, d.body.state])).toEqual([
      [id, "timed-out"],
      [id, "timed-out"],
      [id, "timed-out"],
    ]);
    // stop() waits for the notifier: whatever it would still send has been sent by then.
    agent.close();
    await stop();
    expect(hook.received).toHaveLength(3);
    expect(lines.filter((line) => line.msg.startsWith("failure webhook"))).toEqual([]);
  });

  it("gives up after the last attempt and logs an error naming the job, the execution and the last status", async () => {
    const hook = await receiver([503, 503, 503, 503, 503]);
    const { address, admin, stop, lines } = await controller();
    await admin.applyJob({ manifest: manifest("rollup", { url: hook.url }) });
    const agent = await rawAgent(address);
    await admin.triggerJob({ name: "rollup" });
    const id = await agent.finishNext(ExecutionState.FAILED, "boom");
    await hook.count(5);
    agent.close();
    await stop();
    expect(hook.received).toHaveLength(5);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 50,
        job: "rollup",
        execution: id,
        msg: `failure webhook for job rollup, execution ${id} gave up after 5 attempts; last: HTTP 503`,
      }),
    );
  });

  it("sends nothing for a job without a webhook, and logs a warn line instead", async () => {
    const hook = await receiver();
    const { address, admin, lines } = await controller();
    await admin.applyJob({ manifest: manifest("quiet") });
    await admin.applyJob({ manifest: manifest("loud", { url: hook.url }) });
    const agent = await rawAgent(address);

    await admin.triggerJob({ name: "quiet" });
    const quiet = await agent.finishNext(ExecutionState.FAILED, "disk full");
    await admin.triggerJob({ name: "loud" });
    const loud = await agent.finishNext(ExecutionState.FAILED, "disk full");
    // The later failure's delivery has arrived: the earlier one, with no webhook, sent nothing.
    await hook.count(1);
    expect(hook.received.map((d) => d.body.id)).toEqual([loud]);
    expect(lines).toContainEqual(expect.objectContaining({ level: 40, job: "quiet", execution: quiet, msg: `execution ${quiet} of job quiet failed: disk full` }));
  });

  it("POSTs an aborted rollout, told apart by its event field, and logs one for a job without a webhook", async () => {
    const hook = await receiver();
    const { admin, lines } = await controller();
    const rolling = (name: string, parameter: string, webhook?: { url: string }) =>
      JSON.stringify({
        apiVersion: "shardline.dev/v1",
        kind: "ShardedJob",
        metadata: { name },
        spec: { handler: "work", parameter, rollout: { steps: [{ weight: 50 }, { pause: {} }] }, ...(webhook ? { onFailure: { webhook } } : {}) },
      });
    await admin.applyJob({ manifest: rolling("rollup", "v1", { url: hook.url }) });
    await admin.applyJob({ manifest: rolling("rollup", "v2", { url: hook.url }) });
    await admin.abortRollout({ job: "rollup" });
    const [delivery] = await hook.count(1);
    expect(delivery!.body).toEqual({
      event: "rollout.aborted",
      job: "rollup",
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as string,
      message: "rollup: rollout of revision 2 aborted: aborted by an operator; every shard runs revision 1 from its next fire",
      stableRevision: 1,
      targetRevision: 2,
      reason: "aborted by an operator",
    });

    await admin.applyJob({ manifest: rolling("quiet", "v1") });
    await admin.applyJob({ manifest: rolling("quiet", "v2") });
    await admin.abortRollout({ job: "quiet" });
    await vi.waitFor(() => expect(lines).toContainEqual(expect.objectContaining({ level: 40, job: "quiet", msg: expect.stringContaining("quiet: rollout of revision 2 aborted") as string })));
    expect(hook.received).toHaveLength(1);
  });

  it("sends nothing for a succeeded or cancelled execution", async () => {
    const hook = await receiver();
    const { address, admin } = await controller();
    await admin.applyJob({ manifest: manifest("rollup", { url: hook.url }) });
    const agent = await rawAgent(address);
    await admin.triggerJob({ name: "rollup" });
    await agent.finishNext(ExecutionState.SUCCEEDED);
    await admin.triggerJob({ name: "rollup" });
    await agent.finishNext(ExecutionState.CANCELLED, "cancelled by the handler");
    await admin.triggerJob({ name: "rollup" });
    const failed = await agent.finishNext(ExecutionState.FAILED, "third time");
    await hook.count(1);
    expect(hook.received.map((d) => d.body.id)).toEqual([failed]);
  });

  it("POSTs an execution lost with its agent", async () => {
    const hook = await receiver();
    const { address, admin } = await controller();
    await admin.applyJob({ manifest: manifest("rollup", { url: hook.url }) });
    const agent = await rawAgent(address);
    await admin.triggerJob({ name: "rollup" });
    const id = await agent.takeNext();
    agent.close();
    const [delivery] = await hook.count(1);
    expect(delivery!.body).toMatchObject({ id, state: "lost", agent: "py-1" });
  });

  it("drops the oldest delivery, with an error line, when more are under way than allowed", async () => {
    const hook = await receiver([0]);
    const { address, admin, stop, lines } = await controller(5, 1);
    await admin.applyJob({ manifest: manifest("rollup", { url: hook.url }) });
    const agent = await rawAgent(address);
    await admin.triggerJob({ name: "rollup" });
    const first = await agent.finishNext(ExecutionState.FAILED, "one");
    // The receiver holds the first delivery's request open: it stays under way.
    await hook.count(1);
    await admin.triggerJob({ name: "rollup" });
    const second = await agent.finishNext(ExecutionState.FAILED, "two");
    await hook.count(2);
    agent.close();
    await stop();
    expect(hook.received.map((d) => d.body.id)).toEqual([first, second]);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 50,
        execution: first,
        msg: `failure webhook for job rollup, execution ${first} dropped: more than 1 deliveries under way`,
      }),
    );
    expect(lines.filter((line) => line.execution === second && line.msg.startsWith("failure webhook"))).toEqual([]);
  });

  it("abandons a delivery under way when the controller stops, leaving nothing running", async () => {
    const hook = await receiver([500]);
    // After the first answer the delivery waits a minute for its second attempt; stop() must not.
    const { address, admin, stop, lines } = await controller(60_000);
    await admin.applyJob({ manifest: manifest("rollup", { url: hook.url }) });
    const agent = await rawAgent(address);
    await admin.triggerJob({ name: "rollup" });
    const id = await agent.finishNext(ExecutionState.FAILED, "boom");
    await hook.count(1);
    agent.close();
    await stop();
    expect(hook.received).toHaveLength(1);
    expect(lines).toContainEqual(
      expect.objectContaining({ level: 40, execution: id, msg: `failure webhook for job rollup, execution ${id} abandoned: the controller is stopping` }),
    );
  });
});
