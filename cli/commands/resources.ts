import type { ShardAssignment, UnassignedShard } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentState, ExecutionState, type Agent, type Execution, type Job, type Revision, type RevisionTally, type RolloutStatus } from "../../shared/gen/shardline/v1/types_pb.js";
import { parse as parseYaml } from "yaml";
import { ShardlineError } from "../../shared/errors.js";
import { MANIFEST_API_VERSION, MANIFEST_KIND } from "../../shared/manifest/index.js";
import { NONE, formatDuration, isoTime, tableTime, type Column } from "../output.js";
import { EXECUTION_STATE_NAMES, executionStateName } from "../../shared/execution-view.js";

export { EXECUTION_STATE_NAMES, executionStateName, executionView, type ExecutionView } from "../../shared/execution-view.js";

/**
 * What `shardline get` shows of each resource. The JSON views are a contract that scripts and
 * other checks rely on: fields may be added, never renamed or removed. Times are ISO-8601 strings
 * or null, 64-bit numbers are JSON numbers, and an empty string from the API is null.
 */

/** Agent states as the CLI names them. */
export const AGENT_STATE_NAMES: Readonly<Record<AgentState, string>> = {
  [AgentState.UNSPECIFIED]: "unknown",
  [AgentState.READY]: "ready",
  [AgentState.DRAINING]: "draining",
  [AgentState.LOST]: "lost",
};

/** The name of an agent state; a value newer than this CLI shows as "unknown". */
export function agentStateName(state: AgentState): string {
  return AGENT_STATE_NAMES[state] ?? "unknown";
}

/** `--state`: one of the execution state names (never "unspecified"). */
export function parseExecutionState(value: string): ExecutionState {
  const entry = Object.entries(EXECUTION_STATE_NAMES).find(([state, name]) => name === value && Number(state) !== ExecutionState.UNSPECIFIED);
  if (!entry) {
    const accepted = Object.values(EXECUTION_STATE_NAMES).filter((name) => name !== "unspecified");
    throw ShardlineError.invalid("--state", value, accepted.join(", "));
  }
  return Number(entry[0]) as ExecutionState;
}

/** `shardline get jobs -o json`: one job. */
export interface JobView {
  name: string;
  schedule: string | null;
  timeZone: string | null;
  shards: number | null;
  handler: string | null;
  paused: boolean;
  nextFire: string | null;
  lastFire: string | null;
  revision: number;
  /** Shards an operator disabled. */
  disabledShards: number[];
  /** The next scheduled fires, up to five, as ISO-8601 times. */
  upcomingFires: string[];
  /** The normalised manifest (the API's spec_json), or null when the controller sent none. */
  spec: Record<string, unknown> | null;
  /** Why the job, or some of its shards, cannot run now; null when nothing stops it. */
  waitingReason: string | null;
  /** How its rollout stands; null from a controller that sends none. */
  rollout: RolloutView | null;
}

/** Finished runs of one revision in a rollout's analysis window. */
export interface TallyView {
  runs: number;
  failures: number;
  /** The 95th percentile duration of those runs, in ms; null when none was timed. */
  p95Ms: number | null;
}

/** `shardline rollout status -o json` (and a job's `rollout`): how a job's rollout stands. */
export interface RolloutView {
  job: string;
  /** none, progressing, paused, completed or aborted. */
  phase: string;
  currentRevision: number;
  stableRevision: number;
  targetRevision: number;
  /** The target revision's steps, described; empty with phase none. */
  steps: string[];
  /** The step under way, from 1; steps.length + 1 once past the last; 0 with phase none. */
  step: number;
  stepStartedAt: string | null;
  /** Which revision each shard's next fire runs. */
  shardsByRevision: { revision: number; shards: number[] }[];
  /** The analysis window: runs of fires since this instant count in `target` and `stable`. */
  windowStartedAt: string | null;
  target: TallyView;
  stable: TallyView;
  /** Why it was aborted or ended early; null otherwise. */
  reason: string | null;
  endedAt: string | null;
  /** What the step under way waits for; null when nothing is in progress. */
  waiting: string | null;
}

/** `shardline rollout history -o json`: one revision of a job. */
export interface RevisionView {
  revision: number;
  appliedAt: string | null;
  /** The token name that applied it; null when the controller checks no tokens. */
  appliedBy: string | null;
  /** sha256 of the spec, 64 hex digits. */
  hash: string;
  /** The revision an undo copied; null for an apply. */
  undoOf: number | null;
  /** True for the job's current revision (the latest). */
  current: boolean;
  /** True for the revision shards outside a rollout's waves run (the current one when nothing rolls out). */
  stable: boolean;
  manifest: string;
}

