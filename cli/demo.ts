import { type ChildProcess, spawn } from "node:child_process";
import { openSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startController } from "../controller/shell/controller.js";
import { AdminService, type WatchEventsResponse } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { type Execution, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../shared/grpc/index.js";
import { silentLogger } from "../shared/logging.js";

export interface DemoOptions {
  /** Stop by itself after this many seconds (default 30). */
  durationSeconds?: number;
  /** Where to draw; default stdout. */
  out?: NodeJS.WriteStream;
}

const HERE = dirname(fileURLToPath(import.meta.url));
/** The demo's agents, in two clusters and three zones: the console's shard map groups them so. */
const AGENTS: Record<string, string[]> = {
  "agent-a": ["cluster=east", "zone=east-1"],
  "agent-b": ["cluster=east", "zone=east-2"],
  "agent-c": ["cluster=west", "zone=west-1"],
};
const VICTIM = "agent-b";
const MANIFEST = `apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: sweep}
spec:
  schedule: "* * * * * *"
  shards: 6
  shardParameters: {"0": eu-north, "1": eu-west, "2": us-east, "3": us-west, "4": ap-south, "5": ap-east}
  handler: sweep
  # Short runs every second: a lost one re-runs at once, rather than after a disconnect grace.
  disconnectGraceSeconds: 0
`;

/** How the demos draw an execution's state. */
export const GLYPH: Partial<Record<ExecutionState, string>> = {
  [ExecutionState.PENDING]: "…",
  [ExecutionState.RUNNING]: "▶",
  [ExecutionState.SUCCEEDED]: "✓",
  [ExecutionState.FAILED]: "✗",
  [ExecutionState.LOST]: "✗",
  [ExecutionState.MISFIRED]: "–",
  [ExecutionState.CANCELLED]: "○",
  [ExecutionState.TIMED_OUT]: "⧗",
  [ExecutionState.UNKNOWN]: "?",
};

/**
 * The whole system in one command: a controller on an embedded SQLite store, three agent
 * processes, a 6-shard job firing every second, and a live view. A few seconds in, one agent is
 * killed with SIGKILL; its shards move to the survivors once its lease expires, and a failed-over
 * run is shown. Later it comes back and takes its fair share again.
 */
export async function runDemo(options: DemoOptions = {}): Promise<void> {
  const durationMs = (options.durationSeconds ?? 30) * 1000;
  const out = options.out ?? process.stdout;
  const live = out.isTTY === true;
  const dir = await mkdtemp(join(tmpdir(), "shardline-demo-"));
  const controller = await startController({
    listen: "127.0.0.1:0",
    http: "127.0.0.1:0",
    store: `sqlite:${join(dir, "demo.db")}`,
    logger: silentLogger(),
  });
  const admin = createClient(AdminService, controller.grpcAddress, { deadlineMs: 5000 });
  const logFile = openSync(join(dir, "agents.log"), "a");
  const agents = new Map<string, ChildProcess>();
  const spawnAgent = (id: string): void => {
    const child = spawn(
      process.execPath,
      [
        join(HERE, "main.js"),
        "agent",
        "--controller",
        controller.grpcAddress,
        "--id",
        id,
        "--handlers",
        join(HERE, "demo-handlers.js"),
        ...(AGENTS[id] ?? []).flatMap((label) => ["--label", label]),
      ],
      { stdio: ["ignore", logFile, logFile], env: { ...process.env, SHARDLINE_LOG_LEVEL: "info" } },
    );
    agents.set(id, child);
  };

  const events: string[] = [];
  const watch = new AbortController();
  const note = (line: string): void => {
    events.push(`${clock(Date.now())}  ${line}`);
    if (events.length > 9) events.shift();
    if (!live) out.write(`${clock(Date.now())}  ${line}\n`);
  };
  void (async () => {
    try {
      for await (const event of admin.watchEvents({}, { signal: watch.signal })) {
        if (interesting(event)) note(event.message);
      }
    } catch {
      // The watch ends when the demo stops.
    }
  })();

  const started = Date.now();
  let killedAt: number | undefined;
  let victimShards: number[] = [];
  let failoverMs: number | undefined;
  let restarted = false;
  const consoleUrl = `http://${controller.httpAddress}/`;
  out.write(`Shardline demo: controller ${controller.grpcAddress}, store ${join(dir, "demo.db")}, agent logs ${join(dir, "agents.log")}\n`);
  out.write(`Web console: ${consoleUrl} (live while the demo runs: ${Math.round(durationMs / 1000)} s; "npm run demo -- --duration 600" to look longer)\n`);
  try {
    for (const id of Object.keys(AGENTS)) spawnAgent(id);
    await admin.applyJob({ manifest: MANIFEST });
    note("applied job sweep: 6 shards, every second");
    while (Date.now() - started < durationMs) {
      const elapsed = Date.now() - started;
      if (killedAt === undefined && elapsed > Math.min(8000, durationMs / 3)) {
        victimShards = (await admin.listAssignments({ job: "sweep" })).assignments.filter((a) => a.agent === VICTIM).map((a) => a.shard);
        agents.get(VICTIM)?.kill("SIGKILL");
        killedAt = Date.now();
        note(`killed ${VICTIM} with SIGKILL (it owned shards ${victimShards.join(", ")}); they move once its 2 s lease expires`);
      }
      if (!restarted && killedAt !== undefined && elapsed > Math.min(18_000, (durationMs * 2) / 3)) {
        restarted = true;
        spawnAgent(VICTIM);
        note(`restarted ${VICTIM}; sticky sharding gives it back at most its fair share`);
      }
      const executions = (await admin.listExecutions({ job: "sweep", limit: 120 })).executions;
      if (killedAt !== undefined && failoverMs === undefined && victimShards.length > 0) {
        const movedAt = victimShards.map((shard) =>
          executions
            .filter((e) => e.shard === shard && e.agent !== VICTIM && Number(e.startedAtUnixMs) > killedAt!)
            .map((e) => Number(e.startedAtUnixMs))
            .sort((a, b) => a - b)[0],
        );
        if (movedAt.every((t) => t !== undefined)) {
          failoverMs = Math.max(...(movedAt as number[])) - killedAt;
          note(`failover: every shard of ${VICTIM} ran elsewhere ${failoverMs} ms after the kill`);
        }
      }
      const view = await render(admin, executions, events, controller.term, consoleUrl);
      if (live) out.write(`\x1b[H\x1b[2J${view}`);
      else if (Math.floor(elapsed / 1000) % 5 === 0) out.write(`${view}\n`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } finally {
    watch.abort();
    await stopAgents(agents.values());
    const executions = (await admin.listExecutions({ job: "sweep", limit: 10_000 })).executions;
    admin.close();
    await controller.stop();
    await rm(dir, { recursive: true, force: true });
    out.write(`\n${summary(executions, failoverMs)}\n`);
  }
}

function interesting(event: WatchEventsResponse): boolean {
  return ["agent.joined", "agent.lost", "agent.lease-expired", "agent.left", "agent.draining", "shard.assigned", "execution.failover"].includes(
    event.type,
  );
}

async function render(
  admin: ReturnType<typeof createClient<typeof AdminService>>,
  executions: Execution[],
  events: string[],
  term: number,
  consoleUrl: string,
): Promise<string> {
  const agents = (await admin.listAgents({})).agents;
  const lines = [`Shardline demo  ${clock(Date.now())}  term ${term}  console ${consoleUrl}  (Ctrl-C to stop)`, "", "AGENT      STATE      SHARDS"];
  const states = ["?", "ready", "draining", "lost"];
  for (const agent of agents) {
    lines.push(`${agent.id.padEnd(10)} ${(states[agent.state] ?? "?").padEnd(10)} ${agent.shards.map((s) => s.shard).join(" ")}`);
  }
  lines.push("", "FIRE".padEnd(14) + [0, 1, 2, 3, 4, 5].map((s) => `shard ${s}`.padEnd(11)).join(""));
  const fires = [...new Set(executions.map((e) => Number(e.fireTimeUnixMs)))].sort((a, b) => b - a).slice(0, 8);
  for (const fire of fires) {
    const cells = [0, 1, 2, 3, 4, 5].map((shard) => {
      const runs = executions.filter((e) => Number(e.fireTimeUnixMs) === fire && e.shard === shard).sort((a, b) => a.attempt - b.attempt);
      const last = runs.at(-1);
      if (last === undefined) return "".padEnd(11);
      const who = last.agent === "" ? "-" : last.agent.replace("agent-", "");
      const again = last.attempt > 1 ? `#${last.attempt}` : "";
      return `${GLYPH[last.state] ?? "?"} ${who}${again}`.padEnd(11);
    });
    lines.push(`${clock(fire)}  ${cells.join("")}`);
  }
  lines.push("", "✓ succeeded  ▶ running  … pending  ✗ lost/failed  – misfired   a/b/c = agent, #2 = failover re-run", "", "EVENTS", ...events, "");
  return lines.join("\n");
}

function summary(executions: Execution[], failoverMs: number | undefined): string {
  const count = (state: ExecutionState) => executions.filter((e) => e.state === state).length;
  const fires = new Set(executions.map((e) => e.fireTimeUnixMs)).size;
  return [
    `Demo finished: ${fires} fires, ${count(ExecutionState.SUCCEEDED)} executions succeeded, ${count(ExecutionState.LOST)} lost with the killed agent and re-run elsewhere, ${count(ExecutionState.MISFIRED)} misfired.`,
    failoverMs === undefined ? "" : `Hard-crash failover: ${failoverMs} ms from SIGKILL to every moved shard running again (lease 2 s).`,
  ]
    .filter((l) => l !== "")
    .join("\n");
}

/** Stops the demo's agent processes (SIGTERM) and resolves once every one has exited. */
export async function stopAgents(children: Iterable<ChildProcess>): Promise<void> {
  await Promise.all(
    [...children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        }),
    ),
  );
}

/** Unix ms as the demos show time: HH:MM:SS.mmm (UTC). */
export function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23);
}
