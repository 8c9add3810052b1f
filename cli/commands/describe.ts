import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import { parseOutputFormat, renderDocument, renderTable, tableTime, NONE, type CliIo, type OutputFormat } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint } from "./admin.js";
import { rolloutText } from "./rollout.js";
import { EXECUTION_COLUMNS, assignmentColumns, assignmentRows, assignmentView, executionView, jobView, type JobView } from "./resources.js";

/** Recent executions shown by `describe job`. */
const RECENT = 10;

/** Registers `shardline describe job NAME`. */
export function registerDescribe(program: Command, io: CliIo): void {
  const command = program
    .command("describe")
    .summary("show a job in full: schedule, next fires, rollout, assignment and recent executions")
    .description("Show one job in full: its spec, its next five fires, its revision and rollout (as rollout status shows it), which agent owns each shard, and its recent executions.")
    .argument("<RESOURCE>", "job")
    .argument("<NAME>", "the job's name");
  addControllerOption(command)
    .option("-o, --output <FORMAT>", "json or yaml (default: readable text)", (value: string) => parseOutputFormat(value, ["json", "yaml"]))
    .action(async (resource: string, name: string, options: { controller?: string; output?: OutputFormat }) => {
      if (resource !== "job" && resource !== "jobs") {
        throw ShardlineError.invalid("RESOURCE", resource, "job");
      }
      await describeJob(name, options, io);
    });
}

async function describeJob(name: string, options: { controller?: string; output?: OutputFormat }, io: CliIo): Promise<void> {
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
    lines.push(executions.length === 0 ? `  ${NONE}` : indent(renderTable(executions, EXECUTION_COLUMNS)));
    io.stdout(`${lines.join("\n")}\n`);
  });
}

function summary(job: JobView): string[] {
  const spec = job.spec ?? {};
  const field = (key: string): string => {
    const value = spec[key];
    return value === undefined || value === "" ? NONE : typeof value === "object" ? JSON.stringify(value) : String(value);
  };
  const upcoming = job.upcomingFires.map((t) => tableTime(Date.parse(t)));
  return [
    `Name:         ${job.name}`,
    `Schedule:     ${job.schedule ?? "none (manual triggers only)"}${job.schedule === null ? "" : ` in ${job.timeZone ?? "UTC"}`}`,
    `Shards:       ${job.shards ?? NONE}${job.disabledShards.length > 0 ? ` (disabled: ${job.disabledShards.join(", ")})` : ""}`,
    `Runs:         ${job.handler ?? NONE}`,
    `Strategy:     ${field("strategy")}    Failover: ${field("failover")}    Misfire: ${field("misfire")}    Overlap: ${field("overlap")}`,
    `Timeout:      ${field("timeoutSeconds")} s    Retries: ${field("retries")}`,
    `Paused:       ${job.paused}${spec.suspend === true ? " (suspended by spec)" : ""}`,
    `Revision:     ${job.revision}`,
    `Last fire:    ${job.lastFire === null ? NONE : tableTime(Date.parse(job.lastFire))}`,
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
