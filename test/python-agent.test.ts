import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AgentState, type Execution, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { TrackedProcess } from "./harness/tracked-process.js";
import { type AdminClient, adminClient, CLI, freePort, requireBuiltCli, waitFor } from "./harness/processes.js";
import { generatePythonStubs, killPythonAdmins, runPythonAdmin, startPythonAgent } from "./harness/python.js";

// Issue 8, "The proto is a product": the Python reference agent (examples/python-agent) and admin
// client (examples/python-admin), built from proto/ alone, on a real controller beside real
// TypeScript agents.

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Both kinds of agent declare billing-rollup: examples/handlers.mjs and examples/python-agent/handlers.py. */
const TS_HANDLERS = join(ROOT, "examples", "handlers.mjs");
/** Short, so that a lost agent's shards move within about a second; the lease is 5 heartbeats. */
const HEARTBEAT_MS = 200;
const LEASE_MS = 1000;
/**
 * For the agent's own duties, whose runs must start as attempt 1: a lease that a busy machine
 * does not let lapse by accident (with 1 s, a starved agent fenced before its run came).
 */
const DUTIES_LEASE = { heartbeatMs: 500, leaseMs: 3000 };
const PY_AGENT = "py-1";
const TS_AGENTS = ["ts-a", "ts-b"];
const ALL_SHARDS = [0, 1, 2, 3, 4, 5];

const SWEEP = "py-sweep";
// catch-up keeps every late fire, so on a loaded machine a fire not run is a real loss, never a
// coalesced one (as in test/failover.test.ts).
const SWEEP_MANIFEST = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: ${SWEEP}}
spec:
  schedule: "* * * * * *"
  shards: 6
  handler: billing-rollup
  misfire: catch-up
  maxCatchUp: 10
`;

/**
 * A handler module for the Python agent (its --handlers flag): `slow` sleeps for its parameter's
 * seconds, or until the run is aborted, which it logs.
 */
const SLOW_HANDLERS = `
import os

def slow(ctx):
    if ctx.cancelled.wait(float(ctx.parameter or "30")):
        ctx.log.info("slow: noticed the abort")
        raise RuntimeError("aborted")
    return "slept"

def until_file(ctx):
    ctx.log.info("until_file: started")
    while not os.path.exists(ctx.parameter):
        if ctx.cancelled.wait(0.05):
            ctx.log.info("until_file: noticed the abort")
            raise RuntimeError("aborted")
    ctx.log.info("until_file: finished")
    return "released"

HANDLERS = {"slow": slow, "until-file": until_file}
`;
const manualJob = (name: string, spec: string): string => `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: ${name}}
spec:
  shards: 1
  handler: slow
  parameter: "30"
${spec}
`;
/** A job whose run goes on until the file `release` exists, with a disconnect grace far longer than a controller restart. */
const graceJob = (name: string, release: string): string => `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: ${name}}
spec:
  shards: 1
  handler: until-file
  parameter: "${release}"
  disconnectGraceSeconds: 60
