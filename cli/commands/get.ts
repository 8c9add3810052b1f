import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import type { Execution, ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { parseOutputFormat, renderDocument, renderTable, type CliIo, type Column, type OutputFormat } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint, type AdminClient } from "./admin.js";
import { parseInstant, parseInteger } from "./options.js";
import {
  AGENT_COLUMNS,
  assignmentColumns,
  assignmentRows,
  JOB_COLUMNS,
  agentView,
  assignmentView,
  executionView,
  jobList,
  jobObject,
  jobView,
  executionColumns,
  parseExecutionState,
  zonesOf,
} from "./resources.js";
import { followWatch, SHARD_WATCH_COLUMNS, shardWatchView, WATCH_TOPIC_OF, WatchPrinter } from "./watch.js";

/** What `shardline get` lists. */
export type Resource = "jobs" | "agents" | "assignments" | "executions";

const RESOURCES: readonly Resource[] = ["jobs", "agents", "assignments", "executions"];

/** The flags of `shardline get`, parsed. */
export interface GetOptions {
  output?: OutputFormat;
  controller?: string;
  job?: string;
  agent?: string;
  state?: ExecutionState;
  shard?: number;
  since?: number;
  until?: number;
  limit?: number;
  watch?: boolean;
}

/** Executions listed when --limit is not given, as the API does for 0. */
export const DEFAULT_EXECUTION_LIMIT = 100;
/** The most executions the API returns in one call. */
export const MAX_EXECUTION_LIMIT = 10_000;

/** The RESOURCE argument: the plural, or its singular as kubectl accepts. */
export function parseResource(value: string): Resource {
  const plural = value.endsWith("s") ? value : `${value}s`;
  if ((RESOURCES as readonly string[]).includes(plural)) return plural as Resource;
  throw ShardlineError.invalid("RESOURCE", value, RESOURCES.join(", "));
}

export function registerGet(program: Command, io: CliIo): void {
  const command = program
    .command("get")
    .summary("list jobs, agents, assignments or executions")
    .description(
      [
        "List jobs, agents, assignments or executions, as an aligned table by default.",
        "With NAME, shows one job (by name), one agent (by id) or one execution (by id); -o json and -o yaml then print a single object instead of an array, as kubectl does. For assignments, NAME is a job name and the output stays a list.",
        "Times in JSON and YAML are ISO-8601 strings, or null when there is none.",
        "With -w (--watch), keeps printing what changes until interrupted (Ctrl-C, exit 0): first the list, then one row per change (DELETED before a row that is gone), " +
          'or with -o json one line {"type":"ADDED|MODIFIED|DELETED","object":...} per change. "get assignments -w" shows every shard with its owner, or why it has none, and its latest execution. ' +
          '"get executions -w" starts from the newest --limit executions of the job (or of all), then keeps to those the other filters match.',
      ].join("\n\n"),
    )
    .argument("<RESOURCE>", `one of ${RESOURCES.join(", ")}`)
    .argument("[NAME]", "the job name, agent id or execution id to show");
  addControllerOption(command)
    .option("-o, --output <FORMAT>", "json, yaml, wide or name (default: a table); a job's json and yaml are its manifest as applied, with its status apart, so they apply back", (value: string) =>
      parseOutputFormat(value),
    )
    .option("--job <JOB>", "executions and assignments: only this job's")
    .option("--agent <AGENT>", "executions and assignments: only those on this agent")
    .option("--state <STATE>", "executions: only those in this state (pending, running, unknown, succeeded, failed, timed-out, cancelled, lost, misfired)", parseExecutionState)
    .option("--shard <N>", "executions: only this shard's", (value: string) => parseInteger(value, "--shard", 0, 9_999))
    .option("--since <TIME>", "executions: fired at or after TIME (ISO-8601, or ago: 90s, 15m, 2h, 7d)", (value: string) => parseInstant(value, "--since"))
    .option("--until <TIME>", "executions: fired before TIME (ISO-8601, or ago: 90s, 15m, 2h, 7d)", (value: string) => parseInstant(value, "--until"))
    .option("--limit <N>", `executions: at most N, newest first (default: ${DEFAULT_EXECUTION_LIMIT}, at most ${MAX_EXECUTION_LIMIT})`, (value: string) =>
      parseInteger(value, "--limit", 1, MAX_EXECUTION_LIMIT),
    )
    .option("-w, --watch", "after listing, print each change as it happens, until interrupted")
    .action(async (resource: string, name: string | undefined, options: GetOptions) => {
      await runGet(parseResource(resource), name, options, io);
    });
}

/** `shardline get RESOURCE [NAME]`: fetches and prints in the requested format. */
export async function runGet(resource: Resource, name: string | undefined, options: GetOptions, io: CliIo): Promise<void> {
  checkFlags(resource, name, options);
  if (options.watch === true) {
    await watchGet(resource, name, options, io);
    return;
  }
  await withAdminClient(options, io, async (client) => {
    switch (resource) {
      case "jobs":
        return name === undefined ? getJobs(client, options, io) : getJob(client, name, options, io);
      case "agents":
        return getAgents(client, name, options, io);
      case "assignments":
        return getAssignments(client, name ?? options.job, options, io);
      case "executions":
        return name === undefined ? getExecutions(client, options, io) : getExecution(client, name, options, io);
    }
  });
}

