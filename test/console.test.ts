import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentState } from "../shared/gen/shardline/v1/types_pb.js";
import { createClient } from "../shared/grpc/index.js";
import { type ConsolePage, HeadlessChromium } from "./harness/browser.js";
import { type AdminClient, CLI, freePort, requireBuiltCli, shardline, waitFor } from "./harness/processes.js";
import { RECORDING_HANDLERS } from "./harness/shardline-env.js";
import { spawnAgent, TrackedProcess } from "./harness/tracked-process.js";

/** The built console the controller serves at `/`. */
const CONSOLE_PAGE = join(dirname(CLI), "..", "console", "index.html");

/** One token per role; the console signs in with the admin roles, the agents join with theirs. */
const TOKENS = {
  viewer: "viewer-token-0123456789abcdef",
  operator: "operator-token-0123456789abcdef",
  admin: "admin-token-0123456789abcdef",
  agent: "agent-token-0123456789abcdef",
} as const;
const NAMES = { viewer: "grafana", operator: "oncall", admin: "alice", agent: "agents" } as const;

/** Four agents in two clusters, one per zone. */
const AGENTS = [
  { id: "east-a", cluster: "east", zone: "a" },
  { id: "east-b", cluster: "east", zone: "b" },
  { id: "west-a", cluster: "west", zone: "a" },
  { id: "west-b", cluster: "west", zone: "b" },
] as const;

/** Two jobs firing every second, run by the recording handlers' `work`. */
const JOBS = [
  { name: "sweep", shards: 4 },
  { name: "rollup", shards: 3 },
] as const;

const manifest = (job: (typeof JOBS)[number]): string => `apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: ${job.name}}
spec:
  schedule: "* * * * * *"
  shards: ${job.shards}
  handler: work
`;

/** Handlers that write their execution's log with ctx.log (test/execution-logs.test.ts runs them too). */
const LOGGING_HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "logging-handlers.mjs");

/** What a wait in the browser may take on a loaded two-core machine: far above what it takes idle. */
const BROWSER_WAIT_MS = 30_000;
/** A shard moves once its killed owner's 2 s lease has lapsed; the console then redraws it. */
const FAILOVER_WAIT_MS = 45_000;

/** `shardline get executions -o json`: the fields these tests read. */
interface ExecutionJson {
  id: string;
  shard: number;
  fireTime: string;
  cause: string | null;
  state: string;
}

/** `shardline get agents -o json`: the fields these tests read. */
interface AgentJson {
  id: string;
  state: string;
  cordoned: boolean;
}

/** A shard square of the overview's map, as the page draws it. */
interface ShardCell {
  job: string;
  shard: number;
  agent: string;
}

/**
 * A controller process on SQLite that checks tokens (viewer, operator, admin, agent), serving
 * the console on its --http port, and four agent processes labelled with their cluster and zone.
 */
class ConsoleCluster {
  readonly agents = new Map<string, TrackedProcess>();
  /** A viewer's admin client of the controller, for waiting on what the controller says. */
  readonly admin: AdminClient;

  private constructor(
    readonly dir: string,
    readonly controller: TrackedProcess,
    readonly grpcAddress: string,
    /** The console's origin. */
    readonly baseURL: string,
  ) {
    this.admin = createClient(AdminService, grpcAddress, { deadlineMs: 5000, metadata: { authorization: `Bearer ${TOKENS.viewer}` } });
  }

