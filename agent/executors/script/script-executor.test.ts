import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { fileURLToPath } from "node:url";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ExecutionContextSchema, ScriptExecutorSchema, type ExecutionUpdate } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { ScriptExecutor } from "./script-executor.js";

const FIRE = 1_700_000_000_000n;
const NODE = process.execPath;
/** Term 3, generation 7: term * 2^32 + generation. */
const TOKEN = (3n << 32n) + 7n;
const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

type ScriptInit = Omit<MessageInitShape<typeof ScriptExecutorSchema>, "$typeName">;

/** Runs one script execution and collects its reports; `terminal` resolves with the terminal one. */
function run(script: ScriptInit, init: { timeoutMs?: number; allowed?: string[]; traceparent?: string } = {}) {
  const reports: ExecutionUpdate[] = [];
  let onTerminal!: (update: ExecutionUpdate) => void;
  const terminal = new Promise<ExecutionUpdate>((resolve) => (onTerminal = resolve));
  const executor = new ScriptExecutor({
    agentId: "agent-1",
    allowed: init.allowed ?? [NODE],
    logger: pino({ level: "silent" }),
    maxResultBytes: 4096,
    report: (update) => {
      reports.push(update);
      if (update.state !== ExecutionState.RUNNING) onTerminal(update);
    },
  });
  const context = create(ExecutionContextSchema, {
    executionId: `billing/${FIRE}/3/2`,
    job: "billing",
    shard: 3,
    shardCount: 8,
    shardParameter: "shanghai",
    parameter: "month=current",
    fireTimeUnixMs: FIRE,
    attempt: 2,
    timeoutMs: init.timeoutMs ?? 0,
    traceContext: init.traceparent ? { traceparent: init.traceparent } : {},
    fencingToken: TOKEN,
    revision: 5n,
    script: { killGraceMs: 10_000, ...script },
  });
  const execution = executor.create(context);
  // However a test ends, no process of it outlives it.
  cleanups.push(async () => {
    execution.stop(ExecutionState.LOST, "test over");
    await terminal;
  });
  execution.start();
  return { execution, reports, terminal };
}

