/**
 * Why something waits (invariant 9: nothing waits without a reason the CLI shows). Pure
 * functions over what the core knows, worded for an operator: each names the requirement that
 * fails and, where there is one, the command or flag that fixes it. The core calls them when a
 * view is read, an apply is answered or a fire misfires, never on the hot path of a fire.
 */
import { type ExecutorSpec, type JobSpec, unknownExecutor } from "../../shared/manifest/job-spec.js";

/** What the reasons read of an agent. */
export interface AgentFacts {
  id: string;
  connected: boolean;
  lost: boolean;
  leaving: boolean;
  cordoned: boolean;
  labels: Readonly<Record<string, string>>;
  handlers: ReadonlySet<string>;
  executors: ReadonlySet<string>;
}

/** The executor a job's shards need, as a predicate on an agent and the words for it. */
interface Runner {
  runs(agent: AgentFacts): boolean;
  /** "declares handler \"x\"", "runs scripts"... completing "no connected agent ...". */
  does: string;
  /** How to start an agent that does, when a flag does it. */
  fix?: string;
}

function runnerOf(runs: ExecutorSpec): Runner {
  switch (runs.kind) {
    case "handler":
      return { runs: (a) => a.handlers.has(runs.handler), does: `declares handler ${JSON.stringify(runs.handler)}` };
    case "script":
      return { runs: (a) => a.executors.has("script"), does: "runs scripts", fix: `start one with --allow-script ${runs.script.command}` };
    case "http":
      return { runs: (a) => a.executors.has("http"), does: "makes HTTP calls", fix: "start one with --allow-http" };
    case "kubernetes":
      return { runs: (a) => a.executors.has("kubernetes"), does: "runs Kubernetes Jobs", fix: "start one with --kubernetes" };
    default:
      return unknownExecutor(runs);
  }
}

/** What an agent must do to run `runs`, completing "an agent that ...": `declares handler "x"`, `runs scripts`. */
export function whatRunsTake(runs: ExecutorSpec): string {
  return runnerOf(runs).does;
}

/** `zone=eu-1,tier=batch`: a selector as a user wrote it. */
function selectorText(selector: Readonly<Record<string, string>>): string {
  return Object.entries(selector)
    .map(([key, value]) => `${key}=${value}`)
    .join(",");
}

/**
 * Why no agent may take the job's shards now, naming the first requirement that no connected
 * agent meets, in the order an operator fixes them (something connected, something that runs the
 * job, in the right place, not being drained); undefined when some agent may take them.
 */
export function whyNoAgentCanRun(spec: JobSpec, agents: Iterable<AgentFacts>): string | undefined {
  const connected = [...agents].filter((a) => a.connected && !a.lost);
  if (connected.length === 0) return "no agent is connected";
  const runner = runnerOf(spec.runs);
  const runners = connected.filter((a) => runner.runs(a));
  if (runners.length === 0) return `no connected agent ${runner.does}${runner.fix === undefined ? "" : ` (${runner.fix})`}`;
  const selector = spec.placement.selector;
  const matching = runners.filter((a) => Object.entries(selector).every(([key, value]) => a.labels[key] === value));
  if (matching.length === 0) {
    return `no connected agent that ${runner.does} matches spec.placement.selector ${selectorText(selector)} (give one those --label flags)`;
  }
  const spreadBy = spec.placement.spreadBy ?? [];
  const placed = matching.filter((a) => spreadBy.every((key) => a.labels[key] !== undefined));
  if (placed.length === 0) {
    return `no connected agent that ${runner.does} has every spec.placement.spreadBy label (${spreadBy.join(", ")})`;
  }
  const open = placed.filter((a) => !a.leaving && !a.cordoned);
  if (open.length === 0) {
    const ids = placed.slice(0, 3).map((a) => a.id);
    return `every agent that may run it is draining or cordoned (${ids.join(", ")}${placed.length > ids.length ? ", ..." : ""}; shardline uncordon AGENT)`;
  }
  return undefined;
}

/** Why no agent may run a completion hook with `handler` now; undefined when one may. */
export function whyNoAgentForHook(handler: string, spec: JobSpec, agents: Iterable<AgentFacts>): string | undefined {
  const hookSpec: JobSpec = { ...spec, runs: { kind: "handler", handler }, placement: { selector: spec.placement.selector } };
  const reason = whyNoAgentCanRun(hookSpec, agents);
  return reason === undefined ? undefined : `${reason} (spec.onFireComplete.handler)`;
}

/** Why a job makes no scheduled fires now; undefined when it does (or has no schedule). */
export function whyNoScheduledFires(name: string, spec: JobSpec, paused: boolean): string | undefined {
  if (paused) return `paused (shardline resume ${name})`;
  if (spec.suspend) return "spec.suspend is true";
  return undefined;
}

/** An instant as the reasons show it. */
export function at(time: number): string {
  return new Date(time).toISOString();
}