async function getJobs(client: AdminClient, options: GetOptions, io: CliIo): Promise<void> {
  const { jobs } = await client.listJobs({});
  if (options.output === "json" || options.output === "yaml") {
    io.stdout(renderDocument(jobList(jobs), options.output));
    return;
  }
  const views = jobs.map(jobView);
  print(io, options.output, views, views, JOB_COLUMNS, "jobs", (view) => `job/${view.name}`);
}

async function getJob(client: AdminClient, name: string, options: GetOptions, io: CliIo): Promise<void> {
  const response = await client.getJob({ name }).catch((error: unknown) => {
    throw withNotFoundHint(error, 'run "shardline get jobs" to list the jobs');
  });
  if (!response.job) throw new ShardlineError("internal", `the controller answered GetJob for "${name}" without a job`);
  const view = jobView(response.job);
  printOne(io, options.output, jobObject(response.job), view, JOB_COLUMNS, `job/${view.name}`);
}

async function getAgents(client: AdminClient, id: string | undefined, options: GetOptions, io: CliIo): Promise<void> {
  const { agents } = await client.listAgents({});
  if (id === undefined) {
    print(io, options.output, agents.map(agentView), agents, AGENT_COLUMNS, "agents", (agent) => `agent/${agent.id}`);
    return;
  }
  // The API has no GetAgent: the list is small, so pick the one asked for here.
  const agent = agents.find((candidate) => candidate.id === id);
  if (!agent) throw new ShardlineError("not-found", `agent "${id}" not found; run "shardline get agents" to list the agents`);
  printOne(io, options.output, agentView(agent), agent, AGENT_COLUMNS, `agent/${agent.id}`);
}

async function getAssignments(client: AdminClient, job: string | undefined, options: GetOptions, io: CliIo): Promise<void> {
  const { assignments, unassigned } = await client.listAssignments({ job: job ?? "" });
  const shown = options.agent === undefined ? assignments : assignments.filter((assignment) => assignment.agent === options.agent);
  // The table shows the shards nobody owns too, each with why; -o json keeps to owned shards (see describe job).
  const rows = assignmentRows(shown, options.agent === undefined ? unassigned : []);
  print(io, options.output, shown.map(assignmentView), rows, assignmentColumns(rows), "assignments", (row) => `assignment/${row.job}/${row.shard}`);
}

async function getExecutions(client: AdminClient, options: GetOptions, io: CliIo): Promise<void> {
  const { executions } = await client.listExecutions({
    job: options.job ?? "",
    agent: options.agent ?? "",
    state: options.state,
    limit: options.limit ?? DEFAULT_EXECUTION_LIMIT,
    ...(options.shard === undefined ? {} : { shard: options.shard }),
    sinceUnixMs: BigInt(options.since ?? 0),
    untilUnixMs: BigInt(options.until ?? 0),
  });
  print(io, options.output, executions.map(executionView), executions, await executionColumnsFor(client, options.output, options.job), "executions", (execution) => `execution/${execution.id}`);
}

async function getExecution(client: AdminClient, id: string, options: GetOptions, io: CliIo): Promise<void> {
  const response = await client.getExecution({ id }).catch((error: unknown) => {
    throw withNotFoundHint(error, 'run "shardline get executions" to list recent executions');
  });
  if (!response.execution) throw new ShardlineError("internal", `the controller answered GetExecution for "${id}" without an execution`);
  printOne(io, options.output, executionView(response.execution), response.execution, await executionColumnsFor(client, options.output, response.execution.job), `execution/${id}`);
}

/**
 * The executions table's columns with times in each job's zone: the jobs are read only for a
 * table, and only `job` when the executions are all that job's.
 */
async function executionColumnsFor(client: AdminClient, format: OutputFormat | undefined, job?: string): Promise<ReturnType<typeof executionColumns>> {
  if (format === "json" || format === "yaml" || format === "name") return executionColumns();
  if (job === undefined) return executionColumns(zonesOf((await client.listJobs({})).jobs));
  // A job deleted since keeps its executions, shown in UTC.
  const found = await client.getJob({ name: job }).then((answer) => answer.job, () => undefined);
  return executionColumns(zonesOf(found === undefined ? [] : [found]));
}

/**
 * `get RESOURCE [NAME] -w`: the list and then its changes, from AdminService.Watch. The filters
 * of executions apply to every change; a NAME keeps to that one job, agent or execution.
 */