/** A TCP listener on 127.0.0.1 that resolves with the first message a fixture sends it. */
async function readyChannel(): Promise<{ port: number; message: Promise<string> }> {
  let server!: Server;
  const message = new Promise<string>((resolve) => {
    server = createServer((socket) => {
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => (text += chunk));
      socket.on("end", () => resolve(text));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  return { port: address.port, message };
}

/** True when no process has this pid any more (or only its zombie, waiting for a reaper). */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return true;
    throw error;
  }
  try {
    // The state is the field after "(command)"; Z is a zombie.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

describe("ScriptExecutor", () => {
  it("reports RUNNING, then SUCCEEDED with the tail of stdout as the result", async () => {
    const { reports, terminal } = run({ command: NODE, args: ["-e", "process.stdout.write('x'.repeat(10000) + 'the end\\n')"] });
    const done = await terminal;
    expect(reports.map((r) => r.state)).toEqual([ExecutionState.RUNNING, ExecutionState.SUCCEEDED]);
    expect(done.result.endsWith("x".repeat(100) + "the end")).toBe(true);
    expect(Buffer.byteLength(done.result)).toBeLessThanOrEqual(4096);
    expect(done.result.length).toBeGreaterThan(4000);
    expect(done.error).toBe("");
  });

  it("fails a non-zero exit, naming the code and keeping the tail of stderr", async () => {
    // exitCode rather than exit(): Node drops what is still queued on a pipe at process.exit().
    const script = "for (let i = 0; i < 500; i++) console.error('line ' + i); console.log('partial'); process.exitCode = 3";
    const done = await run({ command: NODE, args: ["-e", script] }).terminal;
    expect(done.state).toBe(ExecutionState.FAILED);
    expect(done.error.startsWith("exit code 3: ")).toBe(true);
    expect(done.error.endsWith("line 498\nline 499")).toBe(true);
    expect(done.error).not.toContain("line 0\n");
    expect(Buffer.byteLength(done.error)).toBeLessThanOrEqual(4096);
  });

  it("fails a script killed by a signal, naming the signal", async () => {
    const done = await run({ command: NODE, args: ["-e", "process.kill(process.pid, 'SIGSEGV')"] }).terminal;
    expect(done).toMatchObject({ state: ExecutionState.FAILED, error: "killed by SIGSEGV" });
  });

  it("hands the execution context over as JSON on stdin and as SHARDLINE_* variables, with the job's env and args", async () => {
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const done = await run(
      { command: NODE, args: [fixture("report-context.mjs"), "--month", "current"], env: { REGION: "eu-1", SHARDLINE_JOB: "spoofed", SHARDLINE_FENCING_TOKEN: "99999999999", SHARDLINE_REVISION: "1" } },
      { traceparent },
    ).terminal;
    expect(done.state).toBe(ExecutionState.SUCCEEDED);
    const seen = JSON.parse(done.result) as { stdin: unknown; env: Record<string, string>; args: string[] };
    expect(seen.stdin).toEqual({
      executionId: `billing/${FIRE}/3/2`,
      job: "billing",
      shard: 3,
      shardCount: 8,
      shardParameter: "shanghai",
      parameter: "month=current",
      fireTime: "2023-11-14T22:13:20.000Z",
      attempt: 2,
      agentId: "agent-1",
      fencingToken: "12884901895",
      revision: 5,
    });
    expect(seen.env).toEqual({
      SHARDLINE_EXECUTION_ID: `billing/${FIRE}/3/2`,
      SHARDLINE_JOB: "billing",
      SHARDLINE_SHARD: "3",
      SHARDLINE_SHARD_COUNT: "8",
      SHARDLINE_SHARD_PARAMETER: "shanghai",
      SHARDLINE_PARAMETER: "month=current",
      SHARDLINE_FIRE_TIME: "2023-11-14T22:13:20.000Z",
      SHARDLINE_ATTEMPT: "2",
      SHARDLINE_AGENT_ID: "agent-1",
      // The token, not the job's env of the same name: a job cannot pass itself off as the shard's owner.
      SHARDLINE_FENCING_TOKEN: "12884901895",
      // The revision the run executes, not the job's env of the same name.
      SHARDLINE_REVISION: "5",
      TRACEPARENT: traceparent,
      REGION: "eu-1",
    });
    expect(seen.args).toEqual(["--month", "current"]);
  });

  it("on timeout sends SIGTERM, then SIGKILL after the grace to a script that ignores it, and reports TIMED_OUT once its processes are gone", async () => {
    const ready = await readyChannel();
    // Long enough for the fixture to install its SIGTERM handler; the order is checked below.
    const { terminal } = run(
      { command: NODE, args: [fixture("stubborn.mjs")], env: { READY_PORT: String(ready.port) }, killGraceMs: 200 },
      { timeoutMs: 3_000 },
    );
    let timedOut = false;
    void terminal.then(() => (timedOut = true));
    const { pid, grandchild } = JSON.parse(await ready.message) as { pid: number; grandchild: number };
    expect(timedOut).toBe(false);
    expect(isGone(pid)).toBe(false);

    const done = await terminal;
    expect(done.state).toBe(ExecutionState.TIMED_OUT);
    expect(done.error).toBe("timed out after 3000 ms; the process was killed by SIGKILL after a grace of 200 ms: ignoring SIGTERM");
    expect(isGone(pid)).toBe(true);
    // SIGKILL was sent to its group and it closed its pipes; the kernel finishes its exit on its own time.
    await expect.poll(() => isGone(grandchild)).toBe(true);
  });

  it("on timeout reports TIMED_OUT as soon as a script that obeys SIGTERM has exited", async () => {
    const done = await run({ command: NODE, args: ["-e", "setInterval(() => {}, 1000)"], killGraceMs: 600_000 }, { timeoutMs: 50 }).terminal;
    expect(done).toMatchObject({ state: ExecutionState.TIMED_OUT, error: "timed out after 50 ms; the process ended with killed by SIGTERM" });
  });

  it("cancels: SIGTERM, SIGKILL after the grace, CANCELLED only once the process group is gone", async () => {
    const ready = await readyChannel();
    const { execution, reports, terminal } = run({
      command: NODE,
      args: [fixture("stubborn.mjs")],
      env: { READY_PORT: String(ready.port) },
      killGraceMs: 100,
    });
    const { pid, grandchild } = JSON.parse(await ready.message) as { pid: number; grandchild: number };
    execution.stop(ExecutionState.CANCELLED, "cancelled by an operator");
    // The process is still there, ignoring SIGTERM: nothing is reported yet.
    expect(execution.finished).toBe(false);
    expect(reports.map((r) => r.state)).toEqual([ExecutionState.RUNNING]);

    const done = await terminal;
    expect(done.state).toBe(ExecutionState.CANCELLED);
    expect(done.error).toMatch(/^cancelled by an operator; the process was killed by SIGKILL after a grace of 100 ms/);
    expect(isGone(pid)).toBe(true);
    await expect.poll(() => isGone(grandchild)).toBe(true);
  });

  it("reports LOST when fenced, and a kill grace of 0 sends SIGKILL at once", async () => {
    const ready = await readyChannel();
    const { execution, terminal } = run({ command: NODE, args: [fixture("stubborn.mjs")], env: { READY_PORT: String(ready.port) }, killGraceMs: 0 });
    const { pid } = JSON.parse(await ready.message) as { pid: number };
    execution.stop(ExecutionState.LOST, "fenced: no heartbeat ack within the lease");
    const done = await terminal;
    expect(done.state).toBe(ExecutionState.LOST);
    expect(done.error).toMatch(/^fenced: no heartbeat ack within the lease; the process was killed by SIGKILL after a grace of 0 ms/);
    expect(isGone(pid)).toBe(true);
  });

  it("refuses a command that is not on the allow-list, without starting it", async () => {
    const { reports, terminal } = run({ command: "rm", args: ["-rf", "/tmp/nothing-here"] }, { allowed: ["python3", NODE] });
    expect(await terminal).toMatchObject({
      state: ExecutionState.FAILED,
      error: `command "rm" is not allowed on this agent; allowed: python3, ${NODE}`,
    });
    expect(reports).toHaveLength(1);
  });

  it("says how to allow scripts when the allow-list is empty", async () => {
    const done = await run({ command: NODE, args: ["-e", ""] }, { allowed: [] }).terminal;
    expect(done.error).toMatch(/is not allowed on this agent; allowed: none \(start the agent with --allow-script COMMAND\)$/);
  });

  it("fails a command that does not exist, naming it", async () => {
    const { reports, terminal } = run({ command: "shardline-no-such-command" }, { allowed: ["shardline-no-such-command"] });
    const done = await terminal;
    expect(done.state).toBe(ExecutionState.FAILED);
    expect(done.error).toMatch(/^cannot start command "shardline-no-such-command": .*ENOENT/);
    expect(reports).toHaveLength(1);
  });

  it("succeeds for a script that never reads its stdin", async () => {
    const done = await run({ command: NODE, args: ["-e", "process.stdout.write('ok')"] }).terminal;
    expect(done).toMatchObject({ state: ExecutionState.SUCCEEDED, result: "ok" });
  });
});
