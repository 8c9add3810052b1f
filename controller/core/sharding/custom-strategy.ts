import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ShardlineError } from "../../../shared/errors.js";
import { STRATEGIES } from "../../../shared/manifest/job-spec.js";
import type { ShardingAgent, ShardingInput, ShardingStrategy } from "./strategy.js";

/** One `--strategy NAME=MODULE`: jobs select the module's strategy with `spec.strategy: custom:NAME`. */
export interface StrategyModule {
  name: string;
  /** An ES module path, absolute or relative to the working directory. */
  modulePath: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const FLAG_ALLOWED = `NAME=MODULE, where NAME is a DNS-1123 label (1 to 63 lowercase letters, digits and '-') other than ${STRATEGIES.join(", ")}, and MODULE the path of an ES module`;
const MODULE_ALLOWED = "a module whose default export is a deterministic function (input) => Map placing every shard on one of the agents given";

/** Parses `--strategy NAME=MODULE`; the module itself is only read by loadCustomStrategy. */
export function parseStrategyFlag(value: string): StrategyModule {
  const equals = value.indexOf("=");
  const name = value.slice(0, Math.max(equals, 0));
  const modulePath = value.slice(equals + 1);
  // A built-in name would read as `custom:sticky` in a manifest, too easily mistaken for sticky.
  if (equals <= 0 || !DNS_LABEL.test(name) || (STRATEGIES as readonly string[]).includes(name) || modulePath.trim() === "" || modulePath.includes("\0")) {
    throw ShardlineError.invalid("--strategy", value, FLAG_ALLOWED);
  }
  return { name, modulePath };
}

/**
 * Loads every `--strategy` module, by name, for CoreConfig.customStrategies. Rejects a name given
 * twice and the first module that fails loadCustomStrategy.
 */
export async function loadCustomStrategies(modules: readonly StrategyModule[]): Promise<Map<string, ShardingStrategy>> {
  const loaded = new Map<string, ShardingStrategy>();
  for (const { name, modulePath } of modules) {
    parseStrategyFlag(`${name}=${modulePath}`);
    if (loaded.has(name)) throw ShardlineError.invalid("--strategy", `${name}=${modulePath}`, `each NAME once; "${name}" was already given`);
    loaded.set(name, await loadCustomStrategy(name, modulePath));
  }
  return loaded;
}

/**
 * Imports a user's strategy module and checks it before any job depends on it: its default
 * export is called on sample inputs (no agents, one, several with capacities; with and without a
 * previous assignment; 1 to 16 shards), twice each, and must place every shard on an agent it was
 * given, never throw, and answer the same input the same way. The strategy returned receives
 * frozen copies of its input, so it cannot change the core's data, and its answer is copied.
 */
export async function loadCustomStrategy(name: string, modulePath: string): Promise<ShardingStrategy> {
  const path = isAbsolute(modulePath) ? modulePath : resolve(process.cwd(), modulePath);
  const fail = (problem: string, cause?: unknown): ShardlineError =>
    new ShardlineError(
      "invalid-argument",
      `--strategy ${name}=${modulePath}: ${path} ${problem}; expected ${MODULE_ALLOWED}`,
      { field: "--strategy", value: `${name}=${modulePath}`, allowed: MODULE_ALLOWED },
      cause === undefined ? undefined : { cause },
    );

  let module: Record<string, unknown>;
  try {
    module = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (error) {
    throw fail(`cannot be imported: ${firstLine(error)}`, error);
  }
  if (!("default" in module) || module.default === undefined) throw fail("has no default export");
  const exported = module.default;
  if (typeof exported !== "function") throw fail(`has a default export that is ${kindOf(exported)}, not a function`);

  const strategy = guarded(exported as (input: ShardingInput) => unknown);
  for (const input of sampleInputs()) {
    let first: unknown;
    let second: unknown;
    try {
      first = strategy(input);
      second = strategy(input);
    } catch (error) {
      const frozen = error instanceof TypeError && /read[- ]only|not extensible|frozen/.test(error.message);
      const hint = frozen ? " (its input is frozen: copy agents or previous before sorting or changing them)" : "";
      throw fail(`threw on ${describeInput(input)}: ${firstLine(error)}${hint}`, error);
    }
    const problem = placementProblem(first, input) ?? differences(first as Map<number, string>, second);
    if (problem !== undefined) throw fail(`${problem}, on ${describeInput(input)}`);
  }
  return strategy;
}

/**
 * Refuses `spec.strategy: custom:NAME` when no strategy NAME was loaded: the job would otherwise
 * be accepted and then placed with sticky on every change, which is surely not what was meant.
 */
export function checkStrategyLoaded(strategy: string, loaded: ReadonlyMap<string, unknown>): void {
  if (!strategy.startsWith("custom:") || loaded.has(strategy.slice("custom:".length))) return;
  const names = [...loaded.keys()].sort();
  throw ShardlineError.invalid(
    "spec.strategy",
    strategy,
    `${STRATEGIES.join(", ")}, or custom:NAME for a loaded strategy (loaded: ${names.length === 0 ? "none" : names.join(", ")})`,
  );
}

/** User code gets copies it cannot change, and the core gets a Map the user code does not keep. */
function guarded(strategy: (input: ShardingInput) => unknown): ShardingStrategy {
  return (input) => {
    const result = strategy(frozenCopy(input));
    // Anything but a Map is handed on as it is, for the caller's own check to reject.
    return (result instanceof Map ? new Map(result) : result) as Map<number, string>;
  };
}

function frozenCopy(input: ShardingInput): ShardingInput {
  return Object.freeze({
    job: input.job,
    shardCount: input.shardCount,
    agents: Object.freeze(input.agents.map(({ id, capacity, load }): ShardingAgent => Object.freeze({ id, capacity, load }))),
    previous: readOnlyMap(input.previous),
  });
}

/** Object.freeze does not stop Map.prototype.set, so the mutators are shadowed on the copy. */
function readOnlyMap<K, V>(source: ReadonlyMap<K, V>): ReadonlyMap<K, V> {
  const copy = new Map(source);
  const refuse = (): never => {
    throw new TypeError("a sharding strategy must not change its input: previous is read-only");
  };
  Object.defineProperties(copy, { set: { value: refuse }, delete: { value: refuse }, clear: { value: refuse } });
  return Object.freeze(copy);
}

const SAMPLE_AGENT_SETS: readonly (readonly ShardingAgent[])[] = [
  [],
  [{ id: "solo", capacity: 1, load: 0 }],
  // Not sorted, unequal capacities and loads: what the core may pass.
  [
    { id: "agent-c", capacity: 1, load: 2 },
    { id: "agent-a", capacity: 2, load: 0 },
    { id: "agent-b", capacity: 3, load: 5 },
  ],
];

function sampleInputs(): ShardingInput[] {
  const inputs: ShardingInput[] = [];
  for (const agents of SAMPLE_AGENT_SETS) {
    for (let shardCount = 1; shardCount <= 16; shardCount++) {
      inputs.push({ job: "sample-job", shardCount, agents, previous: new Map() });
      // Owners cycle through the agents and one that has left, which the core may also pass.
      const owners = [...agents.map((agent) => agent.id), "agent-gone"];
      const previous = new Map<number, string>();
      for (let shard = 0; shard < shardCount; shard++) previous.set(shard, owners[shard % owners.length]!);
      inputs.push({ job: "sample-job", shardCount, agents, previous });
    }
  }
  return inputs;
}

/** What is wrong with a strategy's answer, or undefined when it is a valid placement. */
function placementProblem(result: unknown, input: ShardingInput): string | undefined {
  if (!(result instanceof Map)) {
    const promise = result instanceof Promise ? " (a strategy must be synchronous)" : "";
    return `returned ${kindOf(result)} instead of a Map of shard number to agent id${promise}`;
  }
  const ids = new Set(input.agents.map((agent) => agent.id));
  for (const [shard, agent] of result as Map<unknown, unknown>) {
    if (typeof shard !== "number" || !Number.isInteger(shard) || shard < 0 || shard >= input.shardCount) {
      return `placed shard ${JSON.stringify(shard)}, which the job does not have (its shards are the numbers 0 to ${input.shardCount - 1})`;
    }
    if (ids.size === 0) return `placed shard ${shard} on ${JSON.stringify(agent)} although no agents were given (with none it must return an empty Map)`;
    if (typeof agent !== "string" || !ids.has(agent)) return `shard ${shard} was placed on ${JSON.stringify(agent)}, which is not one of the agents given`;
  }
  if (ids.size === 0) return undefined;
  for (let shard = 0; shard < input.shardCount; shard++) {
    if (!result.has(shard)) return `left shard ${shard} unplaced`;
  }
  return undefined;
}

function differences(first: Map<number, string>, second: unknown): string | undefined {
  const notDeterministic = "is not deterministic: the same input gave two different placements";
  if (!(second instanceof Map) || second.size !== first.size) return notDeterministic;
  for (const [shard, agent] of first) {
    const again: unknown = second.get(shard);
    if (again !== agent) return `${notDeterministic} (shard ${shard} on ${JSON.stringify(agent)}, then on ${JSON.stringify(again)})`;
  }
  return undefined;
}

function describeInput({ shardCount, agents, previous }: ShardingInput): string {
  const given = agents.length === 0 ? "no agents" : `agents ${agents.map((a) => `${a.id} (capacity ${a.capacity})`).join(", ")}`;
  return `${shardCount} shard${shardCount === 1 ? "" : "s"}, ${given}, ${previous.size === 0 ? "no" : "a"} previous assignment`;
}

function kindOf(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return "an array";
  if (value instanceof Promise) return "a Promise";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

function firstLine(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.split("\n", 1)[0]!;
}
