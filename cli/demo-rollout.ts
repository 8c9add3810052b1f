import { type ChildProcess, spawn } from "node:child_process";
import { openSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startController } from "../controller/shell/controller.js";
import { AdminService, type WatchEventsResponse } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { type Execution, ExecutionState, type RolloutStatus } from "../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../shared/grpc/index.js";
import { silentLogger } from "../shared/logging.js";
import { clock, GLYPH, stopAgents } from "./demo.js";

export interface RolloutDemoOptions {
  /** Stop by itself after this many seconds at most (default 60); it stops sooner once the story is told. */
  durationSeconds?: number;
  /** Where to draw; default stdout. */
  out?: NodeJS.WriteStream;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const CLUSTERS = ["canary", "east", "west"];
const SHARDS = 6;

function manifest(parameter: string): string {
  return `apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: rollup}
spec:
  schedule: "* * * * * *"
  shards: ${SHARDS}
  handler: rollup
  parameter: "${parameter}"
  disconnectGraceSeconds: 0
  placement: {spreadBy: [cluster]}
  rollout:
    steps:
      - wave: {clusters: [canary]}
      - analysis: {minExecutions: 4, maxFailures: 1}
      - wave: {clusters: [east]}
      - pause: {fires: 3}
      - wave: {clusters: [west]}
`;
}

/**
 * Rollouts in one command (`shardline demo --rollout`): a controller on an embedded SQLite store,
 * one agent process in each of three clusters (canary, east, west), and a 6-shard job spread
 * across them whose changes roll out canary first, through an analysis of the canary's own runs,
 * then east, then west. Revision 2 breaks every run it reaches: its analysis aborts it within the
 * canary wave and every shard goes back to revision 1. Revision 3 works and reaches every cluster.
 */
export async function runRolloutDemo(options: RolloutDemoOptions = {}): Promise<void> {
  const durationMs = (options.durationSeconds ?? 60) * 1000;
  const out = options.out ?? process.stdout;
  const live = out.isTTY === true;
  const dir = await mkdtemp(join(tmpdir(), "shardline-rollout-demo-"));
  const controller = await startController({ listen: "127.0.0.1:0", http: "127.0.0.1:0", store: `sqlite:${join(dir, "demo.db")}`, logger: silentLogger() });
  const admin = createClient(AdminService, controller.grpcAddress, { deadlineMs: 5000 });
  const logFile = openSync(join(dir, "agents.log"), "a");
  const agents: ChildProcess[] = [];
  for (const cluster of CLUSTERS) {
    const args = [join(HERE, "main.js"), "agent", "--controller", controller.grpcAddress, "--id", `${cluster}-1`, "--label", `cluster=${cluster}`, "--handlers", join(HERE, "demo-handlers.js")];
    agents.push(spawn(process.execPath, args, { stdio: ["ignore", logFile, logFile], env: { ...process.env, SHARDLINE_LOG_LEVEL: "info" } }));
  }

  const events: string[] = [];
  const note = (line: string): void => {
    events.push(`${clock(Date.now())}  ${line}`);
    if (events.length > 10) events.shift();
    if (!live) out.write(`${clock(Date.now())}  ${line}\n`);
  };
  const watch = new AbortController();
  void (async () => {
    try {
      for await (const event of admin.watchEvents({ job: "rollup" }, { signal: watch.signal })) {
        if (interesting(event)) note(event.message);
      }
    } catch {
      // The watch ends when the demo stops.
    }
  })();

  out.write(`Shardline rollout demo: controller ${controller.grpcAddress}, store ${join(dir, "demo.db")}, agent logs ${join(dir, "agents.log")}\n`);
  const started = Date.now();
  // The story: revision 1 runs everywhere; 2 is broken and rolled back; 3 reaches every cluster.
  let stage: "v1" | "broken" | "fixed" | "done" = "v1";
  let stageAt = started;
  let doneAt: number | undefined;
  try {
    await admin.applyJob({ manifest: manifest("v1") });
    note("applied revision 1 of job rollup: 6 shards spread over clusters canary, east and west, every second");
    while (Date.now() - started < durationMs && (doneAt === undefined || Date.now() - doneAt < 3000)) {
      const rollout = (await admin.getRollout({ job: "rollup" })).rollout;
      if (stage === "v1" && Date.now() - stageAt > 4000) {
        await admin.applyJob({ manifest: manifest("v2-broken") });
        note("applied revision 2, whose change breaks every run: it goes to the canary cluster first");
        [stage, stageAt] = ["broken", Date.now()];
      } else if (stage === "broken" && rollout?.phase === "aborted" && Date.now() - stageAt > 1000) {
        await new Promise((resolve) => setTimeout(resolve, 2000));
        await admin.applyJob({ manifest: manifest("v3") });
        note("applied revision 3, which works: canary, the analysis, east, three fires, west");
        [stage, stageAt] = ["fixed", Date.now()];
      } else if (stage === "fixed" && rollout?.phase === "completed" && doneAt === undefined) {
        doneAt = Date.now();
        stage = "done";
      }
      const executions = (await admin.listExecutions({ job: "rollup", limit: 200 })).executions;
      const view = await render(admin, rollout, executions, events);
      if (live) out.write(`\x1b[H\x1b[2J${view}`);
      else if (Math.floor((Date.now() - started) / 1000) % 5 === 0) out.write(`${view}\n`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } finally {
    watch.abort();
    await stopAgents(agents);
    const executions = (await admin.listExecutions({ job: "rollup", limit: 10_000 })).executions;
    admin.close();
    await controller.stop();
    await rm(dir, { recursive: true, force: true });
    out.write(`\n${summary(executions)}\n`);
  }
}

function interesting(event: WatchEventsResponse): boolean {
  return event.type.startsWith("rollout.") || event.type === "job.updated";
}

async function render(admin: ReturnType<typeof createClient<typeof AdminService>>, rollout: RolloutStatus | undefined, executions: Execution[], events: string[]): Promise<string> {
  const assignments = (await admin.listAssignments({ job: "rollup" })).assignments;
  const lines = [`Shardline rollout demo  ${clock(Date.now())}  (Ctrl-C to stop)`, ""];
  if (rollout !== undefined && rollout.phase !== "none") {
    const step = rollout.step <= rollout.steps.length ? `step ${rollout.step}/${rollout.steps.length}: ${rollout.steps[rollout.step - 1]}` : "every step done";
    lines.push(`ROLLOUT  revision ${rollout.targetRevision} from ${rollout.stableRevision}  ${rollout.phase}  ${step}`);
    if (rollout.target !== undefined) lines.push(`         revision ${rollout.targetRevision}'s runs since its last wave: ${rollout.target.runs}, failed ${rollout.target.failures}`);
    if (rollout.waiting !== "") lines.push(`         ${rollout.waiting}`);
    if (rollout.reason !== "") lines.push(`         ${rollout.reason}`);
  } else {
    lines.push(`ROLLOUT  none yet: every shard runs revision ${rollout?.currentRevision ?? 1}`);
  }
  lines.push("", "CLUSTER   AGENT       SHARDS (revision of the latest run, and how it went)");
  for (const cluster of CLUSTERS) {
    const agent = `${cluster}-1`;
    const cells = assignments
      .filter((a) => a.agent === agent)
      .map((a) => a.shard)
      .sort((a, b) => a - b)
      .map((shard) => {
        const last = executions.filter((e) => e.shard === shard).sort((a, b) => Number(b.fireTimeUnixMs) - Number(a.fireTimeUnixMs))[0];
        return last === undefined ? `${shard}:-` : `${shard}:r${last.revision}${GLYPH[last.state] ?? "?"}`;
      });
    lines.push(`${cluster.padEnd(9)} ${agent.padEnd(11)} ${cells.join("  ")}`);
  }
  lines.push("", "✓ succeeded  ✗ failed  ▶ running  … pending  – misfired", "", "EVENTS", ...events, "");
  return lines.join("\n");
}

/** Which clusters ran each revision, from the agents' ids (CLUSTER-1), and how. */
function summary(executions: Execution[]): string {
  const byRevision = new Map<bigint, Execution[]>();
  for (const execution of executions) byRevision.set(execution.revision, [...(byRevision.get(execution.revision) ?? []), execution]);
  const lines = ["Rollout demo finished."];
  for (const [revision, runs] of [...byRevision].sort(([a], [b]) => Number(a - b))) {
    const finished = runs.filter((e) => e.state === ExecutionState.SUCCEEDED || e.state === ExecutionState.FAILED);
    const clusters = [...new Set(finished.map((e) => e.agent.replace(/-1$/, "")))].sort((a, b) => CLUSTERS.indexOf(a) - CLUSTERS.indexOf(b));
    const failed = finished.filter((e) => e.state === ExecutionState.FAILED).length;
    lines.push(`revision ${revision} ran on ${clusters.length === 0 ? "no cluster" : clusters.join(", ")}: ${finished.length} runs, ${failed} failed`);
  }
  return lines.join("\n");
}
