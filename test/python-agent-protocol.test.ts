import { create } from "@bufbuild/protobuf";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ConnectRequest, ExecutionContextSchema } from "../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { status } from "@grpc/grpc-js";
import { assignment, dispatch, runCleanups, ScriptedController, type ScriptedSession } from "../agent/runtime/testing/scripted-controller.js";
import { waitFor } from "./harness/processes.js";
import { generatePythonStubs, startPythonAgent } from "./harness/python.js";
import type { TrackedProcess } from "./harness/tracked-process.js";

// The Python reference agent (examples/python-agent) against a controller played by the test
// over real gRPC on loopback (agent/runtime/testing/scripted-controller.ts): the protocol edges
// that a real controller cannot be made to hit on demand, because they need its messages to
// cross the agent's on the wire, or a Welcome that comes too late.

const AGENT = "py-1";
/** Long, so that no lease lapses on a busy machine unless a test means it to. */
const LONG_LEASE_MS = 10_000;
const SHORT_LEASE_MS = 1_000;
const HEARTBEAT_MS = 100;

let stubs = "";
let agent: TrackedProcess | undefined;

beforeAll(async () => {
  stubs = await mkdtemp(join(tmpdir(), "shardline-python-protocol-stubs-"));
  // Throws, naming the package to install, when python3, grpcio, protoc or the plugin is missing.
  generatePythonStubs(stubs);
});
afterAll(async () => {
  if (stubs !== "") await rm(stubs, { recursive: true, force: true });
});
afterEach(async (context) => {
  if (agent !== undefined) {
    if (context.task.result?.state === "fail") console.error(`--- ${AGENT}\n${agent.output}`);
    agent.thaw();
    await agent.crash();
    agent = undefined;
  }
  await runCleanups();
});

function welcome(session: ScriptedSession, leaseTtlMs: number): void {
  session.send({ case: "welcome", value: { sessionId: `s-${session.hello.agentId}`, heartbeatIntervalMs: HEARTBEAT_MS, leaseTtlMs, dispatchAheadMs: 0 } });
}

const indexOf = (session: ScriptedSession, kind: ConnectRequest["kind"]["case"], from = 0): number =>
  session.received.findIndex((message, index) => index >= from && message.kind.case === kind);

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A handler module (--handlers) whose `wait` runs until it is aborted. */
const WAIT_HANDLERS = `
def wait(ctx):
    ctx.cancelled.wait(600)
    ctx.log.info("wait: noticed the abort")
    raise RuntimeError("aborted")

HANDLERS = {"wait": wait}
`;

