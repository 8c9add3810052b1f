import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Agent } from "../../agent/runtime/agent.js";
import { create } from "@bufbuild/protobuf";
import { AdminService, type WatchResponse, WatchRequestSchema, WatchTopic } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentState, ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { createClient, type Client } from "../../shared/grpc/index.js";
import { silentLogger } from "../../shared/logging.js";
import { waitFor } from "../../test/harness/processes.js";
import { type RunningController, startController } from "./controller.js";
import { DEFAULT_CORE_CONFIG } from "../core/config.js";
import { ControllerCore } from "../core/controller-core.js";
import { testSpec } from "../core/testing/core-harness.js";
import { SqliteStore } from "../store/sqlite/sqlite-store.js";
import { CoreDriver } from "./core-driver.js";
import { WatchHub } from "./watch-hub.js";

const manifest = (name: string, shards: number) =>
  `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec: {shards: ${shards}, handler: work, schedule: "0 0 1 1 *"}\n`;

const VIEWER = "vera-viewer-token-0123456789a";
const OPERATOR = "oliver-operator-token-0123456";

/** What a client knows after applying a watch's messages, as a console would. */
class WatchedState {
  readonly jobs = new Set<string>();
  readonly agents = new Map<string, { state: AgentState; cordoned: boolean }>();
  readonly shards = new Map<string, { agent: string; last: ExecutionState | undefined; lastId: string }>();
  readonly executions = new Map<string, ExecutionState>();
  readonly events: string[] = [];
  synced = false;
  resets = 0;
  cursor = "";
  term = 0n;

  apply(message: WatchResponse): void {
    if (message.reset) {
      this.resets++;
      this.jobs.clear();
      this.agents.clear();
      this.shards.clear();
      this.executions.clear();
      this.events.length = 0;
      this.synced = false;
    }
    for (const job of message.jobs) this.jobs.add(job.name);
    for (const name of message.deletedJobs) this.jobs.delete(name);
    for (const agent of message.agents) this.agents.set(agent.id, { state: agent.state, cordoned: agent.cordoned });
    for (const id of message.removedAgents) this.agents.delete(id);
    for (const shard of message.shards) {
      this.shards.set(`${shard.job}/${shard.shard}`, { agent: shard.agent, last: shard.lastExecution?.state, lastId: shard.lastExecution?.id ?? "" });
    }
    for (const shard of message.removedShards) this.shards.delete(`${shard.job}/${shard.shard}`);
    for (const execution of message.executions) this.executions.set(execution.id, execution.state);
    for (const event of message.events) this.events.push(`${event.type} ${event.agent}`);
    if (message.status !== undefined) this.term = message.status.term;
    if (message.synced) this.synced = true;
    this.cursor = message.cursor;
  }

  ownersOf(job: string): string[] {
    return [...this.shards.entries()].filter(([key]) => key.startsWith(`${job}/`)).map(([, shard]) => shard.agent);
  }
}

/** A watch read in the background into a WatchedState; until() waits for what it should come to show. */
class Watching {
  readonly state = new WatchedState();
  readonly #abort = new AbortController();
  readonly done: Promise<unknown>;