  static async start(): Promise<ConsoleCluster> {
    requireBuiltCli();
    if (!existsSync(CONSOLE_PAGE)) throw new Error(`${CONSOLE_PAGE} is missing: these tests load the built console; run \`npm run build\` first (npm test does)`);
    const dir = await mkdtemp(join(tmpdir(), "shardline-console-"));
    const tokens = join(dir, "tokens");
    await writeFile(tokens, (Object.keys(TOKENS) as (keyof typeof TOKENS)[]).map((role) => `${TOKENS[role]},${NAMES[role]},${role}\n`).join(""));
    const grpc = `127.0.0.1:${await freePort()}`;
    const http = `127.0.0.1:${await freePort()}`;
    const controller = new TrackedProcess("controller", process.execPath, [CLI, "controller", "--listen", grpc, "--http", http, "--store", `sqlite:${join(dir, "state.db")}`, "--token-file", tokens]);
    const cluster = new ConsoleCluster(dir, controller, grpc, `http://${http}`);
    try {
      await waitFor("the controller to answer a viewer", async () => {
        if (!controller.running) throw new Error(`the controller exited:\n${controller.output}`);
        await cluster.admin.listJobs({});
        return true;
      });
      for (const agent of AGENTS) {
        const started = spawnAgent({
          name: agent.id,
          controller: grpc,
          handlers: RECORDING_HANDLERS,
          env: { SHARDLINE_TOKEN: TOKENS.agent, SHARDLINE_TEST_RECORD: join(dir, "runs.jsonl") },
          args: ["--label", `cluster=${agent.cluster}`, "--label", `zone=${agent.zone}`],
        });
        cluster.agents.set(agent.id, started);
      }
      for (const job of JOBS) {
        const file = join(dir, `${job.name}.yaml`);
        await writeFile(file, manifest(job));
        const applied = await cluster.cli("admin", "apply", "-f", file);
        if (applied.code !== 0) throw new Error(`applying ${job.name} failed (exit ${applied.code}): ${applied.stderr}`);
      }
      await waitFor(
        "every shard of both jobs to be owned by one of the four agents",
        async () => {
          const owned = (await cluster.admin.listAssignments({})).assignments.filter((a) => cluster.agents.has(a.agent));
          return owned.length === JOBS.reduce((sum, job) => sum + job.shards, 0) ? true : undefined;
        },
        60_000,
      );
    } catch (error) {
      console.error(cluster.dump());
      await cluster.close();
      throw error;
    }
    return cluster;
  }

  /** Runs the built CLI against the controller with `role`'s token. */
  cli(role: keyof typeof TOKENS, ...args: string[]): ReturnType<typeof shardline> {
    return shardline(args, { SHARDLINE_CONTROLLER: this.grpcAddress, SHARDLINE_TOKEN: TOKENS[role] });
  }

  /** `shardline get RESOURCE -o json ...` as `role`, parsed; fails on a non-zero exit. */
  async cliJson<T>(role: keyof typeof TOKENS, ...args: string[]): Promise<T> {
    const result = await this.cli(role, "get", ...args, "-o", "json");
    if (result.code !== 0) throw new Error(`shardline get ${args.join(" ")} exited ${result.code}: ${result.stderr}`);
    return JSON.parse(result.stdout) as T;
  }

  /** The agents the controller holds as connected and ready whose process runs. */
  async liveAgents(): Promise<string[]> {
    const ready = (await this.admin.listAgents({})).agents.filter((a) => a.state === AgentState.READY);
    return ready.map((a) => a.id).filter((id) => this.agents.get(id)?.running === true);
  }

  /** Every process's output, for a failed test. */
  dump(): string {
    return [this.controller, ...this.agents.values()].map((p) => `--- ${p.name} (pid ${p.pid})\n${p.output.slice(-20_000)}`).join("\n");
  }

