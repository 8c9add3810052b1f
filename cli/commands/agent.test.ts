import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import * as agentModule from "../../agent/index.js";
import { ScriptedController, runCleanups } from "../../agent/runtime/testing/scripted-controller.js";
import { ShardlineError } from "../../shared/errors.js";
import { parsePrometheusText, sampleValue } from "../../shared/telemetry/testing/prometheus-text.js";
import { ExitCode, exitCodeOf } from "../exit-codes.js";
import type { CliIo } from "../output.js";
import { runAgent, type AgentModule } from "./agent.js";

afterEach(runCleanups);

/** A CliIo that records stdout and lets the test send signals. */
function captureIo() {
  const out: string[] = [];
  const listeners = new Set<(signal: NodeJS.Signals) => void>();
  const io: CliIo = {
    stdout: (text) => void out.push(text),
    stderr: () => {},
    readStdin: () => Promise.resolve(""),
    env: {},
    onSignal(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  return {
    io,
    stdout: () => out.join(""),
    signal: (name: NodeJS.Signals) => [...listeners].forEach((listener) => listener(name)),
    listening: () => listeners.size,
  };
}

async function get(url: string): Promise<{ status: number; text: string }> {
  const response = await fetch(url);
  return { status: response.status, text: await response.text() };
}

describe("shardline agent --http", () => {
  it("serves /healthz, /readyz and the agent's /metrics while it runs, and stops serving once drained", async () => {
    const controller = await ScriptedController.start();
    const capture = captureIo();
    // The real agent module, as the command imports it.
    const module: AgentModule = agentModule as unknown as AgentModule;
    const running = runAgent({ controller: controller.address, id: "agent-http", labels: {}, allowHttp: true, http: "127.0.0.1:0" }, undefined, module, capture.io);
    const session = await controller.nextSession();
    const address = /serving \/healthz, \/readyz and \/metrics on (\S+) \(HTTP\)/.exec(capture.stdout())?.[1];
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect((await get(`http://${address}/healthz`)).status).toBe(200);
    expect(await get(`http://${address}/readyz`)).toEqual({ status: 503, text: `not ready: connecting to the controller at ${controller.address}; no Welcome yet\n` });

    session.welcome();
    await expect.poll(async () => (await get(`http://${address}/readyz`)).status).toBe(200);
    const metrics = await get(`http://${address}/metrics`);
    expect(metrics.status).toBe(200);
    expect(sampleValue(parsePrometheusText(metrics.text), "shardline_agent_connected")).toBe(1);
    expect(sampleValue(parsePrometheusText(metrics.text), "target_info", { service_name: "shardline-agent" })).toBe(1);

    capture.signal("SIGTERM");
    await expect(running).resolves.toBeUndefined();
    await expect(fetch(`http://${address}/healthz`)).rejects.toThrow();
  });

  it("fails before connecting when the --http port is taken", async () => {
    const controller = await ScriptedController.start();
    const first = captureIo();
    const module: AgentModule = agentModule as unknown as AgentModule;
    const running = runAgent({ controller: controller.address, id: "agent-a", labels: {}, allowHttp: true, http: "127.0.0.1:0" }, undefined, module, first.io);
    await controller.nextSession();
    const address = /on (\S+) \(HTTP\)/.exec(first.stdout())![1]!;
    const second = captureIo();
    await expect(runAgent({ controller: controller.address, id: "agent-b", labels: {}, allowHttp: true, http: address }, undefined, module, second.io)).rejects.toThrow(
      `cannot listen on ${address} (--http)`,
    );
    expect(controller.sessions).toHaveLength(1);
    first.signal("SIGTERM");
    await running;
  });
});

describe("shardline agent and its id", () => {
  it("fails with already-exists (exit 4) and the controller's message when another process holds the id", async () => {
    const controller = await ScriptedController.start();
    const capture = captureIo();
    const module: AgentModule = agentModule as unknown as AgentModule;
    const running = runAgent({ controller: controller.address, id: "worker-1", labels: {}, allowHttp: true }, undefined, module, capture.io);
    const held = 'agent id "worker-1" is held by another process (instance 3f2a, connected from 127.0.0.1:51234); its lease runs for another 1.8 s';
    (await controller.nextSession()).stream.close(status.ALREADY_EXISTS, held);
    const error = await running.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ShardlineError);
    expect(error).toMatchObject({ code: "already-exists", message: held });
    expect(exitCodeOf(error)).toBe(ExitCode.precondition);
    expect(capture.listening()).toBe(0);
  });

  it("with --wait-for-id keeps trying while the id is held, and runs once the controller takes it", async () => {
    const controller = await ScriptedController.start();
    const capture = captureIo();
    const module: AgentModule = agentModule as unknown as AgentModule;
    const running = runAgent({ controller: controller.address, id: "worker-1", labels: {}, allowHttp: true, waitForId: true }, undefined, module, capture.io);
    (await controller.nextSession()).stream.close(status.ALREADY_EXISTS, 'agent id "worker-1" is held by another process');
    const second = await controller.nextSession();
    expect(second.hello.agentId).toBe("worker-1");
    second.welcome();
    capture.signal("SIGTERM");
    await expect(running).resolves.toBeUndefined();
  });
});
