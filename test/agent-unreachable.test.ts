import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { CliProcess, ControllerProcess, freePort, requireBuiltCli, waitFor } from "./harness/processes.js";

/** An agent process of the CLI with its stderr kept apart, which is where it says what is wrong. */
class AgentProcess extends CliProcess {
  stderr = "";

  constructor(controller: string) {
    super("lonely", ["agent", "--controller", controller, "--id", "lonely", "--allow-http", "--http", "127.0.0.1:0"]);
    this.child.stderr!.on("data", (chunk: Buffer) => (this.stderr += chunk.toString()));
  }

  /** The --http address it prints once it listens. */
  httpAddress(): Promise<string> {
    return waitFor("the agent's HTTP port", async () => /serving \/healthz, \/readyz and \/metrics on (\S+) \(HTTP\)/.exec(this.output)?.[1]);
  }

  /** The messages of its JSON log lines on stderr. */
  messages(): string[] {
    return this.stderr
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => (JSON.parse(line) as { msg: string }).msg);
  }
}

async function readyz(address: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`http://${address}/readyz`);
  return { status: response.status, text: await response.text() };
}

describe("an agent that cannot reach its controller", () => {
  const started: CliProcess[] = [];
  let dir = "";
  beforeAll(() => requireBuiltCli());
  afterEach(async (context) => {
    if (context.task.result?.state === "fail") for (const process of started) console.error(`--- ${process.name}\n${process.output}`);
    for (const process of started.splice(0).reverse()) await process.stop();
    if (dir !== "") await rm(dir, { recursive: true, force: true });
    dir = "";
  });

  it("says it cannot reach the address (connection refused) and keeps trying, is not ready with that reason, then connects once a controller listens", async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const agent = new AgentProcess(address);
    started.push(agent);
    const http = await agent.httpAddress();
    const said = `cannot reach the controller at ${address}: connection refused; trying again with a backoff of up to 5 s`;
    await waitFor("the agent to say it cannot reach the controller", async () => (agent.messages().includes(said) ? true : undefined));

    const notReady = await readyz(http);
    expect(notReady.status).toBe(503);
    expect(notReady.text).toMatch(new RegExp(`^not ready: cannot reach the controller at 127\\.0\\.0\\.1:${port}: connection refused \\(\\d+ failed attempts? so far\\); trying again with a backoff of up to 5 s\\n$`));
    // The raw grpc-js text is kept in the line's fields, not in its message.
    const line = agent.stderr.split("\n").find((l) => l.includes(said));
    expect(JSON.parse(line!)).toMatchObject({ level: 40, controller: address, reason: "connection refused", code: "UNAVAILABLE", details: expect.stringContaining("ECONNREFUSED") });

    dir = await mkdtemp(join(tmpdir(), "shardline-unreachable-"));
    const controller = new ControllerProcess(port, join(dir, "state.db"));
    await controller.start();
    started.push(controller.process!);
    await waitFor("the agent to be ready", async () => ((await readyz(http)).status === 200 ? true : undefined));
    expect((await readyz(http)).text).toBe("ready\n");
    // Said as it connects; the line may reach this process's pipe after the HTTP answer does.
    const reached = await waitFor("the agent to say it reached the controller", () => {
      const lines = agent.messages().filter((m) => m.startsWith("reached the controller"));
      return lines.length > 0 ? lines : undefined;
    });
    expect(reached).toHaveLength(1);
    expect(reached[0]).toMatch(new RegExp(`^reached the controller at 127\\.0\\.0\\.1:${port} after \\d+ failed attempts? over `));
    // Not one line per attempt: the same failure is said again only after a minute, with the count.
    const attempts = Number(/after (\d+) failed/.exec(reached[0]!)![1]);
    const failures = agent.messages().filter((m) => m.startsWith("cannot reach"));
    expect(failures.filter((m) => !m.includes(", still: "))).toEqual([said]);
    if (attempts > 1) expect(failures.length).toBeLessThan(attempts);

    agent.kill("SIGTERM");
    expect(await agent.exited).toEqual({ code: 0, signal: null });
  });

  it("says so when the controller's name does not resolve", async () => {
    const agent = new AgentProcess("no-such-host.invalid:7070");
    started.push(agent);
    const http = await agent.httpAddress();
    const said = "cannot reach the controller at no-such-host.invalid:7070: name not resolved; trying again with a backoff of up to 5 s";
    await waitFor("the agent to say the name was not resolved", async () => (agent.messages().includes(said) ? true : undefined));
    const notReady = await readyz(http);
    expect(notReady.status).toBe(503);
    expect(notReady.text).toMatch(/^not ready: cannot reach the controller at no-such-host\.invalid:7070: name not resolved \(/);
    agent.kill("SIGTERM");
    expect(await agent.exited).toEqual({ code: 0, signal: null });
  });
});