  constructor(client: Client<typeof AdminService>, request: Parameters<Client<typeof AdminService>["watch"]>[0], metadata?: Record<string, string>) {
    this.done = (async () => {
      for await (const message of client.watch(request, { signal: this.#abort.signal, ...(metadata === undefined ? {} : { metadata }) })) this.state.apply(message);
    })().catch((error: unknown) => error);
  }

  until<T>(what: string, check: (state: WatchedState) => T | undefined | false): Promise<T> {
    return waitFor(what, () => check(this.state) || undefined, 30_000) as Promise<T>;
  }

  stop(): void {
    this.#abort.abort();
  }
}

describe("AdminService.Watch: the live view", () => {
  let dir: string | undefined;
  let controller: RunningController | undefined;
  const cleanup: (() => Promise<void> | void)[] = [];

  afterEach(async () => {
    for (const next of cleanup.splice(0).reverse()) await next();
    await controller?.stop();
    controller = undefined;
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  /** A core and its driver on an in-memory SQLite store, for a hub built by the test itself. */
  async function inMemoryCore(): Promise<{ store: SqliteStore; core: ControllerCore; driver: CoreDriver }> {
    const store = new SqliteStore(":memory:");
    const core = new ControllerCore(DEFAULT_CORE_CONFIG, await store.open(), Date.now());
    const driver = new CoreDriver(core, store, silentLogger(), (error) => {
      throw error;
    });
    await driver.start();
    cleanup.push(() => store.close(), () => driver.stop());
    return { store, core, driver };
  }

  async function start(tokens?: string): Promise<Client<typeof AdminService>> {
    dir = await mkdtemp(join(tmpdir(), "shardline-watch-"));
    if (tokens !== undefined) await writeFile(join(dir, "tokens"), tokens);
    controller = await startController({
      listen: "127.0.0.1:0",
      http: "127.0.0.1:0",
      store: `sqlite:${join(dir, "state.db")}`,
      logger: silentLogger(),
      traceUrlTemplate: "http://jaeger.example:16686/trace/{traceId}",
      ...(tokens === undefined ? {} : { tokenFile: join(dir, "tokens") }),
    });
    const client = createClient(AdminService, controller.grpcAddress, { deadlineMs: 10_000 });
    cleanup.push(() => client.close());
    return client;
  }

  function agent(id: string, zone: string): Agent {
    const started = new Agent({
      controller: controller!.grpcAddress,
      id,
      handlers: { work: async () => ({ ok: id }) },
      labels: { zone },
      capacity: 4,
      reconnect: { initialMs: 10, maxMs: 100 },
      logger: silentLogger(),
    });
    started.start();
    cleanup.push(() => started.stop());
    return started;
  }

  it("starts from a snapshot of every shard with its owner, then follows an agent leaving, a trigger and its executions", async () => {
    const client = await start();
    await client.applyJob({ manifest: manifest("rollup", 6) });
    await client.applyJob({ manifest: manifest("billing", 3) });
    agent("w-1", "a");
    const leaving = agent("w-2", "b");
    await waitFor("two agents ready", async () => ((await client.listAgents({})).agents.filter((a) => a.state === AgentState.READY).length === 2 ? true : undefined));
    await waitFor("every shard assigned", async () => ((await client.listAssignments({})).unassigned.length === 0 ? true : undefined));

    const watching = new Watching(client, {});
    cleanup.push(() => watching.stop());
    await watching.until("the snapshot", (state) => state.synced);
    expect([...watching.state.jobs].sort()).toEqual(["billing", "rollup"]);
    expect([...watching.state.agents.keys()].sort()).toEqual(["w-1", "w-2"]);
    expect(watching.state.shards.size).toBe(9);
    expect(new Set(watching.state.ownersOf("rollup"))).toEqual(new Set(["w-1", "w-2"]));
    expect(watching.state.term).toBe(1n);

    await leaving.stop();
    await watching.until("w-2's shards move to w-1", (state) => [...state.shards.values()].every((shard) => shard.agent === "w-1"));

    const fired = await client.triggerJob({ name: "rollup", shards: [] });
    await watching.until("the trigger's executions succeed", (state) => fired.executionIds.every((id) => state.executions.get(id) === ExecutionState.SUCCEEDED));
    await watching.until("each shard's latest execution is the trigger's", (state) =>
      fired.executionIds.every((id, shard) => state.shards.get(`rollup/${shard}`)?.lastId === id && state.shards.get(`rollup/${shard}`)?.last === ExecutionState.SUCCEEDED),
    );
    // The snapshot's recent events, then the new ones, each once.
    const agentEvents = watching.state.events.filter((event) => event.startsWith("agent."));
    expect(agentEvents.slice(0, 2).sort()).toEqual(["agent.joined w-1", "agent.joined w-2"]);
    expect(agentEvents.slice(2)).toEqual(expect.arrayContaining([expect.stringMatching(/^agent\.(left|lost) w-2$/)]));
    expect(agentEvents.filter((event) => event.startsWith("agent.joined"))).toHaveLength(2);
    expect(watching.state.resets).toBe(0);
  });

  it("resumes from a cursor with what came after it, and answers a cursor it cannot resume from with a reset and a new snapshot", async () => {
    const client = await start();
    await client.applyJob({ manifest: manifest("rollup", 2) });
    agent("w-1", "a");
    await waitFor("every shard assigned", async () => ((await client.listAssignments({})).unassigned.length === 0 ? true : undefined));

    const first = new Watching(client, { topics: [WatchTopic.EXECUTIONS, WatchTopic.JOBS] });
    await first.until("the snapshot", (state) => state.synced);
    const cursor = first.state.cursor;
    first.stop();
    await first.done;

    const fired = await client.triggerJob({ name: "rollup", shards: [0] });
    await client.applyJob({ manifest: manifest("later", 1) });
    const resumed = new Watching(client, { topics: [WatchTopic.EXECUTIONS, WatchTopic.JOBS], cursor });
    cleanup.push(() => resumed.stop());
    await resumed.until("the trigger's execution, missed while away", (state) => state.executions.get(fired.executionIds[0]!) === ExecutionState.SUCCEEDED);
    await resumed.until("the job applied while away", (state) => state.jobs.has("later"));
    // Resumed: no snapshot was sent again (the jobs from before are not repeated, nor is there a reset).
    expect(resumed.state.resets).toBe(0);
    expect(resumed.state.synced).toBe(false);
    expect(resumed.state.jobs.has("rollup")).toBe(false);

    const stale = new Watching(client, { topics: [WatchTopic.JOBS], cursor: "0123abcd.7" });
    cleanup.push(() => stale.stop());
    await stale.until("a fresh snapshot", (state) => state.synced);
    expect(stale.state.resets).toBe(1);
    expect([...stale.state.jobs].sort()).toEqual(["later", "rollup"]);
  });

  it("filters by job and topic, and refuses an unknown topic or too large a snapshot", async () => {
    const client = await start();
    await client.applyJob({ manifest: manifest("rollup", 2) });
    await client.applyJob({ manifest: manifest("billing", 2) });
    const watching = new Watching(client, { job: "billing", topics: [WatchTopic.SHARDS, WatchTopic.JOBS] });
    cleanup.push(() => watching.stop());
    await watching.until("the snapshot", (state) => state.synced);
    expect([...watching.state.jobs]).toEqual(["billing"]);
    expect([...watching.state.shards.keys()].sort()).toEqual(["billing/0", "billing/1"]);
    expect(watching.state.agents.size).toBe(0);

    const refused = async (request: Parameters<typeof client.watch>[0]): Promise<unknown> => {
      for await (const _ of client.watch(request)) return undefined;
      return undefined;
    };
    await expect(refused({ topics: [WatchTopic.UNSPECIFIED] })).rejects.toThrow(/topics: "WATCH_TOPIC_UNSPECIFIED" is not allowed; expected topics among WATCH_TOPIC_JOBS, .*WATCH_TOPIC_STATUS/);
    await expect(refused({ executionSnapshotLimit: 10_001 })).rejects.toThrow(/execution_snapshot_limit.*10000/);
  });

  it("cuts off a watcher that leaves its messages unread, and the controller goes on", async () => {
    const { store, core, driver } = await inMemoryCore();
    const hub = new WatchHub({ core, driver, store, logger: silentLogger(), address: () => "here", traceUrlTemplate: "", limits: { unreadMessages: 1_000, unreadChanges: 50 } });
    cleanup.push(() => hub.stop("the test is over"));
    await driver.run((now) => core.applyJob("rollup", testSpec("rollup", { shards: 10 }), "", now));
    // A watcher whose transport takes nothing: every message it is sent stays unread.
    const unread: unknown[] = [];
    const stuck = { send: (message: unknown) => unread.push(message) > 0, get queued() { return unread.length; }, drained: () => new Promise<void>(() => {}), closed: false };
    const abort = new AbortController();
    cleanup.push(() => abort.abort());
    const outcome = hub.watch(create(WatchRequestSchema, { topics: [WatchTopic.EXECUTIONS] }), stuck as never, { signal: abort.signal } as never).then(
      () => "ended",
      (error: Error) => error.message,
    );
    // Each trigger makes ten executions, published in a batch of their own.
    for (let trigger = 1; trigger <= 5; trigger++) {
      await driver.run((now) => core.triggerJob("rollup", [], undefined, now));
      await waitFor("the trigger's batch published", async () => (unread.length > trigger || (await Promise.race([outcome, "watching"])) !== "watching" ? true : undefined));
    }
    expect(await outcome).toMatch(/^the watch fell behind: \d+ messages with (4\d|50) changes unread, and a watcher may leave at most 1000 messages or 50 changes; watch again with the last cursor read/);
    // The core goes on: another trigger is made and stored.
    const fired = await driver.run((now) => core.triggerJob("rollup", [0], undefined, now));
    await driver.idle();
    expect((await store.getExecution(fired.executionIds[0]!))?.state).toBe("pending");
  });

  it("reports the fires made in the last ten seconds from the first status on, each fire once", async () => {
    const { store, core, driver } = await inMemoryCore();
    // Manual fires only: every fire is the test's.
    await driver.run((now) => core.applyJob("rollup", testSpec("rollup", { shards: 3, schedule: undefined }), "", now));
    for (let fire = 0; fire < 3; fire++) await driver.run((now) => core.triggerJob("rollup", [], undefined, now));
    // The hub's clock stands still: ten seconds' window, so each fire counts 0.1 a second.
    const at = Date.now();
    const hub = new WatchHub({ core, driver, store, logger: silentLogger(), address: () => "here", traceUrlTemplate: "", clock: () => at });
    cleanup.push(() => hub.stop("the test is over"));
    const statuses: { fires: number; executions: number }[] = [];
    const stream = { send: (message: { status?: { firesPerSecond: number; executionsPerSecond: number } }) => {
      if (message.status !== undefined) statuses.push({ fires: message.status.firesPerSecond, executions: message.status.executionsPerSecond });
      return true;
    }, queued: 0, drained: () => Promise.resolve(), closed: false };
    const abort = new AbortController();
    cleanup.push(() => abort.abort());
    void hub.watch(create(WatchRequestSchema, { topics: [WatchTopic.STATUS] }), stream as never, { signal: abort.signal } as never).catch(() => {});
    await waitFor("the snapshot's status", () => (statuses.length > 0 ? true : undefined));
    expect(statuses[0]!.fires).toBeCloseTo(0.3);
    // Two more fires of three executions each: the fires count once each, however many records they store.
    for (let fire = 0; fire < 2; fire++) await driver.run((now) => core.triggerJob("rollup", [], undefined, now));
    await waitFor("a status after the new fires", () => (statuses.at(-1)!.fires > 0.45 ? true : undefined));
    expect(statuses.at(-1)!.fires).toBeCloseTo(0.5);
  });

  it("ends a watch still reading its start UNAVAILABLE when the controller stops leading, and starts nothing after", async () => {
    const { store, core, driver } = await inMemoryCore();
    // The hub's first read of the store waits for the test.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const gated = Object.assign(Object.create(store) as SqliteStore, { listExecutions: async (query: Parameters<SqliteStore["listExecutions"]>[0]) => (await gate, store.listExecutions(query)) });
    const hub = new WatchHub({ core, driver, store: gated, logger: silentLogger(), address: () => "here", traceUrlTemplate: "" });
    const sent: unknown[] = [];
    const stream = { send: (message: unknown) => sent.push(message) > 0, queued: 0, drained: () => Promise.resolve(), closed: false };
    const watching = hub.watch(create(WatchRequestSchema, {}), stream as never, { signal: new AbortController().signal } as never);
    hub.stop("the controller stopped leading");
    release();
    await expect(watching).rejects.toThrow(/^the controller stopped leading; watch again/);
    expect(sent).toEqual([]);
  });

  it("says who the caller is and what it may do", async () => {
    const open = await start();
    expect(await open.whoAmI({})).toMatchObject({ name: "", role: "admin", tokensRequired: false });
    expect((await open.whoAmI({})).allowedMethods).toContain("DeleteJob");
    await controller!.stop();
    controller = undefined;
    await rm(dir!, { recursive: true, force: true });

    const client = await start(`${VIEWER},vera,viewer\n${OPERATOR},oliver,operator\n`);
    const as = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
    const vera = await client.whoAmI({}, { metadata: as(VIEWER) });
    expect(vera).toMatchObject({ name: "vera", role: "viewer", tokensRequired: true });
    expect(vera.allowedMethods).toContain("Watch");
    expect(vera.allowedMethods).not.toContain("TriggerJob");
    const oliver = await client.whoAmI({}, { metadata: as(OPERATOR) });
    expect(oliver.allowedMethods).toEqual(expect.arrayContaining(["TriggerJob", "DrainAgent", "PromoteRollout"]));
    expect(oliver.allowedMethods).not.toContain("ApplyJob");
    await expect(client.whoAmI({})).rejects.toThrow(/token/);
  });

  it("streams over Connect on the HTTP port, with the status a console shows", async () => {
    await start();
    const response = await fetch(`http://${controller!.httpAddress}/shardline.v1.AdminService/Watch`, {
      method: "POST",
      headers: { "content-type": "application/connect+json" },
      body: envelope({ topics: ["WATCH_TOPIC_STATUS"] }),
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const first = await readEnvelope(reader);
    expect(first).toMatchObject({ synced: true, status: { term: "1", traceUrlTemplate: "http://jaeger.example:16686/trace/{traceId}", agentsConnected: 0 } });
    await reader.cancel();
  });
});

function envelope(body: unknown): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(body));
  const framed = new Uint8Array(5 + json.length);
  new DataView(framed.buffer).setUint32(1, json.length);
  framed.set(json, 5);
  return framed;
}

async function readEnvelope(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<unknown> {
  let buffered = new Uint8Array(0);
  for (;;) {
    if (buffered.length >= 5) {
      const length = new DataView(buffered.buffer, buffered.byteOffset).getUint32(1);
      if (buffered.length >= 5 + length) return JSON.parse(new TextDecoder().decode(buffered.subarray(5, 5 + length)));
    }
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended before a whole message");
    const next = new Uint8Array(buffered.length + value.length);
    next.set(buffered);
    next.set(value, buffered.length);
    buffered = next;
  }
}
