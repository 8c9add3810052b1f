import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import type { ExecutionUpdate } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { ExecutionListeners, ExecutionOutcome, HandlerContext } from "../sdk.js";
import {
  FIRE,
  HEARTBEAT_MS,
  LEASE_MS,
  ScriptedController,
  assignment,
  connected,
  deferred,
  dispatch,
  nextEvent,
  runCleanups,
  startAgent,
} from "./testing/scripted-controller.js";
import { freePort } from "../../test/harness/processes.js";

afterEach(runCleanups);

describe("Agent", () => {
  it("says Hello with its id, labels, capacity, handlers and version, and holds nothing at first", async () => {
    const controller = await ScriptedController.start();
    const agent = startAgent(controller, { zeta: () => 1, alpha: () => 2 });
    expect(agent.state).toBe("connecting");
    const session = await controller.nextSession();
    expect(session.hello).toMatchObject({
      agentId: "agent-1",
      labels: { zone: "eu-1" },
      capacity: 2,
      handlers: ["alpha", "zeta"],
      version: "9.9.9-test",
      held: [],
      executions: [],
      executors: [],
    });
    const [info] = await Promise.all([nextEvent(agent, "connected").then(([s]) => s), Promise.resolve(session.welcome())]);
    expect(info).toMatchObject({ heartbeatIntervalMs: HEARTBEAT_MS, leaseTtlMs: LEASE_MS, term: 1n });
    expect(agent.state).toBe("connected");
  });

  it("declares the script and http executors in Hello only when allowed", async () => {
    const controller = await ScriptedController.start();
    startAgent(controller, {}, { id: "agent-scripts", allowScripts: [process.execPath], allowHttp: true });
    expect((await controller.nextSession()).hello).toMatchObject({ agentId: "agent-scripts", handlers: [], executors: ["script", "http"] });
    startAgent(controller, { work: () => 1 }, { id: "agent-plain", allowScripts: [] });
    expect((await controller.nextSession()).hello).toMatchObject({ agentId: "agent-plain", handlers: ["work"], executors: [] });
  });

  it("runs a dispatched script job and reports SUCCEEDED with the tail of its stdout", async () => {
    const held = assignment("rollup", 1, 1n, 1n);
    const { session, agent } = await connected({}, [held], { allowScripts: [process.execPath] });
    expect(session.hello.executors).toEqual(["script"]);
    const script = "process.stdout.write(`shard ${process.env.SHARDLINE_SHARD} of ${process.env.SHARDLINE_SHARD_COUNT}: ${process.env.SHARDLINE_SHARD_PARAMETER}\\n`)";
    dispatch(session, "rollup/1/1/1", held, { script: { command: process.execPath, args: ["-e", script], killGraceMs: 1000 } });
    expect((await session.update("rollup/1/1/1", ExecutionState.SUCCEEDED)).result).toBe("shard 1 of 4: param-1");
    expect(session.updates().map((u) => u.state)).toEqual([ExecutionState.RUNNING, ExecutionState.SUCCEEDED]);
    expect(agent.running()).toEqual([]);
  });

  it("gives a handler the revision its execution runs as ctx.revision, and a script as SHARDLINE_REVISION", async () => {
    const held = assignment("rollup", 3, 1n, 1n);
    let seen: HandlerContext | undefined;
    const { session } = await connected({ work: (ctx) => void (seen = ctx) }, [held], { allowScripts: [process.execPath] });
    dispatch(session, "rollup/1/3/1", held, { revision: 4n });
    await session.update("rollup/1/3/1", ExecutionState.SUCCEEDED);
    expect(seen?.revision).toBe(4);
    const script = "let s = ''; process.stdin.on('data', (d) => (s += d)).on('end', () => process.stdout.write(`${process.env.SHARDLINE_REVISION} ${JSON.parse(s).revision}`))";
    dispatch(session, "rollup/2/3/1", held, { revision: 5n, script: { command: process.execPath, args: ["-e", script], killGraceMs: 1000 } });
    expect((await session.update("rollup/2/3/1", ExecutionState.SUCCEEDED)).result).toBe("5 5");
  });

  it("stop() resolves only once a running script's process has exited, reporting it LOST", async () => {
    const held = assignment("rollup", 2, 1n, 1n);
    const { session, agent } = await connected({}, [held], { allowScripts: [process.execPath] });
    dispatch(session, "rollup/1/2/1", held, { script: { command: process.execPath, args: ["-e", "setInterval(() => {}, 1000)"], killGraceMs: 60_000 } });
    await session.update("rollup/1/2/1", ExecutionState.RUNNING);
    const lost: ExecutionUpdate[] = [];
    agent.on("execution", (update) => lost.push(update));
    await agent.stop();
    expect(lost.map((u) => [u.state, u.error])).toEqual([[ExecutionState.LOST, "the agent stopped; the process ended with killed by SIGTERM"]]);
    expect(agent.running()).toEqual([]);
  });

  it("fails a script job whose command it does not allow, and an http job when it makes no HTTP calls", async () => {
    const held = assignment("rollup", 0, 1n, 1n);
    const { session } = await connected({ work: () => 1 }, [held]);
    dispatch(session, "s1", held, { script: { command: "rm", args: ["-rf", "/"] } });
    expect((await session.update("s1", ExecutionState.FAILED)).error).toMatch(/^command "rm" is not allowed on this agent; allowed: none/);
    dispatch(session, "h1", held, { http: { method: "POST", url: "http://127.0.0.1:1/" } });
    expect((await session.update("h1", ExecutionState.FAILED)).error).toMatch(/makes no HTTP calls; start it with --allow-http/);
  });

  it("heartbeats with growing sequence numbers and stays connected while acked", async () => {
    const { agent, session } = await connected({ work: () => 1 });
    const seqs = [];
    for (let i = 0; i < 4; i++) seqs.push((await session.take("heartbeat")).seq);
    expect(seqs).toEqual([1n, 2n, 3n, 4n]);
    expect(agent.state).toBe("connected");
  });

  it("runs a dispatched execution and reports it SUCCEEDED, with its start time, in one message", async () => {
    const held = assignment("billing", 2, 1n, 1n);
    let seen: HandlerContext | undefined;
    const { session, agent } = await connected(
      {
        work: (ctx) => {
          seen = ctx;
          return { rows: 3 };
        },
      },
      [held],
    );
    expect(agent.shards()).toEqual([{ job: "billing", shard: 2, term: 1n, generation: 1n, revoking: false }]);
    dispatch(session, "billing/1/2/1", held);
    const batch = await session.take("executionUpdates");
    // It started and ended within one turn: RUNNING is left out, SUCCEEDED carries the start.
    expect(batch.updates.map((u) => [u.executionId, u.state])).toEqual([["billing/1/2/1", ExecutionState.SUCCEEDED]]);
    expect(batch.updates[0]?.result).toBe('{"rows":3}');
    expect(batch.updates[0]?.startedAtUnixMs).toBeGreaterThan(0n);
    expect(seen).toMatchObject({
      job: "billing",
      shard: 2,
      shardCount: 4,
      shardParameter: "param-2",
      parameter: "month=current",
      executionId: "billing/1/2/1",
      attempt: 1,
      agentId: "agent-1",
    });
    expect(seen?.fireTime).toBeInstanceOf(Date);
    expect(seen?.fireTime.getTime()).toBe(Number(FIRE));
    expect(agent.running()).toEqual([]);
  });

  it("starts an execution dispatched ahead at its fire instant, not before", async () => {
    const held = assignment("billing", 0, 1n, 1n);
    let startedAt = 0;
    const { session } = await connected({ work: () => (startedAt = Date.now()) }, [held], {}, 1_000);
    const fireTime = Date.now() + 150;
    dispatch(session, "billing/1/0/1", held, { fireTimeUnixMs: BigInt(fireTime) });
    await session.update("billing/1/0/1", ExecutionState.SUCCEEDED);
    expect(startedAt).toBeGreaterThanOrEqual(fireTime);
  });

  it("waits for a fire instant no longer than the controller dispatches ahead, whatever its clock says", async () => {
    const held = assignment("billing", 0, 1n, 1n);
    const { session } = await connected({ work: () => "ran" }, [held], {}, 50);
    dispatch(session, "billing/1/0/1", held, { fireTimeUnixMs: BigInt(Date.now() + 3_600_000) });
    expect((await session.update("billing/1/0/1", ExecutionState.SUCCEEDED)).result).toBe("ran");
  });

  it("lists an execution dispatched ahead and not started yet as PENDING in the Hello after a reconnect, and still starts it", async () => {
    const held = assignment("billing", 0, 1n, 1n);
    let startedAt = 0;
    const { controller, session, agent } = await connected({ work: () => (startedAt = Date.now()) }, [held], {}, 60_000);
    const fireTime = Date.now() + 1_500;
    dispatch(session, "billing/1/0/1", held, { fireTimeUnixMs: BigInt(fireTime) });
    await expect.poll(() => agent.running().length).toBe(1);
    const disconnected = nextEvent(agent, "disconnected");
    session.stream.close(status.UNAVAILABLE, "blip");
    await disconnected;

    const again = await controller.nextSession();
    expect(again.hello.executions.map((u) => [u.executionId, u.state])).toEqual([["billing/1/0/1", ExecutionState.PENDING]]);
    again.welcome(60_000);
    expect((await again.update("billing/1/0/1", ExecutionState.SUCCEEDED)).executionId).toBe("billing/1/0/1");
    expect(startedAt).toBeGreaterThanOrEqual(fireTime);
  });

  it("cancels an execution still waiting for its fire instant, and never runs it", async () => {
    const held = assignment("billing", 0, 1n, 1n);
    let ran = false;
    const { session } = await connected({ work: () => (ran = true) }, [held], {}, 60_000);
    dispatch(session, "e1", held, { fireTimeUnixMs: BigInt(Date.now() + 30_000) });
    session.send({ case: "cancel", value: { executionIds: ["e1"], reason: "paused" } });
    expect((await session.update("e1", ExecutionState.CANCELLED)).error).toBe("paused");
    expect(ran).toBe(false);
  });

  it("reports LOST, and never runs the handler, for a dispatch naming a stale generation", async () => {
    let ran = false;
    const { session } = await connected({ work: () => (ran = true) }, [assignment("billing", 0, 1n, 2n)]);
    dispatch(session, "billing/1/0/1", assignment("billing", 0, 1n, 1n));
    const lost = await session.update("billing/1/0/1", ExecutionState.LOST);
    expect(lost.error).toMatch(/holds billing\/0 at \(1, 2\), not billing\/0 at \(1, 1\)/);
    expect(ran).toBe(false);
    expect(session.updates()).toHaveLength(1);
  });

  it("ignores messages of a term lower than the highest seen", async () => {
    const { session, agent } = await connected({ work: () => 1 });
    session.term = 3n;
    const first = nextEvent(agent, "assignments");
    session.snapshot(assignment("new", 0, 3n, 1n));
    await first;
    const changed = nextEvent(agent, "assignments");
    session.send({ case: "assignmentUpdate", value: { snapshot: true, add: [assignment("old", 0, 1n, 9n)] } }, 1n);
    session.send({ case: "assignmentUpdate", value: { add: [assignment("new", 1, 3n, 1n)] } });
    const [shards] = await changed;
    expect(shards.map((s) => `${s.job}/${s.shard}`)).toEqual(["new/0", "new/1"]);
  });

  it("cancels a running execution and reports CANCELLED", async () => {
    const held = assignment("billing", 0, 1n, 1n);
    const { session } = await connected({ work: (ctx) => new Promise((resolve) => ctx.signal.addEventListener("abort", resolve)) }, [held]);
    dispatch(session, "e1", held);
    await session.update("e1", ExecutionState.RUNNING);
    session.send({ case: "cancel", value: { executionIds: ["e1"], reason: "operator said so" } });
    expect((await session.update("e1", ExecutionState.CANCELLED)).error).toBe("operator said so");
  });

  it("releases a revoked shard only after its running execution finishes", async () => {
    const held = assignment("billing", 1, 1n, 1n);
    const finish = deferred();
    const { session, agent } = await connected({ work: () => finish.promise.then(() => "done") }, [held]);
    dispatch(session, "e1", held);
    await session.update("e1", ExecutionState.RUNNING);

    const revoking = nextEvent(agent, "assignments");
    session.send({ case: "assignmentUpdate", value: { revoke: [assignment("billing", 1, 1n, 2n)] } });
    expect((await revoking)[0]).toEqual([{ job: "billing", shard: 1, term: 1n, generation: 2n, revoking: true }]);
    // Two heartbeats after the revoke was handled (one may have been in flight): a Release
    // sent on handling it would have come before the second.
    const seenRevoke = session.received.length;
    await session.take("heartbeat", (_, index) => index >= seenRevoke);
    await session.take("heartbeat", (_, index) => index >= seenRevoke);
    expect(session.indexOf((m) => m.kind.case === "release")).toBe(-1);

    finish.resolve();
    const release = await session.take("release");
    expect(release.assignments).toEqual([assignment("billing", 1, 1n, 2n)]);
    const succeeded = session.indexOf((m) => m.kind.case === "executionUpdates" && m.kind.value.updates.some((u) => u.state === ExecutionState.SUCCEEDED));
    expect(succeeded).toBeGreaterThanOrEqual(0);
    expect(succeeded).toBeLessThan(session.indexOf((m) => m.kind.case === "release"));
    expect(agent.shards()).toEqual([]);
  });

  it("fences itself when heartbeats go unacked: aborts the handler, and reports it LOST after reconnecting", async () => {
    const held = assignment("billing", 0, 1n, 1n);
    const aborted = deferred<unknown>();
    const { controller, session, agent } = await connected(
      {
        work: (ctx) =>
          new Promise((resolve) =>
            ctx.signal.addEventListener("abort", () => {
              aborted.resolve(ctx.signal.reason);
              resolve("stopped");
            }),
          ),
      },
      [held],
    );
    dispatch(session, "e1", held);
    await session.update("e1", ExecutionState.RUNNING);

    const fenced = nextEvent(agent, "fenced");
    session.autoAck = false;
    const [reason] = await fenced;
    expect(reason).toMatch(/no heartbeat ack within the lease/);
    expect(String(await aborted.promise)).toMatch(/fenced/);
    expect(agent.running()).toEqual([]);

    const again = await controller.nextSession();
    // Fenced, it claims none of its shards: another agent may own them by now.
    expect(again.hello.held).toEqual([]);
    expect(agent.shards()).toEqual([]);
    expect(again.hello.executions.map((u) => [u.executionId, u.state])).toEqual([["e1", ExecutionState.LOST]]);
    expect(again.hello.executions[0]?.error).toMatch(/fenced/);
    expect(agent.state).toBe("fenced");

    // A fenced agent starts nothing until a controller renews its lease.
    const back = nextEvent(agent, "connected");
    again.welcome();
    await back;
    expect(agent.state).toBe("connected");
  });

  it("reconnects after the controller restarts and lists its held assignments in Hello", async () => {
    const held = [assignment("billing", 0, 1n, 1n), assignment("billing", 3, 1n, 4n)];
    const { controller, session, agent } = await connected({ work: () => "ok" }, held);
    dispatch(session, "e1", held[0]!);
    await session.update("e1", ExecutionState.SUCCEEDED);
    // The ack of a heartbeat sent after the report confirms it, so no Hello needs to repeat it.
    const reported = session.indexOf((m) => m.kind.case === "executionUpdates");
    await session.take("heartbeat", (_, index) => index > reported);
    // One more round trip, so that the ack of that heartbeat has reached the agent.
    const acked = session.received.length;
    await session.take("heartbeat", (_, index) => index >= acked);
    const disconnected = nextEvent(agent, "disconnected");

    const port = controller.port;
    await controller.close();
    await disconnected;
    const restarted = await ScriptedController.start(port);
    restarted.term = 2n;
    const again = await restarted.nextSession();
    expect(again.hello.held).toEqual(held);
    expect(again.hello.executions).toEqual([]);
    const back = nextEvent(agent, "connected");
    again.welcome();
    expect((await back)[0].term).toBe(2n);
  });

  it("retries with backoff after the controller refuses its Hello", async () => {
    const controller = await ScriptedController.start();
    const agent = startAgent(controller, { work: () => 1 });
    const first = await controller.nextSession();
    const refused = nextEvent(agent, "disconnected");
    first.stream.close(status.INVALID_ARGUMENT, "hello.labels.zone: bad value");
    expect((await refused)[0].code).toBe(status.INVALID_ARGUMENT);
    const second = await controller.nextSession();
    const welcomed = nextEvent(agent, "connected");
    second.welcome();
    await welcomed;
    expect(agent.state).toBe("connected");
  });

  it("follows a Redirect to the leader", async () => {
    const follower = await ScriptedController.start();
    const leader = await ScriptedController.start();
    const agent = startAgent(follower, { work: () => 1 });
    const first = await follower.nextSession();
    first.send({ case: "redirect", value: { leaderAddress: leader.address } });
    const session = await leader.nextSession();
    expect(session.hello.agentId).toBe("agent-1");
    expect(agent.controller).toBe(leader.address);
  });

  it("gives up on a controller that accepts the stream and never welcomes it, for the next replica", async () => {
    const frozen = await ScriptedController.start();
    const live = await ScriptedController.start();
    const agent = startAgent(frozen, { work: () => 1 }, { controller: `${frozen.address},${live.address}`, reconnect: { initialMs: 10, maxMs: 100, welcomeTimeoutMs: 200 } });
    await frozen.nextSession();
    const session = await live.nextSession();
    expect(session.hello.agentId).toBe("agent-1");
    session.welcome();
    await nextEvent(agent, "connected");
    expect(agent.controller).toBe(live.address);
  });

  it("tries the next controller replica given while one cannot be reached, and goes back to them when the leader it was sent to is gone", async () => {
    const unreachable = `127.0.0.1:${await freePort()}`;
    const follower = await ScriptedController.start();
    const leader = await ScriptedController.start();
    const agent = startAgent(follower, { work: () => 1 }, { controller: `${unreachable},${follower.address}` });
    const first = await follower.nextSession();
    first.send({ case: "redirect", value: { leaderAddress: leader.address } });
    const onLeader = await leader.nextSession();
    onLeader.welcome();
    await nextEvent(agent, "connected");
    expect(agent.controller).toBe(leader.address);

    // The leader goes away for good: the agent comes back through the replicas it was given.
    await leader.close();
    const again = await follower.nextSession();
    expect(again.hello.agentId).toBe("agent-1");
    expect(agent.controller).toBe(follower.address);
  });

  it("drains: says Goodbye, releases each shard as its run finishes, and ends the stream", async () => {
    const busy = assignment("billing", 0, 1n, 1n);
    const idle = assignment("billing", 1, 1n, 1n);
    const finish = deferred();
    const { session, agent } = await connected({ work: () => finish.promise }, [busy, idle]);
    dispatch(session, "e1", busy);
    await session.update("e1", ExecutionState.RUNNING);

    const drained = agent.drain("SIGTERM");
    expect(agent.state).toBe("draining");
    expect((await session.take("goodbye")).reason).toBe("SIGTERM");
    expect((await session.take("release")).assignments).toEqual([idle]);

    // New work is refused while leaving.
    dispatch(session, "e2", busy);
    expect((await session.update("e2", ExecutionState.LOST)).error).toMatch(/shutting down/);

    finish.resolve();
    expect((await session.take("release")).assignments).toEqual([busy]);
    expect((await session.closed).code).toBe(status.OK);
    await drained;
    expect(agent.state).toBe("stopped");
    expect((await session.update("e1", ExecutionState.SUCCEEDED)).executionId).toBe("e1");
  });

  it("drains: after the grace, aborts what still runs, reports it LOST and releases", async () => {
    const held = assignment("billing", 0, 1n, 1n);
    const { session, agent } = await connected({ work: () => new Promise(() => {}) }, [held], { drainGraceMs: 100 });
    dispatch(session, "e1", held);
    await session.update("e1", ExecutionState.RUNNING);
    const drainedEvent = nextEvent(agent, "drained");
    await agent.drain();
    await drainedEvent;
    expect((await session.update("e1", ExecutionState.LOST)).error).toMatch(/drain grace of 100 ms/);
    expect((await session.take("release")).assignments).toEqual([held]);
    expect((await session.closed).code).toBe(status.OK);
  });

  it("runs its listeners around each execution: beforeExecution, the handler, afterExecution with the outcome", async () => {
    const held = assignment("billing", 1, 1n, 1n);
    const order: string[] = [];
    const after = deferred<ExecutionOutcome>();
    const listeners: ExecutionListeners = {
      beforeExecution: async (ctx) => void order.push(`before ${ctx.executionId}`),
      afterExecution: (ctx, outcome) => {
        order.push(`after ${ctx.executionId} ${outcome.state}`);
        after.resolve(outcome);
      },
    };
    const { session } = await connected({ work: () => (order.push("handler"), 7) }, [held], { listeners });
    dispatch(session, "billing/1/1/1", held);
    expect(await after.promise).toMatchObject({ state: "succeeded", result: 7 });
    expect(order).toEqual(["before billing/1/1/1", "handler", "after billing/1/1/1 succeeded"]);
    await session.update("billing/1/1/1", ExecutionState.SUCCEEDED);
    expect(session.updates().map((u) => u.state).at(-1)).toBe(ExecutionState.SUCCEEDED);
  });

  it("drain leaves at once when no controller can be reached and nothing runs or waits to be reported", async () => {
    const controller = await ScriptedController.start();
    // A grace far longer than the test's timeout: the drain must not wait for it.
    const agent = startAgent(controller, { work: () => 1 }, { drainGraceMs: 3_600_000 });
    await controller.nextSession();
    const gone = nextEvent(agent, "disconnected");
    await controller.close();
    await gone;
    await agent.drain();
    expect(agent.state).toBe("stopped");
  });
});
