import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import { formatDuration, parseOutputFormat, renderDocument, renderTable, tableTime, NONE, type CliIo, type OutputFormat } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint } from "./admin.js";
import { rolloutText } from "./rollout.js";
import { parseTraceUrlTemplate } from "./options.js";
import { agentStateName, executionColumns, agentView, assignmentColumns, assignmentRows, assignmentView, executionView, jobView, type JobView } from "./resources.js";

/** Recent executions shown by `describe job`. */
const RECENT = 10;

/** The flags of `shardline describe`, parsed. */
interface DescribeOptions {
  controller?: string;
  output?: OutputFormat;
  traceUrlTemplate?: string;
}

/** Where `describe execution` finds the trace link's template when --trace-url-template is not given. */
export const TRACE_URL_TEMPLATE_ENV = "SHARDLINE_TRACE_URL_TEMPLATE";

/** Registers `shardline describe job|agent|execution NAME`. */
export function registerDescribe(program: Command, io: CliIo): void {
  const command = program
    .command("describe")
    .summary("show a job, an agent or an execution in full")
    .description(
      [
        "describe job NAME: its spec, its next five fires, its revision and rollout (as rollout status shows it), which agent owns each shard, and its recent executions.",
        "describe agent ID: its state, labels, handlers, capacity, running count, lease, version and the shards it owns.",
        `describe execution ID: its timings, attempt, agent, revision, cause, error or result, why it waits, and its trace id, with a link to the trace when --trace-url-template (or ${TRACE_URL_TEMPLATE_ENV}) is set.`,
      ].join("\n\n"),
    )
    .argument("<RESOURCE>", "job, agent or execution")
    .argument("<NAME>", "the job's name, the agent's id or the execution's id");
  addControllerOption(command)
    .option("-o, --output <FORMAT>", "json or yaml (default: readable text)", (value: string) => parseOutputFormat(value, ["json", "yaml"]))
    .option("--trace-url-template <URL>", `execution: a link to a trace, {traceId} standing for its id, e.g. http://jaeger:16686/trace/{traceId} (default: $${TRACE_URL_TEMPLATE_ENV})`, parseTraceUrlTemplate)
    .action(async (resource: string, name: string, options: DescribeOptions) => {
      switch (resource) {
        case "job":
        case "jobs":
          return describeJob(name, options, io);
        case "agent":
        case "agents":
          return describeAgent(name, options, io);
        case "execution":
        case "executions":
          return describeExecution(name, options, io);
        default:
          throw ShardlineError.invalid("RESOURCE", resource, "job, agent or execution");
      }
    });
}

async function describeAgent(id: string, options: DescribeOptions, io: CliIo): Promise<void> {
  await withAdminClient(options, io, async (client) => {
    // The API has no GetAgent: the list is small.
    const agent = (await client.listAgents({})).agents.find((candidate) => candidate.id === id);
    if (agent === undefined) throw new ShardlineError("not-found", `agent "${id}" not found; run "shardline get agents" to list the agents`);
    const view = agentView(agent);
    if (options.output === "json" || options.output === "yaml") {
      io.stdout(renderDocument(view, options.output));
      return;
    }
    const labels = Object.entries(agent.labels).map(([key, value]) => `${key}=${value}`);
    const shards = [...agent.shards].sort((a, b) => (a.job < b.job ? -1 : a.job > b.job ? 1 : a.shard - b.shard)).map((s) => `${s.job}/${s.shard}`);
    const lines = [
      `ID:           ${agent.id}`,
      `State:        ${agentStateName(agent.state)}${agent.cordoned ? " (cordoned: gets no new shards; shardline uncordon to undo)" : ""}`,
      `Labels:       ${labels.length === 0 ? NONE : labels.join(", ")}`,
      `Handlers:     ${agent.handlers.length === 0 ? NONE : agent.handlers.join(", ")}`,
      `Capacity:     ${agent.capacity}    Max concurrent: ${agent.maxConcurrent === 0 ? "no limit" : agent.maxConcurrent}    Running: ${agent.running}`,
      `Connected:    ${tableTime(agent.connectedAtUnixMs)}`,
      `Lease until:  ${tableTime(agent.leaseExpiresUnixMs)}`,
      `Version:      ${agent.version || NONE}    Instance: ${agent.instanceId || NONE}`,
      ...(agent.refusedHellos === 0 ? [] : [`Refused:      ${agent.refusedHellos} other processes under this id; last: ${agent.lastRefusal}`]),
      `Shards (${shards.length}):`,
      ...(shards.length === 0 ? [`  ${NONE}`] : wrap(shards, 6).map((line) => `  ${line}`)),
    ];
    io.stdout(`${lines.join("\n")}\n`);
  });
}

