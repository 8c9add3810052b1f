import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { stopAgents } from "../cli/demo.js";
import { startController } from "../controller/shell/controller.js";
import { AdminService } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentState, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../shared/grpc/index.js";
import { silentLogger } from "../shared/logging.js";
import { type ConsolePage, HeadlessChromium } from "../test/harness/browser.js";

/**
 * The console's screenshots in docs/console/ (`npm run screenshots`), made from a real run: a
 * controller on an embedded SQLite store with a token file, eight agent processes in three
 * clusters running the demo's handlers (each writing a few log lines), four jobs (one whose
 * every run fails, one paused), and one agent killed with SIGKILL, whose shards the others take
 * over before the pages are shot.
 * Each page is opened in Debian's chromium at 1280x800 in the light scheme, signed in as an admin.
 */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLI = join(ROOT, "dist", "cli", "main.js");
const HANDLERS = join(ROOT, "dist", "cli", "demo-handlers.js");
const OUT = join(ROOT, "docs", "console");

/**
 * The demo's handlers, each writing its execution's log first (the demo's own write none), so the
 * execution page is shot with a log. Written beside the run's state, as a module the agents load.
 */
const LOGGING_HANDLERS = `import demo from ${JSON.stringify(pathToFileURL(HANDLERS).href)};
export default {
  async rollup(ctx) {
    ctx.log.info({ parameter: ctx.parameter, revision: ctx.revision }, "rollup started");
    ctx.log.info({ rows: 1200 + 250 * ctx.shard }, "ledger rows read");
    try {
      return await demo.rollup(ctx);
    } catch (error) {
      ctx.log.error("rollup failed: " + error.message);
      throw error;
    }
  },
  async sweep(ctx) {
    ctx.log.info({ shard: ctx.shard }, "sweep started");
    return demo.sweep(ctx);
  },
};
`;

const TOKENS = { admin: "screenshots-admin-0123456789abcdef", agent: "screenshots-agent-0123456789abcdef" };

const AGENTS = [
  { id: "eu-1", cluster: "eu", zone: "eu-a" },
  { id: "eu-2", cluster: "eu", zone: "eu-b" },
  { id: "eu-3", cluster: "eu", zone: "eu-c" },
  { id: "us-1", cluster: "us", zone: "us-a" },
  { id: "us-2", cluster: "us", zone: "us-b" },
  { id: "us-3", cluster: "us", zone: "us-c" },
  { id: "ap-1", cluster: "ap", zone: "ap-a" },
  { id: "ap-2", cluster: "ap", zone: "ap-b" },
];
/** Killed with SIGKILL halfway through the run: the map then shows its shards on the others. */
const VICTIM = "ap-2";

const JOBS = [
  {
    name: "sweep",
    shards: 6,
    spec: `schedule: "* * * * * *"
  shards: 6
  shardParameters: {"0": eu-north, "1": eu-west, "2": us-east, "3": us-west, "4": ap-south, "5": ap-east}
  handler: sweep
  disconnectGraceSeconds: 0
  placement: {spreadBy: [cluster]}`,
  },
  { name: "billing-rollup", shards: 4, spec: `schedule: "*/2 * * * * *"\n  shards: 4\n  handler: rollup\n  parameter: "v1"\n  disconnectGraceSeconds: 0` },
  // The demo's rollup fails every run of a parameter saying "broken": the console's failures.
  { name: "ledger-export", shards: 3, spec: `schedule: "*/3 * * * * *"\n  shards: 3\n  handler: rollup\n  parameter: "v7-broken"\n  disconnectGraceSeconds: 0` },
  { name: "cache-warm", shards: 2, spec: `schedule: "*/5 * * * * *"\n  shards: 2\n  handler: sweep\n  disconnectGraceSeconds: 0` },
] as const;
/** Paused once it has run: a paused job among the running ones. */
const PAUSED = "cache-warm";