`;

/** A controller on short leases, and the agent processes started beside it. */
class Cluster {
  dir = "";
  address = "";
  controller: TrackedProcess | undefined;
  admin: AdminClient | undefined;
  readonly agents = new Map<string, TrackedProcess>();

  constructor(
    readonly stubs: string,
    readonly lease = { heartbeatMs: HEARTBEAT_MS, leaseMs: LEASE_MS },
  ) {}

  async start(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), "shardline-python-"));
    this.address = `127.0.0.1:${await freePort()}`;
    await this.startController();
  }

  /** Starts the controller on the cluster's address and SQLite file: again, after a crash, to restart it. */
  async startController(): Promise<void> {
    const controller = new TrackedProcess("controller", process.execPath, [
      CLI,
      "controller",
      "--listen",
      this.address,
      "--http",
      `127.0.0.1:${await freePort()}`,
      "--store",
      `sqlite:${join(this.dir, "state.db")}`,
      "--heartbeat-interval",
      String(this.lease.heartbeatMs),
      "--lease-ttl",
      String(this.lease.leaseMs),
    ]);
    this.controller = controller;
    this.admin?.close();
    const admin = adminClient(this.address);
    this.admin = admin;
    await waitFor("the controller to answer", async () => {
      if (!controller.running) throw new Error(`the controller exited:\n${controller.output}`);
      await admin.listJobs({});
      return true;
    });
  }

  startTypeScriptAgent(id: string): void {
    this.agents.set(id, new TrackedProcess(id, process.execPath, [CLI, "agent", "--controller", this.address, "--id", id, "--handlers", TS_HANDLERS]));
  }

  startPythonAgent(id: string, args: string[] = []): void {
    this.agents.set(id, startPythonAgent(this.stubs, id, ["--controller", this.address, ...args]));
  }

  agent(id: string): TrackedProcess {
    const agent = this.agents.get(id);
    if (agent === undefined) throw new Error(`no agent ${id}`);
    return agent;
  }

  /** shard -> owning agent, for one job. */
  async owners(job: string): Promise<Map<number, string>> {
    const assignments = (await this.admin!.listAssignments({ job })).assignments;
    return new Map(assignments.map((a) => [a.shard, a.agent]));
  }

  async shardsOf(job: string, agent: string): Promise<number[]> {
    return [...(await this.owners(job))].filter(([, owner]) => owner === agent).map(([shard]) => shard);
  }

  async executions(job: string): Promise<Execution[]> {
    return (await this.admin!.listExecutions({ job, limit: 1000 })).executions;
  }

  /** Polls one execution until `done` accepts it. */
  async waitForExecution(id: string, what: string, done: (e: Execution) => boolean): Promise<Execution> {
    return waitFor(what, async () => {
      const execution = (await this.admin!.getExecution({ id })).execution;
      return execution !== undefined && done(execution) ? execution : undefined;
    });
  }

  /** Waits until each of `shards` of `job` has a succeeded execution of a fire later than `after` that `where` accepts. */
  async waitForSuccessAfter(job: string, after: number, shards: number[], what: string, where: (e: Execution) => boolean = () => true): Promise<Execution[]> {
    return waitFor(what, async () => {
      const executions = await this.executions(job);
      const done = (shard: number): boolean =>
        executions.some((e) => e.shard === shard && e.state === ExecutionState.SUCCEEDED && Number(e.fireTimeUnixMs) > after && where(e));
      return shards.every(done) ? executions : undefined;
    });
  }

  /** SIGKILLs every process (thawed first): the test is over, nothing needs to leave gracefully. */
  async stop(): Promise<void> {
    this.admin?.close();
    const processes = [...this.agents.values(), ...(this.controller ? [this.controller] : [])];
    for (const p of processes) p.thaw();
    await Promise.all(processes.map((p) => p.crash()));
    if (this.dir !== "") await rm(this.dir, { recursive: true, force: true });
  }

  debug(): string {
    return [`--- controller\n${this.controller?.output ?? ""}`, ...[...this.agents].map(([id, p]) => `--- ${id}\n${p.output}`)].join("\n");
  }
}

const stateName = (e: Execution): string => ExecutionState[e.state];

/**
 * Waits until a process has printed `text`. Output arrives through a pipe, on its own schedule:
 * a line can come after the admin API (or the exit) already showed what followed it.
 */
async function waitForOutput(process: TrackedProcess, text: string, what: string): Promise<void> {
  await waitFor(what, async () => (process.output.includes(text) ? true : undefined));
}

let stubs = "";
let cluster: Cluster;

beforeAll(async () => {
  requireBuiltCli();
  stubs = await mkdtemp(join(tmpdir(), "shardline-python-stubs-"));
  // Throws, naming the package to install, when python3, grpcio, protoc or the plugin is missing.
  generatePythonStubs(stubs);
});
afterAll(async () => {
  if (stubs !== "") await rm(stubs, { recursive: true, force: true });
});
afterEach(async (context) => {
  killPythonAdmins();
  if (context.task.result?.state === "fail") console.error(cluster.debug());
  await cluster.stop();
});

describe("the Python reference agent beside TypeScript agents", () => {
  /** When the shards were found spread two by two: fires after it run where they now are. */
  let placedAt = 0;

  beforeEach(async () => {
    cluster = new Cluster(stubs);
    await cluster.start();
    for (const id of TS_AGENTS) cluster.startTypeScriptAgent(id);
    cluster.startPythonAgent(PY_AGENT, ["--label", "lang=python"]);
    await cluster.admin!.applyJob({ manifest: SWEEP_MANIFEST });
    await waitFor("six shards spread two by two over ts-a, ts-b and py-1", async () => {
      const counts = new Map<string, number>();
      for (const agent of (await cluster.owners(SWEEP)).values()) counts.set(agent, (counts.get(agent) ?? 0) + 1);
      return [...TS_AGENTS, PY_AGENT].every((id) => counts.get(id) === 2) ? true : undefined;
    });
    placedAt = Date.now();
  });

  it("receives shards and runs their executions to success at their fire instants, listed under its agent id", async () => {
    const shards = await cluster.shardsOf(SWEEP, PY_AGENT);
    expect(shards).toHaveLength(2);
    const executions = await cluster.waitForSuccessAfter(SWEEP, placedAt, shards, "py-1 to succeed on both its shards", (e) => e.agent === PY_AGENT);
    // Before the TypeScript agents joined, py-1 may have run every shard; since, only its own.
    const mine = executions.filter((e) => e.agent === PY_AGENT && Number(e.fireTimeUnixMs) > placedAt);
    expect(new Set(mine.map((e) => e.shard))).toEqual(new Set(shards));
    expect(mine.map(stateName)).not.toContain("FAILED");
    // Dispatched ahead of their instant, started at it, never before (one machine, one clock).
    for (const e of mine.filter((e) => e.startedAtUnixMs > 0n)) expect(e.startedAtUnixMs).toBeGreaterThanOrEqual(e.fireTimeUnixMs);
    // The Python handler's return value, rendered as JSON by the agent.
    const succeeded = mine.find((e) => e.state === ExecutionState.SUCCEEDED)!;
    expect(JSON.parse(succeeded.result)).toEqual({ region: "", rows: 42 });
    const agent = (await cluster.admin!.listAgents({})).agents.find((a) => a.id === PY_AGENT);
    expect(agent?.labels).toEqual({ lang: "python" });
    expect(agent?.handlers).toContain("billing-rollup");
    await waitForOutput(cluster.agent(PY_AGENT), `execution ${succeeded.id} succeeded`, "py-1 to log the execution's outcome");
    // Its handler's ctx.log line, sent with the terminal update, is the execution's log.
    const logs = await cluster.admin!.getExecutionLogs({ id: succeeded.id });
    expect(logs.finished).toBe(true);
    expect(logs.lines.map((l) => [l.stream, l.text])).toEqual([["log", expect.stringMatching(/^INFO rolling up shard \d for the fire of /)]]);
  });

  it("lets the Python admin client apply a job, trigger it and list its executions", async () => {
    const manifest = join(cluster.dir, "manual.yaml");
    await writeFile(manifest, "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: py-manual}\nspec: {shards: 3, handler: billing-rollup}\n");
    const admin = (...args: string[]): ReturnType<typeof runPythonAdmin> => runPythonAdmin(stubs, ["--controller", cluster.address, ...args]);

    const applied = await admin("apply", "-f", manifest);
    expect(applied).toMatchObject({ code: 0, stderr: "" });
    expect(applied.stdout).toContain("job/py-manual applied");
    const triggered = await admin("trigger", "py-manual");
    expect(triggered).toMatchObject({ code: 0, stderr: "" });
    const ids = triggered.stdout.split("\n").filter((line) => line.startsWith("py-manual/"));
    expect(ids).toHaveLength(3);

    const listing = await waitFor("the admin client to list the three executions as succeeded", async () => {
      const listed = await admin("executions", "--job", "py-manual");
      const rows = listed.stdout.split("\n").filter((line) => /\ssucceeded\s/.test(line) && ids.some((id) => line.startsWith(`${id} `)));
      return listed.code === 0 && rows.length === 3 ? listed.stdout : undefined;
    });
    // Three shards over three agents of equal capacity: one each, the Python agent's included.
    expect(listing).toMatch(/\spy-1\s+succeeded\s/);
    const agents = await admin("agents");
    expect(agents.code).toBe(0);
    for (const id of [...TS_AGENTS, PY_AGENT]) expect(agents.stdout).toMatch(new RegExp(`^${id}\\s+ready\\s`, "m"));
    const jobs = await admin("jobs");
    expect(jobs.stdout).toMatch(/^py-manual\s/m);
    expect(jobs.stdout).toMatch(/^py-sweep\s/m);
    const missing = await admin("trigger", "no-such-job");
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/^admin_client\.py: trigger: NOT_FOUND: /);
  });

  it("moves a SIGKILLed Python agent's shards to the TypeScript agents, which run them", async () => {
    await cluster.waitForSuccessAfter(SWEEP, placedAt, ALL_SHARDS, "a fire on every shard where it was placed");
    const victim = await cluster.shardsOf(SWEEP, PY_AGENT);
    expect(victim).toHaveLength(2);

    const killedAt = Date.now();
    await cluster.agent(PY_AGENT).crash();
    await cluster.waitForSuccessAfter(SWEEP, killedAt, victim, "py-1's shards to run on the TypeScript agents", (e) => TS_AGENTS.includes(e.agent));

    const owners = await cluster.owners(SWEEP);
    for (const shard of victim) expect(TS_AGENTS).toContain(owners.get(shard));
  });

  it("gives a SIGKILLed TypeScript agent's shards to the Python agent too", async () => {
    await cluster.waitForSuccessAfter(SWEEP, placedAt, ALL_SHARDS, "a fire on every shard where it was placed");
    const victim = await cluster.shardsOf(SWEEP, "ts-a");
    expect(victim).toHaveLength(2);

    const killedAt = Date.now();
    await cluster.agent("ts-a").crash();
    // Six shards over two survivors of equal capacity: three each, so py-1 takes one of ts-a's.
    const taken = await waitFor("py-1 to own one of ts-a's shards", async () => {
      const owners = await cluster.owners(SWEEP);
      const shards = victim.filter((shard) => owners.get(shard) === PY_AGENT);
      return shards.length > 0 && victim.every((shard) => owners.get(shard) !== "ts-a") ? shards : undefined;
    });
    await cluster.waitForSuccessAfter(SWEEP, killedAt, taken, "py-1 to run the shard it took", (e) => e.agent === PY_AGENT);
  });

  it("sends an instance id, and a second Python process under a held id exits 4 with the controller's message, the holder keeping its shards", async () => {
    const before = await cluster.shardsOf(SWEEP, PY_AGENT);
    const second = startPythonAgent(stubs, PY_AGENT, ["--controller", cluster.address]);
    cluster.agents.set(`${PY_AGENT} (second)`, second);
    expect((await second.exited).code).toBe(4);
    await waitForOutput(second, `agent.py: agent id "${PY_AGENT}" is held by another process`, "the second py-1 to print the controller's message");
    expect(cluster.agent(PY_AGENT).running).toBe(true);
    expect(await cluster.shardsOf(SWEEP, PY_AGENT)).toEqual(before);
    const holder = (await cluster.admin!.listAgents({})).agents.find((agent) => agent.id === PY_AGENT);
    expect(holder).toMatchObject({ instanceId: expect.stringMatching(/^[0-9a-f-]{36}$/), refusedHellos: 1 });
  });

  it("drains the Python agent on SIGTERM: it says goodbye, exits 0, and its shards move with no fire missed", async () => {
    await cluster.waitForSuccessAfter(SWEEP, placedAt, ALL_SHARDS, "a fire on every shard where it was placed");
    const leaving = cluster.agent(PY_AGENT);
    const stoppedAt = Date.now();
    leaving.child.kill("SIGTERM");
    expect(await leaving.exited).toEqual({ code: 0, signal: null });
    await waitForOutput(leaving, "said goodbye (SIGTERM)", "py-1 to log its goodbye");
    // The controller heard the Goodbye, rather than a stream that broke: it logs the agent as leaving.
    await waitForOutput(cluster.controller!, `agent ${PY_AGENT} is leaving (SIGTERM)`, "the controller to log py-1 as leaving");

    await cluster.waitForSuccessAfter(SWEEP, Date.now() + 2000, ALL_SHARDS, "three more fires after py-1 left");
    expect([...(await cluster.owners(SWEEP)).values()]).not.toContain(PY_AGENT);
    // Every fire from a second before the SIGTERM to two seconds after it, once each has settled.
    const since = stoppedAt - 1000;
    const until = stoppedAt + 2000;
    const window = await waitFor("the fires around the SIGTERM to settle", async () => {
      const executions = (await cluster.executions(SWEEP)).filter((e) => Number(e.fireTimeUnixMs) >= since && Number(e.fireTimeUnixMs) < until);
      const settled = executions.every((e) => e.state !== ExecutionState.PENDING && e.state !== ExecutionState.RUNNING);
      return settled && new Set(executions.map((e) => e.fireTimeUnixMs)).size >= 3 ? executions : undefined;
    });
    // Nothing misfired or was lost: a dispatch that crossed the Goodbye on the wire runs on the
    // leaving agent (docs/protocol.md, step 10). Each (fire, shard) ran to success.
    const missed = window.filter((e) => e.state === ExecutionState.MISFIRED || e.state === ExecutionState.LOST);
    expect(missed.map((e) => `${e.id} ${stateName(e)} on ${e.agent || "no agent"}: ${e.error}`)).toEqual([]);
    for (const fire of new Set(window.map((e) => Number(e.fireTimeUnixMs)))) {
      const runs = window.filter((e) => Number(e.fireTimeUnixMs) === fire);
      const last = ALL_SHARDS.map((shard) => runs.filter((e) => e.shard === shard).sort((a, b) => b.attempt - a.attempt)[0]);
      expect(last.map((e) => (e ? `${e.shard} ${stateName(e)}` : "none"))).toEqual(ALL_SHARDS.map((shard) => `${shard} SUCCEEDED`));
    }
  });
});

describe("the Python reference agent's own duties", () => {
  beforeEach(async () => {
    cluster = new Cluster(stubs, DUTIES_LEASE);
    await cluster.start();
    const handlers = join(cluster.dir, "slow_handlers.py");
    await writeFile(handlers, SLOW_HANDLERS);
    cluster.startPythonAgent(PY_AGENT, ["--handlers", handlers]);
    // A short grace, so that a freeze outlasts it without making the test wait long.
    await cluster.admin!.applyJob({ manifest: manualJob("py-slow", "  disconnectGraceSeconds: 2") });
    await cluster.admin!.applyJob({ manifest: manualJob("py-timeout", "  timeoutSeconds: 1") });
    await waitFor("py-1 to own both jobs' shard", async () =>
      (await cluster.shardsOf("py-slow", PY_AGENT)).length === 1 && (await cluster.shardsOf("py-timeout", PY_AGENT)).length === 1 ? true : undefined,
    );
  });

  /** Triggers a job's one shard and waits until py-1 reports it running. */
  async function startRun(job: string): Promise<string> {
    const [id] = (await cluster.admin!.triggerJob({ name: job })).executionIds;
    await cluster.waitForExecution(id!, `${id} to run on py-1`, (e) => e.state === ExecutionState.RUNNING && e.agent === PY_AGENT);
    return id!;
  }

  it("aborts a run at the job's timeout and reports it TIMED_OUT", async () => {
    const id = await startRun("py-timeout");
    const execution = await cluster.waitForExecution(id, `${id} to time out`, (e) => e.state !== ExecutionState.RUNNING);
    expect(stateName(execution)).toBe("TIMED_OUT");
    expect(execution.error).toBe("timed out after 1000 ms");
    await waitForOutput(cluster.agent(PY_AGENT), `${id}: slow: noticed the abort`, "the handler to notice the abort");
  });

  it("cancels a running execution when the controller says so", async () => {
    const id = await startRun("py-slow");
    await cluster.admin!.cancelExecution({ id, reason: "an operator changed their mind" });
    const execution = await cluster.waitForExecution(id, `${id} to be cancelled`, (e) => e.state !== ExecutionState.RUNNING);
    expect(stateName(execution)).toBe("CANCELLED");
    expect(execution.error).toContain("an operator changed their mind");
    await waitForOutput(cluster.agent(PY_AGENT), `${id}: slow: noticed the abort`, "the handler to notice the abort");
  });

  it("keeps a started run with a disconnect grace going through a controller restart (SIGKILL, then the same SQLite file): attempt 1, succeeded, recorded once", async () => {
    const release = join(cluster.dir, "release-py-grace");
    await cluster.admin!.applyJob({ manifest: graceJob("py-grace", release) });
    await waitFor("py-1 to own py-grace's shard", async () => ((await cluster.shardsOf("py-grace", PY_AGENT)).length === 1 ? true : undefined));
    const id = await startRun("py-grace");
    const agent = cluster.agent(PY_AGENT);
    const killedAt = agent.output.length;
    await cluster.controller!.crash();
    await waitForOutput(agent, "1 started run(s) go on for their disconnect grace", "py-1 to fence itself, its run going on");
    await cluster.startController();
    await waitFor("the restarted controller to welcome py-1 within the grace, the run carrying on", async () =>
      agent.output.slice(killedAt).includes(`a controller answered within the disconnect grace: ${id} carry on`) ? true : undefined,
    );
    await writeFile(release, "");
    await cluster.waitForExecution(id, `${id} to finish`, (e) => e.state !== ExecutionState.RUNNING && e.state !== ExecutionState.UNKNOWN);
    // One attempt in the controller's history, succeeded on py-1: the fire never ran again.
    const history = (await cluster.executions("py-grace")).map((e) => `${e.id} attempt ${e.attempt} ${stateName(e)} on ${e.agent} ${e.result}`);
    expect(history).toEqual([`${id} attempt 1 SUCCEEDED on ${PY_AGENT} released`]);
    // The agent's own record: the handler started once and finished once, never aborted.
    await waitForOutput(agent, `execution ${id} succeeded`, "py-1 to log the run's outcome");
    const count = (text: string): number => agent.output.split(text).length - 1;
    expect([count(`${id}: until_file: started`), count(`${id}: until_file: finished`), count(`${id}: until_file: noticed the abort`)]).toEqual([1, 1, 0]);
  });

  it("fences itself when its lease lapses, aborting a run whose disconnect grace ran out while it was frozen, and comes back on a new stream", async () => {
    const id = await startRun("py-slow");
    const agent = cluster.agent(PY_AGENT);
    agent.freeze();
    // The controller's view of the lease ends after the agent's own, and it records the run lost
    // only after the run's disconnect grace (2 s): by then the agent's lease and the grace counted
    // from its lapse are over for sure.
    await cluster.waitForExecution(id, `${id} to be recorded lost while py-1 is frozen`, (e) => e.state === ExecutionState.LOST);
    const lostAt = agent.output.length;
    agent.thaw();
    await waitFor("py-1 to fence itself, then to be welcomed again", async () => {
      const since = agent.output.slice(lostAt);
      const fenced = since.indexOf("fenced: no heartbeat ack within the lease");
      return fenced >= 0 && since.indexOf("lease renewed; no longer fenced", fenced) >= 0 ? true : undefined;
    });
    // The fence signalled the handler and reported the run lost itself.
    await waitForOutput(agent, `${id}: slow: noticed the abort`, "the handler to notice the abort");
    await waitForOutput(agent, `execution ${id} lost: fenced: `, "py-1 to report the run lost to its fence");
    expect(agent.output).toContain("and no controller answered within the disconnect grace of 2 s");
    await waitFor("py-1 to be ready with its shard again", async () => {
      const py = (await cluster.admin!.listAgents({})).agents.find((a) => a.id === PY_AGENT);
      return py?.state === AgentState.READY && py.shards.some((s) => s.job === "py-slow") ? true : undefined;
    });
  });
});