/** `shardline get agents -o json`: one agent. */
export interface AgentView {
  id: string;
  labels: Record<string, string>;
  state: string;
  shards: { job: string; shard: number }[];
  capacity: number;
  handlers: string[];
  version: string | null;
  cordoned: boolean;
  leaseExpiresAt: string | null;
  connectedAt: string | null;
  /** The process holding the id (Hello.instance_id); null when it sent none. */
  instanceId: string | null;
  /** Hellos from other processes under its id refused while it held the id. */
  refusedHellos: number;
  /** The last of those: when, from where, which instance; null when none. */
  lastRefusal: string | null;
}

/** `shardline get assignments -o json`: one shard's owner. */
export interface AssignmentView {
  job: string;
  shard: number;
  agent: string;
  generation: number;
  term: number;
  revoking: boolean;
}

/** `shardline describe job -o json`: an enabled shard no agent owns, and why. */
export interface UnassignedShardView {
  job: string;
  shard: number;
  reason: string;
}

/**
 * A row of the assignments table: an owned shard, or (agent "") an unowned one with why; the
 * table shows a REASON column only when some row has one.
 */
export interface AssignmentRow {
  job: string;
  shard: number;
  agent: string;
  generation: bigint | null;
  term: bigint | null;
  revoking: boolean;
  reason: string;
}

/** Owned and unowned shards in one table, by job then shard. */
export function assignmentRows(assignments: readonly ShardAssignment[], unassigned: readonly UnassignedShard[]): AssignmentRow[] {
  const rows: AssignmentRow[] = [
    ...assignments.map((a) => ({ job: a.job, shard: a.shard, agent: a.agent, generation: a.generation, term: a.term, revoking: a.revoking, reason: "" })),
    ...unassigned.map((u) => ({ job: u.job, shard: u.shard, agent: "", generation: null, term: null, revoking: false, reason: u.reason })),
  ];
  return rows.sort((a, b) => (a.job < b.job ? -1 : a.job > b.job ? 1 : a.shard - b.shard));
}

/** The assignments table's columns for these rows. */
export function assignmentColumns(rows: readonly AssignmentRow[]): readonly Column<AssignmentRow>[] {
  return rows.some((row) => row.reason !== "") ? [...ASSIGNMENT_COLUMNS, { header: "REASON", value: (row) => row.reason || NONE }] : ASSIGNMENT_COLUMNS;
}

export function jobView(job: Job): JobView {
  const spec = manifestShaped(parseSpec(job.specJson));
  return {
    name: job.name,
    schedule: stringField(spec, "schedule"),
    timeZone: stringField(spec, "timeZone"),
    shards: typeof spec?.shards === "number" ? spec.shards : null,
    handler: handlerOf(spec),
    paused: job.paused,
    nextFire: isoTime(job.nextFireUnixMs),
    lastFire: isoTime(job.lastFireUnixMs),
    revision: Number(job.revision),
    disabledShards: [...job.disabledShards],
    upcomingFires: job.upcomingFiresUnixMs.map((t) => isoTime(t)!),
    spec,
    waitingReason: emptyToNull(job.waitingReason),
    rollout: job.rollout === undefined ? null : rolloutView(job.name, job.rollout),
  };
}

/**
 * A job as `get -o yaml|json` prints it, the way kubectl prints an object: the manifest as it was
 * applied (apiVersion, kind, metadata, spec: `get -o yaml | apply -f -` applies it back
 * unchanged) and, apart, its `status`, which apply leaves aside.
 */
export interface JobObject {
  apiVersion: string;
  kind: string;
  metadata: Record<string, unknown>;
  spec: Record<string, unknown>;
  status: JobStatusView;
}

/** A job's status in its JobObject: what the controller says of it, none of it applied. */
export interface JobStatusView {
  revision: number;
  paused: boolean;
  nextFire: string | null;
  lastFire: string | null;
  /** The next scheduled fires, up to five, as ISO-8601 times. */
  upcomingFires: string[];
  disabledShards: number[];
  waitingReason: string | null;
  rollout: RolloutView | null;
}

/** A list of jobs as `get jobs -o yaml|json` prints it (kubectl's List): `apply -f` takes it back. */
export interface JobList {
  apiVersion: "v1";
  kind: "List";
  items: JobObject[];
}