/** How long the jobs run before the screenshots: long enough for a page of history and a failover. */
const RUN_MS = 14_000;
const WAIT_MS = 30_000;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "shardline-screenshots-"));
  await writeFile(join(dir, "tokens"), `${TOKENS.admin},alice,admin\n${TOKENS.agent},agents,agent\n`);
  const handlers = join(dir, "handlers.mjs");
  await writeFile(handlers, LOGGING_HANDLERS);
  const controller = await startController({
    listen: "127.0.0.1:0",
    http: "127.0.0.1:0",
    store: `sqlite:${join(dir, "state.db")}`,
    tokenFile: join(dir, "tokens"),
    logger: silentLogger(),
  });
  const admin = createClient(AdminService, controller.grpcAddress, { deadlineMs: 5000, metadata: { authorization: `Bearer ${TOKENS.admin}` } });
  const logFile = openSync(join(dir, "agents.log"), "a");
  const agents = new Map<string, ChildProcess>();
  let browser: HeadlessChromium | undefined;
  try {
    for (const agent of AGENTS) {
      const args = [CLI, "agent", "--controller", controller.grpcAddress, "--id", agent.id, "--label", `cluster=${agent.cluster}`, "--label", `zone=${agent.zone}`, "--handlers", handlers];
      agents.set(agent.id, spawn(process.execPath, args, { stdio: ["ignore", logFile, logFile], env: { ...process.env, SHARDLINE_TOKEN: TOKENS.agent, SHARDLINE_LOG_LEVEL: "info" } }));
    }
    await until("the eight agents to connect", async () => (await admin.listAgents({})).agents.filter((a) => a.state === AgentState.READY).length === AGENTS.length);
    for (const job of JOBS) {
      await admin.applyJob({ manifest: `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${job.name}}\nspec:\n  ${job.spec}\n` });
    }
    const started = Date.now();
    await until(`${PAUSED} to run`, async () => (await admin.listExecutions({ job: PAUSED, state: ExecutionState.SUCCEEDED, limit: 1 })).executions.length > 0);
    await admin.pauseJob({ name: PAUSED });
    await sleep(RUN_MS / 2 - (Date.now() - started));
    agents.get(VICTIM)!.kill("SIGKILL");
    const shards = JOBS.reduce((sum, job) => sum + job.shards, 0);
    await until("every shard to be owned by a live agent", async () => {
      const owners = (await admin.listAssignments({})).assignments.map((a) => a.agent);
      return owners.length === shards && !owners.includes(VICTIM);
    });
    await sleep(RUN_MS - (Date.now() - started));
    const failed = (await admin.listExecutions({ job: "ledger-export", state: ExecutionState.FAILED, limit: 1 })).executions[0];
    if (failed === undefined) throw new Error("ledger-export has no failed execution to show");

    browser = await HeadlessChromium.launch();
    const page = await browser.newPage({ baseURL: `http://${controller.httpAddress}`, viewport: { width: 1280, height: 800 }, colorScheme: "light" });
    mkdirSync(OUT, { recursive: true });
    await page.open("/");
    await page.testId("signin").waitFor({ timeout: WAIT_MS });
    await shoot(page, "signin.png");
    await page.signIn(TOKENS.admin, WAIT_MS);

    const signedInAt = page.problems.length;
    await show(page, "/", async () => {
      await count(page, "shard-cell", shards);
      // A watch's first status may carry no rates yet; the next, a second later, does.
      await until("the overview to show a fire rate", async () => Number(await page.testId("status-fires-per-second").textContent()) > 0);
    });
    await shoot(page, "overview.png");
    await show(page, "/jobs", async () => count(page, "job-row", JOBS.length));
    await shoot(page, "jobs.png");
    await show(page, "/jobs/sweep", async () => page.testId("execution-row").first().waitFor({ timeout: WAIT_MS }));
    await shoot(page, "job.png");
    // Filtered to the agent of a failed run: its jobs' runs, red among green.
    await show(page, `/executions?agent=${encodeURIComponent(failed.agent)}`, async () => page.testId("execution-row").first().waitFor({ timeout: WAIT_MS }));
    await shoot(page, "executions.png");
    await show(page, `/executions/${encodeURIComponent(failed.id)}`, async () => {
      await page.testId("execution-page").waitFor({ timeout: WAIT_MS });
      await until("the execution's log to be read to its end", async () => (await page.testId("log-status").textContent()) === "complete");
    });
    await shoot(page, "execution.png");
    const listed = (await admin.listAgents({})).agents.length;
    await show(page, "/agents", async () => count(page, "agent-row", listed));
    await shoot(page, "agents.png");
    const problems = page.problems.slice(signedInAt);
    if (problems.length > 0) process.stderr.write(`the console reported:\n${problems.join("\n")}\n`);
  } finally {
    await browser?.close();
    await stopAgents(agents.values());
    admin.close();
    await controller.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Opens `path` (signing in again if the page asks) and waits for what it must show first. */
async function show(page: ConsolePage, path: string, ready: () => Promise<unknown>): Promise<void> {
  await page.open(path);
  await page.page.locator('[data-testid="signin"], [data-testid="whoami"]').first().waitFor({ timeout: WAIT_MS });
  if ((await page.testId("signin").count()) > 0) await page.signIn(TOKENS.admin, WAIT_MS);
  await ready();
}

/** Waits until the page shows at least `n` elements with data-testid `id`. */
async function count(page: ConsolePage, id: string, n: number): Promise<void> {
  await page.testId(id).nth(n - 1).waitFor({ timeout: WAIT_MS });
}

async function shoot(page: ConsolePage, name: string): Promise<void> {
  await page.page.screenshot({ path: join(OUT, name), animations: "disabled", caret: "hide" });
  process.stdout.write(`wrote docs/console/${name}\n`);
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    await sleep(200);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

main().catch((error: unknown) => {
  process.stderr.write(`console-screenshots: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