describe("the Python reference agent against a scripted controller", () => {
  it("runs a Dispatch that crossed its Goodbye, releases nothing before the ack of a heartbeat sent after the Goodbye, and half-closes after that ack", async () => {
    const controller = await ScriptedController.start();
    agent = startPythonAgent(stubs, AGENT, ["--controller", controller.address]);
    const session = await controller.nextSession();
    welcome(session, LONG_LEASE_MS);
    const held = assignment("py-job", 0, 1n, 1n);
    session.snapshot(held);
    await session.take("heartbeat");
    // From now on the test acks by hand, so that what it sends below comes before the ack.
    session.autoAck = false;

    agent.kill("SIGTERM");
    await session.take("goodbye");
    const goodbyeAt = indexOf(session, "goodbye");
    // Sent before the controller read the Goodbye: a new shard, and a run on the shard it holds.
    const added = assignment("py-job", 1, 1n, 2n);
    session.send({ case: "assignmentUpdate", value: { add: [added] } });
    dispatch(session, "py-job/crossed", held, { handler: "billing-rollup" });
    // It runs, as it would have had it come before the Goodbye; and until the controller has read
    // the Goodbye nothing goes back, not even a shard nothing runs on (a Release would have come
    // before this outcome on the ordered stream).
    const outcome = await waitFor("the crossed run's outcome", async () =>
      session.updates().find((u) => u.executionId === "py-job/crossed" && u.state !== ExecutionState.RUNNING),
    );
    expect(outcome).toMatchObject({ state: ExecutionState.SUCCEEDED, error: "" });
    expect(indexOf(session, "release")).toBe(-1);
    // The controller reads the Goodbye, then the heartbeat sent after it, and acks that.
    const after = await Promise.race([
      session.take("heartbeat", (_, index) => index > goodbyeAt),
      session.closed.then((ended) => Promise.reject(new Error(`the stream ended (${ended.code} ${ended.details}) before a heartbeat came after the Goodbye`))),
    ]);
    session.send({ case: "heartbeatAck", value: { seq: after.seq } });


    // The half-close ends the stream with OK (the controller has nothing queued).
    expect((await session.closed).code).toBe(status.OK);
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    const released = session.received.flatMap((message) =>
      message.kind.case === "release" ? message.kind.value.assignments.map((a) => `${a.shard?.job}/${a.shard?.shard}@${a.term},${a.generation}`) : [],
    );
    expect(released.sort()).toEqual(["py-job/0@1,1", "py-job/1@1,2"]);
  });

  it("told to leave while its Hello waits for a Welcome, waits for it, says Goodbye and hands back the shards it was granted meanwhile", async () => {
    const controller = await ScriptedController.start();
    agent = startPythonAgent(stubs, AGENT, ["--controller", controller.address]);
    const session = await controller.nextSession();
    agent.kill("SIGTERM");
    await waitFor("py-1 to start draining", () => (agent!.output.includes("draining (SIGTERM)") ? true : undefined));
    // The controller answers the Hello late, granting a shard: only a Goodbye hands it back at once.
    welcome(session, LONG_LEASE_MS);
    const granted = assignment("py-job", 0, 1n, 1n);
    session.snapshot(granted);
    session.autoAck = false;
    await Promise.race([
      session.take("goodbye"),
      session.closed.then((ended) => Promise.reject(new Error(`the stream ended (${ended.code} ${ended.details}) without a Goodbye`))),
    ]);
    const goodbyeAt = indexOf(session, "goodbye");
    const after = await session.take("heartbeat", (_, index) => index > goodbyeAt);
    session.send({ case: "heartbeatAck", value: { seq: after.seq } });
    expect((await session.closed).code).toBe(status.OK);
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    const released = session.received.flatMap((m) => (m.kind.case === "release" ? m.kind.value.assignments.map((a) => `${a.shard?.job}/${a.shard?.shard}`) : []));
    expect(released).toEqual(["py-job/0"]);
  });

  it("lets a started run with a disconnect grace go on past the lapse, and aborts it LOST when the grace ends with no Welcome", async () => {
    const handlers = join(stubs, "wait_handlers.py");
    await writeFile(handlers, WAIT_HANDLERS);
    const controller = await ScriptedController.start();
    agent = startPythonAgent(stubs, AGENT, ["--controller", controller.address, "--handlers", handlers]);
    const first = await controller.nextSession();
    welcome(first, SHORT_LEASE_MS);
    const held = assignment("py-job", 0, 1n, 1n);
    first.snapshot(held);
    first.send({
      case: "dispatch",
      value: {
        executions: [
          create(ExecutionContextSchema, {
            executionId: "py-job/graced",
            job: "py-job",
            shard: 0,
            shardCount: 1,
            fireTimeUnixMs: 1_700_000_000_000n,
            attempt: 1,
            handler: "wait",
            assignment: held,
            disconnectGraceMs: 2_000,
          }),
        ],
      },
    });
    await first.update("py-job/graced", ExecutionState.RUNNING);
    // The controller goes silent: the lease lapses, the run goes on.
    first.autoAck = false;
    await first.closed;
    await waitFor("py-1 to fence itself, its run going on", () =>
      agent!.output.includes("1 started run(s) go on for their disconnect grace") ? true : undefined,
    );
    // No Welcome ever comes: each Hello lists the run (RUNNING while its grace lasts) until one lists it LOST.
    const lost = await waitFor("a Hello to list the run lost at its grace's end", async () => {
      const session = await controller.nextSession();
      const listed = session.hello.executions.find((u) => u.executionId === "py-job/graced");
      session.stream.close(status.UNAVAILABLE, "no controller leads yet");
      return listed?.state === ExecutionState.LOST ? listed : undefined;
    });
    expect(lost.error).toMatch(/^fenced: no heartbeat ack within the lease of 1000 ms, and no controller answered within the disconnect grace of 2 s$/);
    await waitFor("the handler to notice the abort", () => (agent!.output.includes("py-job/graced: wait: noticed the abort") ? true : undefined));
  });

  it("stays fenced on a Welcome that comes after the lease it grants has lapsed, closes that stream and is unfenced by the next Welcome", async () => {
    const controller = await ScriptedController.start();
    agent = startPythonAgent(stubs, AGENT, ["--controller", controller.address]);
    const first = await controller.nextSession();
    welcome(first, SHORT_LEASE_MS);
    first.snapshot(assignment("py-job", 0, 1n, 1n));
    await first.take("heartbeat");
    // No more acks: the lease lapses and the agent fences itself, closing the stream.
    first.autoAck = false;
    await first.closed;
    await waitFor("py-1 to log its fence", () => (agent!.output.includes("fenced: no heartbeat ack within the lease") ? true : undefined));

    const late = await controller.nextSession();
    // The agent cannot run meanwhile, so the Welcome waits for it until the lease it would grant
    // (from the Hello's send time, before it arrived here) is over for sure.
    agent.freeze();
    const frozenAt = agent.output.length;
    await sleep(SHORT_LEASE_MS + 500);
    welcome(late, SHORT_LEASE_MS);
    late.snapshot(assignment("py-job", 0, 1n, 2n));
    dispatch(late, "py-job/too-late", assignment("py-job", 0, 1n, 2n), { handler: "billing-rollup" });
    agent.thaw();

    await late.closed;
    const next = await controller.nextSession();
    await waitFor("py-1 to log why it left that stream", () =>
      agent!.output.slice(frozenAt).includes("the Welcome came after the lease it grants had lapsed: staying fenced and reconnecting") ? true : undefined,
    );
    expect(agent.output.slice(frozenAt)).not.toContain("no longer fenced");
    // Nothing went out on that stream after the Hello: no heartbeat, no run started or refused.
    expect(late.received.map((m) => m.kind.case)).toEqual([]);
    // Still fenced, it claims no shard and holds no run.
    expect({ held: next.hello.held, executions: next.hello.executions }).toEqual({ held: [], executions: [] });

    welcome(next, LONG_LEASE_MS);
    next.snapshot(assignment("py-job", 0, 1n, 2n));
    await next.take("heartbeat");
    await waitFor("py-1 to be unfenced by the timely Welcome", () => (agent!.output.slice(frozenAt).includes("lease renewed; no longer fenced") ? true : undefined));
  });
});
