import { join } from "node:path";
import { type CpuReading, CpuMeter, type MeteredProcess, microsecondsEach } from "../cpu.js";
import { agentsReady, ControllerProcess, type LoadProcess, manifest, startLoad, until } from "../harness.js";

/** Triggers whose executions may be outstanding at once (the transport floor keeps the same bound). */
export const IN_FLIGHT = 5;
/** The longest a run may take to see every execution it asked for, before it fails saying how many arrived. */
const RUN_TIMEOUT_MS = 300_000;

export interface ThroughputOptions {
  agents: number;
  processes: number;
  /** Executions in all: triggers of a job of `shardsPerTrigger` shards, sent back to back. */
  executions: number;
  shardsPerTrigger: number;
  /** Extra controller flags, such as another store. */
  controllerFlags?: string[];
  /** The controller's store; a fresh SQLite file in `dir` unless given. */
  store?: string;
  /** More processes whose CPU counts, such as the store's own (etcd's members). */
  meter?: MeteredProcess[];
  /** Variables for the controller and the load processes, such as the OTEL_* ones that turn tracing on. */
  env?: NodeJS.ProcessEnv;
}

export interface ThroughputResult {
  executions: number;
  seconds: number;
  perSecond: number;
  /** CPU time of the controller (every thread) and of the load processes from the first trigger to the last run's end. */
  cpu: CpuReading;
  /** Microseconds of CPU per execution, every process together. */
  cpuMicrosEach: number;
}

/**
 * Dispatch throughput: one job of many shards with no-op handlers, triggered again as soon as
 * fewer than IN_FLIGHT triggers' executions are outstanding; time from the first trigger until
 * the agents have run every execution, and the CPU every process spent meanwhile.
 */
export async function shardlineThroughput(dir: string, options: ThroughputOptions): Promise<ThroughputResult> {
  const store = options.store ?? `sqlite:${join(dir, `throughput-${options.agents}-${Date.now()}.db`)}`;
  const controller = await ControllerProcess.start(store, options.controllerFlags ?? [], options.env);
  const loads = await startLoad(controller.address, "tp", options.agents, options.processes, { env: options.env ?? {} });
  try {
    await agentsReady(controller.admin, options.agents);
    await controller.admin.applyJob({
      manifest: manifest("throughput", { shards: options.shardsPerTrigger, handler: "noop", overlap: "allow" }),
    });
    await until("every shard to be assigned", async () =>
      (await controller.admin.listAssignments({ job: "throughput" })).assignments.length >= options.shardsPerTrigger ? true : undefined,
    );
    const finished = new FinishedCount(loads);
    const triggers = Math.ceil(options.executions / options.shardsPerTrigger);
    const executions = triggers * options.shardsPerTrigger;
    const meter = new CpuMeter([{ name: "controller", pid: controller.pid }, ...loads.map((load) => ({ name: "agents", pid: load.pid })), ...(options.meter ?? [])]).start();
    const started = performance.timeOrigin + performance.now();
    // A closed loop: at most IN_FLIGHT triggers' executions outstanding, as a steady producer
    // would keep it, rather than tens of thousands queued at once.
    for (let i = 0; i < triggers; i++) {
      if (i >= IN_FLIGHT) await finished.reach((i - IN_FLIGHT + 1) * options.shardsPerTrigger);
      await controller.admin.triggerJob({ name: "throughput" });
    }
    await finished.reach(executions);
    const cpu = meter.stop();
    const seconds = (finished.lastFinishedAt - started) / 1000;
    return { executions, seconds, perSecond: executions / seconds, cpu, cpuMicrosEach: microsecondsEach(cpu, executions) };
  } finally {
    await Promise.all(loads.map((load) => load.stop()));
    await controller.stop();
  }
}

/** The runs the load processes have finished, as they report them (each at the end of a turn in which some finished). */
class FinishedCount {
  readonly #byLoad = new Map<LoadProcess, number>();
  #lastFinishedAt = 0;
  #waiter: { target: number; resolve: () => void } | undefined;

  constructor(loads: readonly LoadProcess[]) {
    for (const load of loads) {
      this.#byLoad.set(load, 0);
      load.onReport((report) => {
        if (report.type !== "count") return;
        this.#byLoad.set(load, report.finished);
        this.#lastFinishedAt = Math.max(this.#lastFinishedAt, report.lastFinishedAt);
        if (this.#waiter !== undefined && this.total >= this.#waiter.target) this.#waiter.resolve();
      });
      load.send({ type: "reset", progress: true });
    }
  }

  get total(): number {
    let sum = 0;
    for (const count of this.#byLoad.values()) sum += count;
    return sum;
  }

  /** When the last run counted so far finished, by the wall clock of its load process. */
  get lastFinishedAt(): number {
    return this.#lastFinishedAt;
  }

  /** Resolves once `target` runs have finished; fails after RUN_TIMEOUT_MS naming how many had. */
  async reach(target: number): Promise<void> {
    if (this.total >= target) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        this.#waiter = { target, resolve };
        timer = setTimeout(
          () => reject(new Error(`benchmark: ${this.total} of ${target} executions had finished after ${RUN_TIMEOUT_MS} ms`)),
          RUN_TIMEOUT_MS,
        );
      });
    } finally {
      clearTimeout(timer);
      this.#waiter = undefined;
    }
  }
}
