import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { RunningController } from "../../controller/shell/controller.js";
import { AgentState } from "../../shared/gen/shardline/v1/types_pb.js";
import { freePortOn } from "./addresses.js";
import { EtcdServer } from "./etcd.js";
import { iso, readRuns, type RunRecord } from "./fire-evidence.js";
import { type AdminClient, adminClient, requireBuiltCli, waitFor } from "./processes.js";
import { ControllerReplica, ControllerReplicaSet } from "./replicas.js";
import type { AgentOptions, InProcessControllerOptions, ShardlineTestEnvOptions, SingleControllerOptions } from "./shardline-env-options.js";
import { SqliteController } from "./sqlite-controller.js";
import { spawnAgent, type TrackedProcess } from "./tracked-process.js";

const HERE = dirname(fileURLToPath(import.meta.url));
/** Handlers that record each run's start, and its end or abort, with the agent's pid (chaos-handlers.mjs). */
export const CHAOS_HANDLERS = join(HERE, "chaos-handlers.mjs");
/** Handlers that record each run's start and end, and more handlers besides (test/fixtures/recording-handlers.mjs). */
export const RECORDING_HANDLERS = join(HERE, "..", "fixtures", "recording-handlers.mjs");

/** How much of each process's output a failed test prints. */
const OUTPUT_ON_FAILURE_CHARS = 30_000;

/** The controller side of a world: what the environment needs of it. */
export interface ControllerSide {
  /** What agents and the CLI take as --controller. */
  readonly addresses: string;
  /** Every controller process it ran, oldest first. */
  readonly incarnations: readonly TrackedProcess[];
  stop(): Promise<void>;
}

/** A controller started in the test's own process (startController), for a test that needs its logger. */
export class InProcessController implements ControllerSide {
  readonly incarnations: readonly TrackedProcess[] = [];
  constructor(readonly running: RunningController) {}

  get addresses(): string {
    return this.running.grpcAddress;
  }

  stop(): Promise<void> {
    return this.running.stop();
  }
}

/**
 * A world of real processes for a test to run in: a controller (one process on SQLite, replicas
 * on a real etcd, or one in the test's process), agent processes of the built CLI whose handlers
 * append each run to a record file, an admin client, and a temporary directory. A test asks for
 * one with single(), replicas() or inProcess(), starts agents, and ends it with close(), which
 * stops everything the world started and prints every process's output if the test failed.
 */
export class ShardlineTestEnv<C extends ControllerSide = ControllerSide> {
  /** The current process of each agent id. */
  readonly agents = new Map<string, TrackedProcess>();
  /** Every agent process ever started, oldest first. */
  readonly allAgents: TrackedProcess[] = [];
  /** What the test noted as it went, printed if it failed. */
  readonly journal: string[] = [];
  /** Set by the test when it failed: close() then prints the journal and every process's output. */
  failed = false;
  readonly #deferred: (() => unknown)[] = [];
  #closed = false;

  private constructor(
    readonly options: ShardlineTestEnvOptions,
    /** The world's temporary directory, removed by close(). */
    readonly dir: string,
    readonly controller: C,
    /** An admin client of the controller; of replicas, one that follows the leader. */
    readonly admin: AdminClient,
    readonly etcd: EtcdServer | undefined,
    private readonly controllerLog: (() => string) | undefined,
  ) {}

  /** One controller process on a SQLite file in the world's directory. */
  static async single(options: SingleControllerOptions): Promise<ShardlineTestEnv<SqliteController>> {
    requireBuiltCli();
    const host = options.host ?? "127.0.0.1";
    const dir = await makeDirectory(options.name);
    const controller = new SqliteController(host, await freePortOn(host), join(dir, "state.db"), options.controllerArgs ?? []);
    const env = new ShardlineTestEnv(options, dir, controller, adminClient(controller.address), undefined, undefined);
    await env.#starting(() => controller.start());
    return env;
  }