export function jobObject(job: Job): JobObject {
  const view = jobView(job);
  const applied = appliedManifest(job);
  return {
    apiVersion: typeof applied.apiVersion === "string" ? applied.apiVersion : MANIFEST_API_VERSION,
    kind: typeof applied.kind === "string" ? applied.kind : MANIFEST_KIND,
    metadata: isRecord(applied.metadata) ? applied.metadata : { name: job.name },
    spec: isRecord(applied.spec) ? applied.spec : (view.spec ?? {}),
    status: {
      revision: view.revision,
      paused: view.paused,
      nextFire: view.nextFire,
      lastFire: view.lastFire,
      upcomingFires: view.upcomingFires,
      disabledShards: view.disabledShards,
      waitingReason: view.waitingReason,
      rollout: view.rollout,
    },
  };
}

export function jobList(jobs: readonly Job[]): JobList {
  return { apiVersion: "v1", kind: "List", items: jobs.map(jobObject) };
}

/** The manifest a job was applied with, as data; {} when the controller sent none that reads. */
function appliedManifest(job: Job): Record<string, unknown> {
  try {
    const document: unknown = parseYaml(job.manifest);
    return isRecord(document) ? document : {};
  } catch {
    return {};
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function rolloutView(job: string, status: RolloutStatus): RolloutView {
  const tally = (t: RevisionTally | undefined): TallyView => ({ runs: t?.runs ?? 0, failures: t?.failures ?? 0, p95Ms: t?.p95DurationMs === undefined ? null : Number(t.p95DurationMs) });
  return {
    job,
    phase: status.phase,
    currentRevision: Number(status.currentRevision),
    stableRevision: Number(status.stableRevision),
    targetRevision: Number(status.targetRevision),
    steps: [...status.steps],
    step: status.step,
    stepStartedAt: isoTime(status.stepStartedAtUnixMs),
    shardsByRevision: status.shardsByRevision.map((entry) => ({ revision: Number(entry.revision), shards: [...entry.shards] })),
    windowStartedAt: isoTime(status.windowStartedAtUnixMs),
    target: tally(status.target),
    stable: tally(status.stable),
    reason: emptyToNull(status.reason),
    endedAt: isoTime(status.endedAtUnixMs),
    waiting: emptyToNull(status.waiting),
  };
}

/** A revision as JSON; `rollout` says which revisions are current and stable. */
export function revisionView(revision: Revision, rollout: RolloutView | null): RevisionView {
  const number = Number(revision.revision);
  return {
    revision: number,
    appliedAt: isoTime(revision.appliedAtUnixMs),
    appliedBy: emptyToNull(revision.appliedBy),
    hash: revision.specHash,
    undoOf: revision.undoOf === 0n ? null : Number(revision.undoOf),
    current: rollout !== null && number === rollout.currentRevision,
    stable: rollout !== null && number === rollout.stableRevision,
    manifest: revision.manifest,
  };
}

/** Characters of a spec hash `rollout history` shows. */
const SHORT_HASH = 12;

/**
 * The revisions table's NOTE: what the revision is to the job now (current, stable, the one
 * rolling out or aborted) and where it came from (an undo).
 */
export function revisionNote(view: RevisionView, rollout: RolloutView | null): string {
  const notes: string[] = [];
  if (view.current) notes.push("current");
  if (view.stable) notes.push("stable");
  if (rollout !== null && view.revision === rollout.targetRevision && !view.stable) {
    if (rollout.phase === "progressing" || rollout.phase === "paused") notes.push(`rolling out, step ${rollout.step}/${rollout.steps.length}`);
    else if (rollout.phase === "aborted") notes.push("aborted");
  }
  if (view.undoOf !== null) notes.push(`undo of ${view.undoOf}`);
  return notes.join(", ");
}

export const REVISION_COLUMNS: readonly Column<{ view: RevisionView; note: string }>[] = [
  { header: "REVISION", value: (row) => String(row.view.revision) },
  { header: "APPLIED", value: (row) => row.view.appliedAt?.replace(/\.\d{3}Z$/, "Z") ?? NONE },
  { header: "BY", value: (row) => row.view.appliedBy ?? NONE },
  { header: "HASH", value: (row) => row.view.hash.slice(0, SHORT_HASH) || NONE },
  { header: "SPEC HASH", value: (row) => row.view.hash || NONE, wide: true },
  { header: "UNDO OF", value: (row) => (row.view.undoOf === null ? NONE : String(row.view.undoOf)), wide: true },
  { header: "NOTE", value: (row) => row.note || "" },
];

export function agentView(agent: Agent): AgentView {
  return {
    id: agent.id,
    labels: { ...agent.labels },
    state: agentStateName(agent.state),
    shards: agent.shards.map((ref) => ({ job: ref.job, shard: ref.shard })),
    capacity: agent.capacity,
    handlers: [...agent.handlers],
    version: emptyToNull(agent.version),
    cordoned: agent.cordoned,
    leaseExpiresAt: isoTime(agent.leaseExpiresUnixMs),
    connectedAt: isoTime(agent.connectedAtUnixMs),
    instanceId: emptyToNull(agent.instanceId),
    refusedHellos: agent.refusedHellos,
    lastRefusal: emptyToNull(agent.lastRefusal),
  };
}

export function assignmentView(assignment: ShardAssignment): AssignmentView {
  return {
    job: assignment.job,
    shard: assignment.shard,
    agent: assignment.agent,
    generation: Number(assignment.generation),
    term: Number(assignment.term),
    revoking: assignment.revoking,
  };
}


export const JOB_COLUMNS: readonly Column<JobView>[] = [
  { header: "NAME", value: (job) => job.name },
  { header: "SCHEDULE", value: (job) => job.schedule ?? NONE },
  { header: "TIMEZONE", value: (job) => job.timeZone ?? NONE, wide: true },
  { header: "SHARDS", value: (job) => (job.shards === null ? NONE : String(job.shards)) },
  { header: "HANDLER", value: (job) => job.handler ?? NONE },
  { header: "PAUSED", value: (job) => String(job.paused) },
  { header: "NEXT FIRE", value: (job) => (job.nextFire === null ? NONE : tableTime(Date.parse(job.nextFire), job.timeZone)) },
  { header: "LAST FIRE", value: (job) => (job.lastFire === null ? NONE : tableTime(Date.parse(job.lastFire), job.timeZone)) },
  { header: "STRATEGY", value: (job) => stringField(job.spec, "strategy") ?? NONE, wide: true },
  { header: "FAILOVER", value: (job) => stringField(job.spec, "failover") ?? NONE, wide: true },
  { header: "REVISION", value: (job) => String(job.revision), wide: true },
  { header: "WAITING", value: (job) => job.waitingReason ?? NONE, wide: true },
];

export const AGENT_COLUMNS: readonly Column<Agent>[] = [
  { header: "ID", value: (agent) => agent.id },
  { header: "STATE", value: (agent) => agentStateName(agent.state) + (agent.cordoned ? ",cordoned" : "") },
  { header: "SHARDS", value: (agent) => String(agent.shards.length) },
  { header: "CAPACITY", value: (agent) => String(agent.capacity) },
  { header: "HANDLERS", value: (agent) => listOrNone(agent.handlers) },
  { header: "LABELS", value: (agent) => listOrNone(Object.entries(agent.labels).map(([key, value]) => `${key}=${value}`)), wide: true },
  { header: "VERSION", value: (agent) => agent.version || NONE, wide: true },
  { header: "LEASE EXPIRES", value: (agent) => tableTime(agent.leaseExpiresUnixMs), wide: true },
  { header: "CONNECTED", value: (agent) => tableTime(agent.connectedAtUnixMs), wide: true },
  {
    header: "REFUSED",
    value: (agent) => (agent.refusedHellos === 0 ? NONE : `${agent.refusedHellos} (last: ${agent.lastRefusal})`),
    wide: true,
  },
];

export const ASSIGNMENT_COLUMNS: readonly Column<AssignmentRow>[] = [
  { header: "JOB", value: (assignment) => assignment.job },
  { header: "SHARD", value: (assignment) => String(assignment.shard) },
  { header: "AGENT", value: (assignment) => assignment.agent || NONE },
  { header: "GENERATION", value: (assignment) => (assignment.generation === null ? NONE : String(assignment.generation)) },
  { header: "TERM", value: (assignment) => (assignment.term === null ? NONE : String(assignment.term)), wide: true },
  { header: "REVOKING", value: (assignment) => String(assignment.revoking), wide: true },
];

/** Longest error shown in a wide table; the whole text is in -o json. */
const ERROR_CELL_CHARS = 60;

/**
 * The executions table's columns, with each execution's times in its job's time zone (`zoneOf`:
 * the job's spec.timeZone, undefined for UTC or a job no longer there).
 */
export function executionColumns(zoneOf: (job: string) => string | undefined = () => undefined): readonly Column<Execution>[] {
  return EXECUTION_COLUMNS.map((column) => {
    const time = TIME_OF[column.header];
    return time === undefined ? column : { ...column, value: (execution: Execution) => tableTime(time(execution), zoneOf(execution.job)) };
  });
}

/** The executions table's time columns. */
const TIME_OF: Readonly<Record<string, (execution: Execution) => bigint>> = {
  "FIRE TIME": (execution) => execution.fireTimeUnixMs,
  STARTED: (execution) => execution.startedAtUnixMs,
  FINISHED: (execution) => execution.finishedAtUnixMs,
};

/** Each job's spec.timeZone by name, for executionColumns. */
export function zonesOf(jobs: readonly Job[]): (job: string) => string | undefined {
  const zones = new Map(jobs.map((job) => [job.name, jobView(job).timeZone ?? undefined]));
  return (job) => zones.get(job);
}

/** The executions table's columns in UTC; executionColumns gives them in each job's zone. */
export const EXECUTION_COLUMNS: readonly Column<Execution>[] = [
  { header: "ID", value: (execution) => execution.id },
  { header: "JOB", value: (execution) => execution.job },
  { header: "SHARD", value: (execution) => (execution.fireComplete ? "complete" : String(execution.shard)) },
  { header: "ATTEMPT", value: (execution) => String(execution.attempt) },
  { header: "REVISION", value: (execution) => (execution.revision === 0n ? NONE : String(execution.revision)) },
  { header: "AGENT", value: (execution) => execution.agent || NONE },
  {
    header: "STATE",
    value: (execution) => executionStateName(execution.state) + (execution.queuePosition > 0 ? ` #${execution.queuePosition}` : ""),
  },
  { header: "FIRE TIME", value: (execution) => tableTime(execution.fireTimeUnixMs) },
  { header: "DURATION", value: durationCell },
  { header: "CAUSE", value: (execution) => execution.cause || NONE, wide: true },
  { header: "STARTED", value: (execution) => tableTime(execution.startedAtUnixMs), wide: true },
  { header: "FINISHED", value: (execution) => tableTime(execution.finishedAtUnixMs), wide: true },
  { header: "ERROR", value: (execution) => truncate(execution.error, ERROR_CELL_CHARS) || NONE, wide: true },
  { header: "WAITING", value: (execution) => execution.waitingReason || NONE, wide: true },
  { header: "TRACE", value: (execution) => execution.traceId || NONE, wide: true },
];

/** Finished minus started; "-" until both are known, since the table does not read the clock. */
function durationCell(execution: Execution): string {
  if (execution.startedAtUnixMs === 0n || execution.finishedAtUnixMs === 0n) return "-";
  return formatDuration(Number(execution.finishedAtUnixMs - execution.startedAtUnixMs));
}

function parseSpec(specJson: string): Record<string, unknown> | null {
  if (specJson === "") return null;
  try {
    const parsed: unknown = JSON.parse(specJson);
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : null;
  } catch {
    // A controller bug must not hide the rest of the job; the manifest is still in `spec` = null.
    return null;
  }
}

/**
 * The spec in the manifest's shape, as `-o json` has always shown it: a controller that sends what
 * the job runs as the controller's JobSpec holds it, `runs: {kind, <kind>: ...}`, has it shown as
 * spec.handler ("" unless it runs a handler) and spec.<kind>, in its place.
 */
function manifestShaped(spec: Record<string, unknown> | null): Record<string, unknown> | null {
  const runs = spec?.runs;
  if (spec === null || typeof runs !== "object" || runs === null) return spec;
  const { kind, ...fields } = runs as Record<string, unknown>;
  if (typeof kind !== "string") return spec;
  const shown = kind === "handler" ? [["handler", fields.handler]] : [["handler", ""], [kind, fields[kind]]];
  return Object.fromEntries(Object.entries(spec).flatMap(([key, value]) => (key === "runs" ? shown : [[key, value]])));
}

function stringField(spec: Record<string, unknown> | null, field: string): string | null {
  const value = spec?.[field];
  return typeof value === "string" && value !== "" ? value : null;
}

/** The handler name, or the executor kind (script, http, kubernetes) for jobs that declare one. */
function handlerOf(spec: Record<string, unknown> | null): string | null {
  const handler = stringField(spec, "handler");
  if (handler !== null) return handler;
  for (const kind of ["script", "http", "kubernetes"]) {
    if (spec?.[kind] !== undefined && spec[kind] !== null) return kind;
  }
  return null;
}

function emptyToNull(value: string): string | null {
  return value === "" ? null : value;
}

function listOrNone(values: readonly string[]): string {
  return values.length === 0 ? NONE : values.join(",");
}

function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}
