import { CpuMeter, microsecondsEach, type MeteredProcess } from "../cpu.js";
import type { EchoTally, FloorAgentCount } from "../floor/ipc.js";
import { IN_FLIGHT, type ThroughputOptions } from "./throughput.js";
import { type EchoControllerProcess, type FloorAgentProcess, startEchoController, startFloorAgents } from "../floor/floor-processes.js";

/** How long the agents have to connect and be welcomed. */
const WELCOME_TIMEOUT_MS = 60_000;
/** How long a fire may take to come back whole after the previous one did (or after the first trigger). */
const FIRE_TIMEOUT_MS = 60_000;
/** How long a child has to answer a tally or a count. */
const ANSWER_TIMEOUT_MS = 10_000;

/** The throughput scenario's shape: executions in all, rounded up to whole fires of `shardsPerTrigger`. */
export type TransportFloorOptions = Pick<ThroughputOptions, "agents" | "processes" | "executions" | "shardsPerTrigger">;

export interface TransportFloorResult {
  executions: number;
  seconds: number;
  perSecond: number;
  /** CPU microseconds per execution, the echo controller and every floor agent process together. */
  cpuMicrosEach: number;
  /** CPU seconds by process name ("echo controller", "floor agents"), over the measured interval. */
  cpuSecondsByName: Record<string, number>;
}

/** A run of the floor, with what each side counted: for checks beyond the figures. */
export interface TransportFloorRun {
  result: TransportFloorResult;
  echo: EchoTally;
  agents: FloorAgentCount[];
}

/**
 * The transport's floor: the throughput scenario's messages over the same transport with nothing
 * behind them. An echo controller (bench/floor/echo-controller.ts) sends each fire's executions
 * as the controller would, to floor agents (bench/floor/floor-agents.ts) that answer each with a
 * SUCCEEDED update as the agent would, without running anything. The same closed loop as the
 * throughput scenario: a fire of `shardsPerTrigger` executions is triggered again as soon as
 * fewer than IN_FLIGHT fires are outstanding. Time and CPU (echo controller and floor agent
 * processes, not this one) from the first trigger to the last completion. Shardline's CPU per
 * execution divided by `cpuMicrosEach` says how much of it is beyond the transport.
 */
export async function transportFloor(options: TransportFloorOptions): Promise<TransportFloorResult> {
  return (await runTransportFloor(options)).result;
}

/** transportFloor, with each side's counts; it fails unless every execution sent came back once. */
export async function runTransportFloor(options: TransportFloorOptions): Promise<TransportFloorRun> {
  const { agents, processes, shardsPerTrigger } = options;
  for (const [name, value] of Object.entries(options)) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`floor: ${name} is ${value}; expected an integer of at least 1`);
  }
  const triggers = Math.ceil(options.executions / shardsPerTrigger);
  const executions = triggers * shardsPerTrigger;
  const { echo, address } = await startEchoController();
  const loads = startFloorAgents(address, "floor", agents, processes);
  const children = [echo, ...loads];
  try {
    await Promise.all(loads.map((load) => load.next("welcomed", `every agent of ${load.name} welcomed`, WELCOME_TIMEOUT_MS)));
    const metered: MeteredProcess[] = [{ name: "echo controller", pid: echo.pid }, ...loads.map((load) => ({ name: "floor agents", pid: load.pid }))];
    const meter = new CpuMeter(metered).start();
    const startedAt = performance.timeOrigin + performance.now();
    const lastAt = await failFirst(children, closedLoop(echo, triggers, shardsPerTrigger, agents));
    const reading = meter.stop();
    const tally = await askTally(echo);
    const counts = await Promise.all(loads.map((load) => askCount(load)));
    checkEveryExecutionCameBack(executions, tally, counts);
    const seconds = (lastAt - startedAt) / 1000;
    return {
      result: { executions, seconds, perSecond: executions / seconds, cpuMicrosEach: microsecondsEach(reading, executions), cpuSecondsByName: reading.byName },
      echo: tally,
      agents: counts,
    };
  } finally {
    // Agents first: the echo controller takes their streams' ends as the end of the run.
    await Promise.all(loads.map((load) => load.stop()));
    await echo.stop();
  }
}

/**
 * Triggers `triggers` fires, at most IN_FLIGHT outstanding, each next one as a fire completes;
 * resolves with the instant (Unix ms, the echo controller's reading) the last one completed.
 */
function closedLoop(echo: EchoControllerProcess, triggers: number, shards: number, agents: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let completed = 0;
    let lastAt = 0;
    let watchdog: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        off();
        reject(new Error(`floor: fire ${completed + 1} of ${triggers} did not come back whole within ${FIRE_TIMEOUT_MS} ms (${sent} triggered, ${completed} complete)`));
      }, FIRE_TIMEOUT_MS);
    };
    const trigger = (): void => {
      sent++;
      echo.send({ type: "trigger", shards, agents });
    };
    const off = echo.onReport((report) => {
      if (report.type !== "completed") return;
      completed++;
      lastAt = Math.max(lastAt, report.at);
      if (completed === triggers) {
        clearTimeout(watchdog);
        off();
        resolve(lastAt);
        return;
      }
      arm();
      if (sent < triggers) trigger();
    });
    arm();
    while (sent < Math.min(IN_FLIGHT, triggers)) trigger();
  });
}

/** `work`, unless a child fails or dies first. */
function failFirst<T>(children: readonly { failure: Promise<never> }[], work: Promise<T>): Promise<T> {
  return Promise.race([work, ...children.map((child) => child.failure)]);
}

async function askTally(echo: EchoControllerProcess): Promise<EchoTally> {
  const reply = echo.next("tally", "a tally from the echo controller", ANSWER_TIMEOUT_MS);
  echo.send({ type: "tally" });
  return (await reply).tally;
}

async function askCount(load: FloorAgentProcess): Promise<FloorAgentCount> {
  const reply = load.next("count", `a count from ${load.name}`, ANSWER_TIMEOUT_MS);
  load.send({ type: "count" });
  return (await reply).count;
}

/** A floor that lost, duplicated or invented an execution measured something else: it fails instead. */
function checkEveryExecutionCameBack(executions: number, tally: EchoTally, counts: readonly FloorAgentCount[]): void {
  const received = counts.reduce((sum, c) => sum + c.received, 0);
  const echoed = counts.reduce((sum, c) => sum + c.echoed, 0);
  const wrong: string[] = [];
  if (tally.dispatched !== executions) wrong.push(`the echo controller dispatched ${tally.dispatched}`);
  if (tally.completed !== executions) wrong.push(`it counted ${tally.completed} back`);
  if (tally.unsuccessful !== 0) wrong.push(`${tally.unsuccessful} came back other than SUCCEEDED`);
  if (tally.strays !== 0) wrong.push(`${tally.strays} updates named no outstanding execution`);
  if (received !== executions) wrong.push(`the agents received ${received}`);
  if (echoed !== executions) wrong.push(`the agents echoed ${echoed}`);
  if (wrong.length > 0) throw new Error(`floor: of ${executions} executions, ${wrong.join("; ")}`);
}