async function describeExecution(id: string, options: DescribeOptions, io: CliIo): Promise<void> {
  const template = options.traceUrlTemplate ?? traceTemplateFromEnv(io.env);
  await withAdminClient(options, io, async (client) => {
    const response = await client.getExecution({ id }).catch((error: unknown) => {
      throw withNotFoundHint(error, 'run "shardline get executions" to list recent executions');
    });
    const execution = response.execution;
    if (execution === undefined) throw new ShardlineError("internal", `the controller answered GetExecution for "${id}" without an execution`);
    const view = executionView(execution);
    // Times in the job's zone; a job deleted since shows them in UTC.
    const zone = await client.getJob({ name: execution.job }).then(
      (answer) => (answer.job === undefined ? undefined : (jobView(answer.job).timeZone ?? undefined)),
      () => undefined,
    );
    const traceUrl = template === undefined || view.traceId === null ? null : template.replaceAll("{traceId}", view.traceId);
    if (options.output === "json" || options.output === "yaml") {
      io.stdout(renderDocument({ ...view, traceUrl }, options.output));
      return;
    }
    const duration = execution.startedAtUnixMs === 0n || execution.finishedAtUnixMs === 0n ? "" : ` (${formatDuration(Number(execution.finishedAtUnixMs - execution.startedAtUnixMs))})`;
    const lines = [
      `ID:           ${view.id}`,
      `Job:          ${view.job}    Shard: ${view.shard ?? "the whole fire (onFireComplete)"}    Attempt: ${view.attempt}    Revision: ${view.revision ?? NONE}`,
      `State:        ${view.state}${execution.queuePosition > 0 ? ` (#${execution.queuePosition} in line)` : ""}`,
      `Cause:        ${view.cause ?? NONE}`,
      `Agent:        ${view.agent ?? NONE}`,
      `Fire time:    ${tableTime(execution.fireTimeUnixMs, zone)}`,
      `Started:      ${tableTime(execution.startedAtUnixMs, zone)}`,
      `Finished:     ${tableTime(execution.finishedAtUnixMs, zone)}${duration}`,
      ...(view.waitingReason === null ? [] : [`Waiting:      ${view.waitingReason}`]),
      ...(view.error === null ? [] : [`Error:        ${view.error}`]),
      ...(view.result === null ? [] : [`Result:       ${view.result}`]),
      `Trace:        ${view.traceId ?? "none (the controller traces nothing)"}`,
      ...(traceUrl === null ? [] : [`Trace link:   ${traceUrl}`]),
    ];
    io.stdout(`${lines.join("\n")}\n`);
  });
}

/** The trace link's template from the environment, checked as the flag is. */
function traceTemplateFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  const value = env[TRACE_URL_TEMPLATE_ENV];
  if (value === undefined || value === "") return undefined;
  try {
    return parseTraceUrlTemplate(value);
  } catch (error) {
    if (error instanceof ShardlineError) throw new ShardlineError("invalid-argument", `${TRACE_URL_TEMPLATE_ENV}: ${error.message}`, error.details);
    throw error;
  }
}

/** Items joined `perLine` to a line. */
function wrap(items: readonly string[], perLine: number): string[] {
  const lines: string[] = [];
  for (let i = 0; i < items.length; i += perLine) lines.push(items.slice(i, i + perLine).join("  "));
  return lines;
}

async function describeJob(name: string, options: DescribeOptions, io: CliIo): Promise<void> {
  await withAdminClient(options, io, async (client) => {
    const response = await client.getJob({ name }).catch((error: unknown) => {
      throw withNotFoundHint(error, 'run "shardline get jobs" to list the jobs');
    });
    if (!response.job) throw new ShardlineError("internal", `the controller answered GetJob for "${name}" without a job`);
    const job = jobView(response.job);
    const { assignments, unassigned } = await client.listAssignments({ job: name });
    const { executions } = await client.listExecutions({ job: name, limit: RECENT });
    if (options.output === "json" || options.output === "yaml") {
      const document = {
        job,
        assignments: assignments.map(assignmentView),
        unassigned: unassigned.map((u) => ({ job: u.job, shard: u.shard, reason: u.reason })),
        executions: executions.map(executionView),
      };
      io.stdout(renderDocument(document, options.output));
      return;
    }
    const lines = [...summary(job)];
    if (job.rollout !== null) lines.push("", "Rollout:", ...rolloutText(job.rollout).map((line) => `  ${line}`));
    lines.push("", "Assignments:");
    const rows = assignmentRows(assignments, unassigned);
    lines.push(rows.length === 0 ? `  ${NONE}` : indent(renderTable(rows, assignmentColumns(rows))));
    lines.push("", `Recent executions (newest ${RECENT}):`);
    lines.push(executions.length === 0 ? `  ${NONE}` : indent(renderTable(executions, executionColumns(() => job.timeZone ?? undefined))));
    io.stdout(`${lines.join("\n")}\n`);
  });
}

function summary(job: JobView): string[] {
  const spec = job.spec ?? {};
  const field = (key: string): string => {
    const value = spec[key];
    return value === undefined || value === "" ? NONE : typeof value === "object" ? JSON.stringify(value) : String(value);
  };
  const upcoming = job.upcomingFires.map((t) => tableTime(Date.parse(t), job.timeZone));
  return [
    `Name:         ${job.name}`,
    `Schedule:     ${job.schedule ?? "none (manual triggers only)"}${job.schedule === null ? "" : ` in ${job.timeZone ?? "UTC"}`}`,
    `Shards:       ${job.shards ?? NONE}${job.disabledShards.length > 0 ? ` (disabled: ${job.disabledShards.join(", ")})` : ""}`,
    `Runs:         ${job.handler ?? NONE}`,
    `Strategy:     ${field("strategy")}    Failover: ${field("failover")}    Misfire: ${field("misfire")}    Overlap: ${field("overlap")}`,
    `Timeout:      ${field("timeoutSeconds")} s    Retries: ${field("retries")}`,
    `Paused:       ${job.paused}${spec.suspend === true ? " (suspended by spec)" : ""}`,
    `Revision:     ${job.revision}`,
    `Last fire:    ${job.lastFire === null ? NONE : tableTime(Date.parse(job.lastFire), job.timeZone)}`,
    `Next fires:   ${upcoming.length === 0 ? NONE : upcoming.join(", ")}`,
    ...(job.waitingReason === null ? [] : [`Waiting:      ${job.waitingReason}`]),
  ];
}

function indent(text: string): string {
  return text
    .trimEnd()
    .split("\n")
    .map((line) => `  ${line}`)
    .join("\n");
}