  /**
   * `count` controller replicas on one real etcd (key prefix `/NAME`), each resolved once its log
   * says it serves; the test waits for the leader it needs (controller.leaderIn, leaderAfter).
   */
  static async replicas(count: number, options: ShardlineTestEnvOptions): Promise<ShardlineTestEnv<ControllerReplicaSet>> {
    requireBuiltCli();
    const dir = await makeDirectory(options.name);
    let etcd: EtcdServer;
    try {
      etcd = await EtcdServer.start();
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
    const replicas: ControllerReplica[] = [];
    for (let i = 1; i <= count; i++) {
      replicas.push(new ControllerReplica(`ctl-${i}`, "127.0.0.1", await freePortOn("127.0.0.1"), `${etcd.url}/${options.name}`, options.controllerArgs ?? []));
    }
    const set = new ControllerReplicaSet(replicas);
    const env = new ShardlineTestEnv(options, dir, set, set.admin().asClient(), etcd, undefined);
    await env.#starting(() => Promise.all(replicas.map((r) => r.start())));
    return env;
  }

  /** One controller in this process, started with `options.controller`. */
  static async inProcess(options: InProcessControllerOptions): Promise<ShardlineTestEnv<InProcessController>> {
    requireBuiltCli();
    const dir = await makeDirectory(options.name);
    let running: RunningController;
    try {
      // Imported here: the worlds of processes alone do not load the controller into the test.
      const { startController } = await import("../../controller/shell/controller.js");
      running = await startController(options.controller);
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
    return new ShardlineTestEnv(options, dir, new InProcessController(running), adminClient(running.grpcAddress), undefined, options.log);
  }

  /** The file the agents' handlers append each run to. */
  get record(): string {
    return join(this.dir, "runs.jsonl");
  }

  /** The agents' record of their runs so far. */
  runs(): RunRecord[] {
    return readRuns(this.record);
  }

  /** Starts an agent process `id` on the world's controller; it becomes `agents.get(id)`. */
  startAgent(id: string, options: AgentOptions = {}): TrackedProcess {
    const agent = spawnAgent({
      name: id,
      controller: this.controller.addresses,
      handlers: this.options.handlers ?? RECORDING_HANDLERS,
      env: { SHARDLINE_TEST_RECORD: this.record, ...this.options.agentEnv, ...options.env },
      ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
      ...(options.args === undefined ? {} : { args: options.args }),
    });
    this.agents.set(id, agent);
    this.allAgents.push(agent);
    this.note(`started ${id} (pid ${agent.pid})`);
    return agent;
  }

  /** Adds a line to the journal, stamped with the time. */
  note(line: string): void {
    this.journal.push(`${iso(Date.now())} ${line}`);
  }

  /** Which agent owns each shard of `job`, as the controller says. */
  async owners(job: string): Promise<Map<number, string>> {
    return new Map((await this.admin.listAssignments({ job })).assignments.map((a) => [a.shard, a.agent]));
  }

  /** Waits until `count` agents are connected and ready. */
  async agentsReady(count: number, what: string, timeoutMs = 30_000): Promise<void> {
    await waitFor(what, async () => ((await this.admin.listAgents({})).agents.filter((a) => a.state === AgentState.READY).length === count ? true : undefined), timeoutMs);
  }

  /**
   * Waits until each of `shards` shards has a run, finished by `agent` or the process `pid` if
   * given, of a fire later than `after`, in the agents' record; resolves with when it saw that.
   */
  everyShardRan(what: string, options: { shards: number; after: number; agent?: string; pid?: number }, timeoutMs = 30_000): Promise<number> {
    return waitFor(
      what,
      () => {
        const done = this.runs().filter(
          (r) => r.event === "end" && r.fireTime > options.after && (options.agent === undefined || r.agent === options.agent) && (options.pid === undefined || r.pid === options.pid),
        );
        return new Set(done.map((r) => r.shard)).size === options.shards ? Date.now() : undefined;
      },
      timeoutMs,
    );
  }

  /**
   * Runs the test's own set-up of this world (agents, jobs, the first fires); if it fails, marks
   * the world failed, so that close() prints its output, and rethrows.
   */
  async settingUp(steps: () => Promise<unknown>): Promise<void> {
    try {
      await steps();
    } catch (error) {
      this.failed = true;
      throw error;
    }
  }

  /** Runs `cleanup` at close(), before the world's own processes stop (the last deferred first). */
  defer(cleanup: () => unknown): void {
    this.#deferred.push(cleanup);
  }

  /** The journal, and the output of every process the world ran (and of etcd). */
  dump(): string {
    const sections = this.journal.length > 0 ? [this.journal.join("\n")] : [];
    for (const process of [...this.controller.incarnations, ...this.allAgents]) {
      sections.push(`--- ${process.name} (pid ${process.pid})\n${process.output.slice(-OUTPUT_ON_FAILURE_CHARS)}`);
    }
    if (this.controllerLog !== undefined) sections.push(`--- controller (in the test's process)\n${this.controllerLog().slice(-OUTPUT_ON_FAILURE_CHARS)}`);
    if (this.etcd !== undefined) sections.push(`--- etcd\n${this.etcd.log()}`);
    return sections.join("\n");
  }

  /**
   * Ends the world: runs what was deferred, stops every agent and controller process it started
   * (thawing frozen ones), etcd, and removes its directory; prints dump() first if `failed`.
   * Goes through every step whatever fails, then throws what did. A second call does nothing.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.failed) console.error(this.dump());
    const errors: unknown[] = [];
    const step = async (run: () => unknown): Promise<void> => {
      try {
        await run();
      } catch (error) {
        errors.push(error);
      }
    };
    for (const cleanup of this.#deferred.splice(0).reverse()) await step(cleanup);
    await step(() => this.admin.close());
    await step(() => Promise.all(this.allAgents.map((agent) => agent.stop())));
    await step(() => Promise.all(this.controller.incarnations.map((process) => process.stop())));
    await step(() => this.controller.stop());
    if (this.etcd !== undefined) await step(() => this.etcd!.stop());
    await step(() => rm(this.dir, { recursive: true, force: true }));
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "closing the test environment failed more than once");
  }

  /** Runs `start`; if it fails, closes the world (printing its output) before rethrowing. */
  async #starting(start: () => Promise<unknown>): Promise<void> {
    try {
      await start();
    } catch (error) {
      this.failed = true;
      try {
        await this.close();
      } catch (closing) {
        throw new AggregateError([error, closing], "the test environment failed to start, and then to close");
      }
      throw error;
    }
  }
}

async function makeDirectory(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `shardline-${name}-`));
  writeFileSync(join(dir, "runs.jsonl"), "");
  return dir;
}