  async close(): Promise<void> {
    this.admin.close();
    await Promise.all([...this.agents.values()].map((agent) => agent.stop()));
    await this.controller.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** The shard squares the page draws now. */
function shardCells(page: ConsolePage): Promise<ShardCell[]> {
  return page.page.$$eval('[data-testid="shard-cell"]', (cells) =>
    cells.map((cell) => ({ job: cell.getAttribute("data-job") ?? "", shard: Number(cell.getAttribute("data-shard")), agent: cell.getAttribute("data-agent") ?? "" })),
  );
}

/** The data-testid of every element the page shows, in document order. */
function visibleTestIds(page: ConsolePage): Promise<string[]> {
  return page.page.$$eval("[data-testid]", (elements) =>
    elements.filter((element) => element.getClientRects().length > 0).map((element) => element.getAttribute("data-testid") ?? ""),
  );
}

// Each case signs in and waits on the page and the CLI, each wait bounded by BROWSER_WAIT_MS: far
// above what a case takes idle (a second or two), for a run beside the rest of the suite.
describe("the web console in Debian's chromium, against a controller and four agents", { timeout: 90_000 }, () => {
  let cluster: ConsoleCluster;
  let browser: HeadlessChromium;
  const pages: ConsolePage[] = [];

  beforeAll(async () => {
    browser = await HeadlessChromium.launch();
    cluster = await ConsoleCluster.start();
  }, 120_000);

  afterEach(async (context) => {
    const failed = context.task.result?.state === "fail";
    for (const page of pages.splice(0)) {
      if (failed) console.error(`--- the page at ${page.page.url()}\n${page.problems.join("\n")}\n${(await page.page.content()).slice(0, 20_000)}`);
      await page.close();
    }
    if (failed) console.error(cluster.dump());
  });

  afterAll(async () => {
    await browser?.close();
    await cluster?.close();
  });

  /** A new page (its own storage) at `path`, signed in with `role`'s token on the form it shows. */
  async function signedIn(role: keyof typeof TOKENS, path: string): Promise<ConsolePage> {
    const page = await browser.newPage({ baseURL: cluster.baseURL });
    pages.push(page);
    await page.open(path);
    await page.testId("signin").waitFor({ timeout: BROWSER_WAIT_MS });
    await page.signIn(TOKENS[role], BROWSER_WAIT_MS);
    await expect.poll(() => page.testId("whoami").textContent(), { timeout: BROWSER_WAIT_MS }).toBe(`${NAMES[role]} (${role})`);
    return page;
  }

  it("asks for a token before it shows anything", async () => {
    const page = await browser.newPage({ baseURL: cluster.baseURL });
    pages.push(page);
    await page.open("/");
    await page.testId("signin").waitFor({ timeout: BROWSER_WAIT_MS });
    expect(await page.testId("token").count()).toBe(1);
    expect(await page.testId("signin-submit").count()).toBe(1);
  });

  it("draws every shard of every job on the overview, each owned by a live agent", async () => {
    const page = await signedIn("viewer", "/");
    const live = new Set(await cluster.liveAgents());
    expect(live.size).toBe(AGENTS.length);
    const byShard = (a: { job: string; shard: number }, b: { job: string; shard: number }) => a.job.localeCompare(b.job) || a.shard - b.shard;
    const expected = JOBS.flatMap((job) => Array.from({ length: job.shards }, (_, shard) => ({ job: job.name, shard, live: true }))).sort(byShard);
    const drawn = async () => (await shardCells(page)).map((cell) => ({ job: cell.job, shard: cell.shard, live: live.has(cell.agent) })).sort(byShard);
    await expect.poll(drawn, { timeout: BROWSER_WAIT_MS, interval: 250 }).toEqual(expected);
    for (const job of JOBS) {
      expect(await page.page.locator(`[data-testid="shard-cell"][data-job="${job.name}"]`).count()).toBe(job.shards);
    }
  });

  it("trigger on a job's page makes executions of every shard, which the CLI lists", async () => {
    const job = JOBS[0];
    const triggered = async () => (await cluster.cliJson<ExecutionJson[]>("viewer", "executions", "--job", job.name, "--limit", "10000")).filter((e) => e.cause === "trigger");
    const before = new Set((await triggered()).map((e) => e.id));
    const page = await signedIn("operator", `/jobs/${job.name}`);
    await page.testId("job-page").waitFor({ timeout: BROWSER_WAIT_MS });
    await page.testId("action-trigger").click({ timeout: BROWSER_WAIT_MS });
    // A trigger may ask to be confirmed first; either way it ends with the console saying it was done.
    const asked = page.page.locator('[data-testid="confirm-dialog"], [data-testid="action-done"]').first();
    await asked.waitFor({ timeout: BROWSER_WAIT_MS });
    if ((await page.testId("confirm-dialog").count()) > 0) await page.testId("confirm-yes").click({ timeout: BROWSER_WAIT_MS });
    await page.testId("action-done").waitFor({ timeout: BROWSER_WAIT_MS });
    expect(await page.testId("action-error").count()).toBe(0);

    const made = await waitFor(
      `the CLI to list a triggered execution of each of ${job.name}'s ${job.shards} shards`,
      async () => {
        const listed = (await triggered()).filter((e) => !before.has(e.id));
        return new Set(listed.map((e) => e.shard)).size === job.shards ? listed : undefined;
      },
      BROWSER_WAIT_MS,
    );
    expect(made.map((e) => e.shard).sort((a, b) => a - b)).toEqual(Array.from({ length: job.shards }, (_, shard) => shard));
    // One trigger is one fire: every shard's execution serves the same instant.
    expect(new Set(made.map((e) => e.fireTime)).size).toBe(1);
    for (const execution of made) expect(execution.id).toMatch(new RegExp(`^${job.name}/\\d+/${execution.shard}/1$`));
  });

  it("shows a viewer no action buttons on a job's page or the agents page, where an operator sees them", async () => {
    const job = JOBS[0];
    const operator = await signedIn("operator", `/jobs/${job.name}`);
    await operator.testId("action-trigger").waitFor({ timeout: BROWSER_WAIT_MS });
    await operator.testId("nav-agents").click({ timeout: BROWSER_WAIT_MS });
    await operator.testId("action-drain").first().waitFor({ timeout: BROWSER_WAIT_MS });

    const viewer = await signedIn("viewer", `/jobs/${job.name}`);
    await viewer.testId("job-page").waitFor({ timeout: BROWSER_WAIT_MS });
    // The page has loaded the job once it lists the job's executions (it fires every second).
    await viewer.testId("execution-row").first().waitFor({ timeout: BROWSER_WAIT_MS });
    expect(await viewer.page.locator('[data-testid^="action-"]').count()).toBe(0);

    await viewer.testId("nav-agents").click({ timeout: BROWSER_WAIT_MS });
    const live = await cluster.liveAgents();
    await expect.poll(() => viewer.testId("agent-row").count(), { timeout: BROWSER_WAIT_MS }).toBeGreaterThanOrEqual(live.length);
    expect(await viewer.page.locator('[data-testid^="action-"]').count()).toBe(0);
  });

  it("lets an operator drain an agent from its row, after confirming: the row and the CLI say it is cordoned", async () => {
    const live = await cluster.liveAgents();
    const cordoned = new Set((await cluster.cliJson<AgentJson[]>("viewer", "agents")).filter((a) => a.cordoned).map((a) => a.id));
    const target = live.find((id) => !cordoned.has(id));
    expect(target).toBeDefined();
    const page = await signedIn("operator", "/agents");
    const row = page.page.locator(`[data-testid="agent-row"][data-agent="${target}"]`);
    await row.waitFor({ timeout: BROWSER_WAIT_MS });
    expect(await row.getAttribute("data-cordoned")).toBe("false");

    await row.getByTestId("action-drain").click({ timeout: BROWSER_WAIT_MS });
    await page.testId("confirm-dialog").waitFor({ timeout: BROWSER_WAIT_MS });
    await page.testId("confirm-yes").click({ timeout: BROWSER_WAIT_MS });

    await expect.poll(() => row.getAttribute("data-cordoned"), { timeout: BROWSER_WAIT_MS, interval: 250 }).toBe("true");
    const listed = await waitFor(`the CLI to list ${target} as cordoned`, async () => {
      const agent = (await cluster.cliJson<AgentJson[]>("viewer", "agents")).find((a) => a.id === target);
      return agent?.cordoned === true ? agent : undefined;
    });
    expect(listed.cordoned).toBe(true);
    expect(await page.testId("action-error").count()).toBe(0);
  });

  it("moves a SIGKILLed agent's shards on the map: none left on it, every one owned again", { timeout: 120_000 }, async () => {
    const page = await signedIn("viewer", "/");
    const total = JOBS.reduce((sum, job) => sum + job.shards, 0);
    const cells = await waitFor(
      "the map to draw every shard with an owner",
      async () => {
        const drawn = await shardCells(page);
        return drawn.length === total && drawn.every((cell) => cell.agent !== "") ? drawn : undefined;
      },
      BROWSER_WAIT_MS,
    );
    const victim = cells[0]!.agent;
    const survivors = new Set((await cluster.liveAgents()).filter((id) => id !== victim));
    expect(survivors.size).toBeGreaterThan(0);

    await cluster.agents.get(victim)!.crash();

    const moved = async () => {
      const drawn = await shardCells(page);
      return {
        shards: drawn.length,
        onVictim: drawn.filter((cell) => cell.agent === victim).length,
        unowned: drawn.filter((cell) => cell.agent === "").length,
        onOthers: drawn.filter((cell) => cell.agent !== "" && cell.agent !== victim && !survivors.has(cell.agent)).length,
      };
    };
    await expect.poll(moved, { timeout: FAILOVER_WAIT_MS, interval: 250 }).toEqual({ shards: total, onVictim: 0, unowned: 0, onOthers: 0 });
  });

  it("refuses a wrong token with the controller's words, and shows nothing but the sign-in form", async () => {
    const page = await browser.newPage({ baseURL: cluster.baseURL });
    pages.push(page);
    await page.open("/");
    await page.testId("signin").waitFor({ timeout: BROWSER_WAIT_MS });
    await page.testId("token").fill("not-a-token-this-controller-knows");
    await page.testId("signin-submit").click();
    await page.testId("signin-error").waitFor({ timeout: BROWSER_WAIT_MS });
    expect(await page.testId("signin-error").textContent()).toContain("the token is not one this controller knows");
    const shown = await visibleTestIds(page);
    expect(shown.filter((id) => !["signin", "token", "signin-submit", "signin-error"].includes(id))).toEqual([]);
  });

  // Last: its job and its fifth agent would change what the map and the agents pages show.
  it("follows a running execution's log on its page, each line with its time, until the run ends", async () => {
    const gate = join(cluster.dir, "slow-gate");
    const file = join(cluster.dir, "slow.yaml");
    await writeFile(file, `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: slow}\nspec:\n  shards: 1\n  handler: slow-logger\n  parameter: ${JSON.stringify(gate)}\n`);
    // The only agent with the handler, so the only one the job's shard can go to.
    const logger = spawnAgent({ name: "logger", controller: cluster.grpcAddress, handlers: LOGGING_HANDLERS, env: { SHARDLINE_TOKEN: TOKENS.agent } });
    try {
      expect((await cluster.cli("admin", "apply", "-f", file)).code).toBe(0);
      expect((await cluster.cli("operator", "trigger", "slow")).code).toBe(0);
      const id = await waitFor(
        "slow's execution to run",
        async () => (await cluster.cliJson<ExecutionJson[]>("viewer", "executions", "--job", "slow")).find((e) => e.state === "running")?.id,
        BROWSER_WAIT_MS,
      );
      const page = await signedIn("viewer", `/executions/${encodeURIComponent(id)}`);
      const texts = () => page.page.$$eval('[data-testid="log-line"] .log-text', (lines) => lines.map((line) => line.textContent ?? ""));
      // The handler ticks until the gate opens: ticks shown one after another came while the page followed.
      const ticks = async () => (await texts()).filter((text) => /^INFO tick \d+$/.test(text)).length;
      await expect.poll(ticks, { timeout: BROWSER_WAIT_MS, interval: 250 }).toBeGreaterThanOrEqual(2);
      const seen = await ticks();
      await expect.poll(ticks, { timeout: BROWSER_WAIT_MS, interval: 250 }).toBeGreaterThan(seen);
      expect(await page.testId("log-status").textContent()).toBe("following…");

      await writeFile(gate, "");
      await expect.poll(async () => (await texts()).at(-1), { timeout: BROWSER_WAIT_MS, interval: 250 }).toBe("WARN the gate opened: done");
      await expect.poll(() => page.testId("log-status").textContent(), { timeout: BROWSER_WAIT_MS, interval: 250 }).toBe("complete");
      const shown = await texts();
      expect(shown.slice(0, -1)).toEqual(Array.from({ length: shown.length - 1 }, (_, i) => `INFO tick ${i + 1}`));
      const lines = await page.page.$$eval('[data-testid="execution-log"] [data-testid="log-line"]', (elements) =>
        elements.map((element) => ({ stream: element.getAttribute("data-stream"), time: element.querySelector(".log-time")?.textContent })),
      );
      expect(lines).toHaveLength(shown.length);
      for (const line of lines) expect(line).toEqual({ stream: "log", time: expect.stringMatching(/^\d\d:\d\d:\d\d\.\d{3}$/) as unknown });
      expect(await page.page.locator('[data-testid="log-dropped"], [data-testid="log-missing"]').count()).toBe(0);
    } finally {
      await writeFile(gate, "");
      await cluster.cli("admin", "delete", "slow");
      await logger.stop();
    }
  });
});