async function watchGet(resource: Resource, name: string | undefined, options: GetOptions, io: CliIo): Promise<void> {
  const job = resource === "jobs" ? (name ?? "") : resource === "assignments" ? (name ?? options.job ?? "") : (options.job ?? "");
  const named = (key: string): boolean => name === undefined || resource === "assignments" || key === name;
  const request = { topics: [WATCH_TOPIC_OF[resource]], job, executionSnapshotLimit: options.limit ?? DEFAULT_EXECUTION_LIMIT };
  switch (resource) {
    case "jobs": {
      const printer = new WatchPrinter(io, options.output, JOB_COLUMNS, "jobs");
      return followWatch(options, io, request, (message) => {
        if (message.reset) printer.reset();
        for (const job of message.jobs) if (named(job.name)) printer.upsert({ key: job.name, view: jobObject(job), row: jobView(job) });
        for (const gone of message.deletedJobs) printer.remove(gone);
        if (message.synced) printer.synced();
      });
    }
    case "agents": {
      const printer = new WatchPrinter(io, options.output, AGENT_COLUMNS, "agents");
      return followWatch(options, io, request, (message) => {
        if (message.reset) printer.reset();
        for (const agent of message.agents) if (named(agent.id)) printer.upsert({ key: agent.id, view: agentView(agent), row: agent });
        for (const gone of message.removedAgents) printer.remove(gone);
        if (message.synced) printer.synced();
      });
    }
    case "assignments": {
      const printer = new WatchPrinter(io, options.output, SHARD_WATCH_COLUMNS, "shards");
      return followWatch(options, io, request, (message) => {
        if (message.reset) printer.reset();
        for (const shard of message.shards) {
          const view = shardWatchView(shard);
          if (options.agent === undefined || view.agent === options.agent) printer.upsert({ key: `${shard.job}/${shard.shard}`, view, row: view });
          else printer.remove(`${shard.job}/${shard.shard}`);
        }
        for (const gone of message.removedShards) printer.remove(`${gone.job}/${gone.shard}`);
        if (message.synced) printer.synced();
      });
    }
    case "executions": {
      const columns = await withAdminClient(options, io, (client) => executionColumnsFor(client, options.output, options.job));
      const printer = new WatchPrinter(io, options.output, columns, "executions");
      const wanted = (execution: Execution): boolean =>
        named(execution.id) &&
        (options.agent === undefined || execution.agent === options.agent) &&
        (options.state === undefined || execution.state === options.state) &&
        (options.shard === undefined || execution.shard === options.shard) &&
        (options.since === undefined || Number(execution.fireTimeUnixMs) >= options.since) &&
        (options.until === undefined || Number(execution.fireTimeUnixMs) < options.until);
      return followWatch(options, io, request, (message) => {
        if (message.reset) printer.reset();
        for (const execution of message.executions) {
          if (wanted(execution)) printer.upsert({ key: execution.id, view: executionView(execution), row: execution });
          // One that left the filter (a state filter: it moved on) is shown leaving.
          else printer.remove(execution.id);
        }
        if (message.synced) printer.synced();
      });
    }
  }
}

/**
 * Prints a list: an array in JSON/YAML, KIND/NAME lines with -o name (`nameOf` each row), rows in
 * a table, or a note on stderr when it is empty.
 */
function print<V, R>(io: CliIo, format: OutputFormat | undefined, views: V[], rows: readonly R[], columns: readonly Column<R>[], noun: string, nameOf: (row: R) => string): void {
  if (format === "json" || format === "yaml") {
    io.stdout(renderDocument(views, format));
    return;
  }
  if (format === "name") {
    io.stdout(rows.map((row) => `${nameOf(row)}\n`).join(""));
    return;
  }
  if (rows.length === 0) {
    io.stderr(`No ${noun} found.\n`);
    return;
  }
  io.stdout(renderTable(rows, columns, format === "wide"));
}

/** Prints one resource: a single object in JSON/YAML, KIND/NAME with -o name, a one-row table otherwise. */
function printOne<V, R>(io: CliIo, format: OutputFormat | undefined, view: V, row: R, columns: readonly Column<R>[], name: string): void {
  if (format === "json" || format === "yaml") io.stdout(renderDocument(view, format));
  else if (format === "name") io.stdout(`${name}\n`);
  else io.stdout(renderTable([row], columns, format === "wide"));
}

/** Rejects filters that do not apply to the resource, rather than silently ignoring them. */
function checkFlags(resource: Resource, name: string | undefined, options: GetOptions): void {
  const given = (["job", "agent", "state", "limit", "shard", "since", "until"] as const).filter((flag) => options[flag] !== undefined);
  const accepted: Record<Resource, readonly string[]> = {
    jobs: [],
    agents: [],
    assignments: ["job", "agent"],
    executions: name === undefined ? ["job", "agent", "state", "limit", "shard", "since", "until"] : [],
  };
  if (options.watch === true && name !== undefined && resource === "executions") accepted.executions = ["job"];
  for (const flag of given) {
    if (accepted[resource].includes(flag)) continue;
    const target = name === undefined ? `"get ${resource}"` : `"get ${resource} NAME"`;
    const allowed = accepted[resource].length === 0 ? "it takes no filters" : `it accepts ${accepted[resource].map((f) => `--${f}`).join(", ")}`;
    throw new ShardlineError("invalid-argument", `--${flag} does not apply to ${target}; ${allowed}`, { field: `--${flag}` });
  }
  if (resource === "assignments" && name !== undefined && options.job !== undefined && options.job !== name) {
    throw new ShardlineError("invalid-argument", `"get assignments ${name}" and --job ${options.job} name different jobs; give the job once`, { field: "--job" });
  }
}
