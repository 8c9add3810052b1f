import { afterEach, describe, expect, it } from "vitest";
import * as agentModule from "../../agent/index.js";
import { ScriptedController, runCleanups } from "../../agent/runtime/testing/scripted-controller.js";
import { parsePrometheusText, sampleValue } from "../../shared/telemetry/testing/prometheus-text.js";
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
  return { io, stdout: () => out.join(""), signal: (name: NodeJS.Signals) => [...listeners].forEach((listener) => listener(name)) };
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
    expect((await get(`http://${address}/readyz`)).status).toBe(503);

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
