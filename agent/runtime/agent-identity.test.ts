import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { freePort } from "../../test/harness/processes.js";
import { Agent } from "./agent.js";
import { ScriptedController, cleanups, nextEvent, runCleanups, startAgent } from "./testing/scripted-controller.js";

afterEach(runCleanups);

const HELD = 'agent id "agent-1" is held by another process (instance 3f2a, connected from 127.0.0.1:51234); its lease runs for another 1.8 s';

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A logger whose JSON lines the test reads, and a way to await one. */
function capturedLog() {
  const lines: LogLine[] = [];
  const waiters: { match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }[] = [];
  const logger = pino(
    { level: "debug" },
    {
      write(text: string) {
        const line = JSON.parse(text) as LogLine;
        lines.push(line);
        for (const waiter of [...waiters]) {
          if (waiter.match(line)) {
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve(line);
          }
        }
      },
    },
  );
  const line = (match: (line: LogLine) => boolean): Promise<LogLine> =>
    new Promise((resolve) => {
      const found = lines.find(match);
      if (found) resolve(found);
      else waiters.push({ match, resolve });
    });
  return { logger, lines, line };
}

describe("Agent identity", () => {
  it("sends one random instance id per Agent in every Hello, the same on a reconnect", async () => {
    const controller = await ScriptedController.start();
    const agent = startAgent(controller, {});
    const first = await controller.nextSession();
    expect(first.hello.instanceId).toMatch(/^[0-9a-f-]{36}$/);
    expect(first.hello.instanceId).toBe(agent.instanceId);
    first.stream.close(status.UNAVAILABLE, "blip");
    expect((await controller.nextSession()).hello.instanceId).toBe(agent.instanceId);
    const other = startAgent(controller, {}, { id: "agent-2" });
    expect((await controller.nextSession()).hello.instanceId).not.toBe(agent.instanceId);
    expect(other.instanceId).not.toBe(agent.instanceId);
  });

  it("takes an injected instance id, and refuses one the controller would not accept", () => {
    expect(new Agent({ controller: "127.0.0.1:1", id: "a", instanceId: "test-instance-0001" }).instanceId).toBe("test-instance-0001");
    expect(() => new Agent({ controller: "127.0.0.1:1", id: "a", instanceId: "short" })).toThrow(
      `instanceId: "short" is not allowed; expected 16 to 64 letters, digits, '-' and '_' (a UUID fits)`,
    );
  });

  it("stops for good when another process holds its id, with an already-exists error carrying the controller's message", async () => {
    const controller = await ScriptedController.start();
    const log = capturedLog();
    const agent = startAgent(controller, {}, { logger: log.logger });
    const refused = nextEvent(agent, "refused");
    (await controller.nextSession()).stream.close(status.ALREADY_EXISTS, HELD);
    const [error] = await refused;
    expect(error).toBeInstanceOf(ShardlineError);
    expect(error).toMatchObject({ code: "already-exists", message: HELD });
    expect(agent.state).toBe("stopped");
    expect(agent.readiness).toEqual({ ready: false, reason: `stopped: the controller refused this agent: ${HELD}` });
    const line = await log.line((l) => l.level === 50);
    expect(line.msg).toBe(`the controller refused this agent: ${HELD}; stopping`);
    expect(() => agent.start()).toThrow("was stopped");
  });

  it("with waitForId, says once that it waits for the id and keeps trying until the controller takes it", async () => {
    const controller = await ScriptedController.start();
    const log = capturedLog();
    const agent = startAgent(controller, {}, { logger: log.logger, waitForId: true });
    agent.on("refused", () => expect.fail("an agent told to wait for its id was refused"));
    (await controller.nextSession()).stream.close(status.ALREADY_EXISTS, HELD);
    (await controller.nextSession()).stream.close(status.ALREADY_EXISTS, HELD);
    const third = await controller.nextSession();
    expect(agent.readiness).toEqual({ ready: false, reason: `waiting for agent id "agent-1": ${HELD}` });
    const waiting = log.lines.filter((l) => l.level === 40 && l.msg.startsWith('waiting for agent id "agent-1"'));
    expect(waiting.map((l) => l.msg)).toEqual([`waiting for agent id "agent-1": ${HELD}; trying again with the reconnect backoff until it is free`]);
    const connected = nextEvent(agent, "connected");
    third.welcome();
    await connected;
    expect(agent.state).toBe("connected");
  });
});

describe("Agent without a reachable controller", () => {
  it("says plainly that it cannot reach the controller, not once per attempt, and once that it reached it", async () => {
    const port = await freePort();
    const log = capturedLog();
    const agent = new Agent({ controller: `127.0.0.1:${port}`, id: "agent-1", logger: log.logger, reconnect: { initialMs: 5, maxMs: 20 } });
    cleanups.push(() => agent.stop());
    let attempts = 0;
    const manyAttempts = new Promise<void>((resolve) => agent.on("disconnected", () => ++attempts === 5 && resolve()));
    agent.start();
    await manyAttempts;
    const unreachable = log.lines.filter((l) => l.msg.startsWith("cannot reach"));
    expect(unreachable.map((l) => [l.level, l.msg])).toEqual([
      [40, `cannot reach the controller at 127.0.0.1:${port}: connection refused; trying again with a backoff of up to 20 ms`],
    ]);
    expect(unreachable[0]).toMatchObject({ controller: `127.0.0.1:${port}`, reason: "connection refused", code: "UNAVAILABLE" });
    expect(String(unreachable[0]!.details)).toContain("ECONNREFUSED");
    expect(agent.readiness).toMatchObject({ ready: false, reason: expect.stringMatching(new RegExp(`^cannot reach the controller at 127\\.0\\.0\\.1:${port}: connection refused \\(\\d+ failed attempts so far\\)`)) });

    const controller = await ScriptedController.start(port);
    const session = await controller.nextSession();
    const connected = nextEvent(agent, "connected");
    session.welcome();
    await connected;
    const reached = await log.line((l) => l.msg.startsWith("reached the controller"));
    expect(reached.msg).toMatch(new RegExp(`^reached the controller at 127\\.0\\.0\\.1:${port} after \\d+ failed attempts over `));
    expect(agent.readiness).toEqual({ ready: true });
  });
});
