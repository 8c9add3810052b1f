import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import type { GetExecutionLogsResponse } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import type { CliIo } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint, type AdminClient } from "./admin.js";
import { parseInteger } from "./options.js";

/** How often `logs -f` asks for what came since: the agent ships a running execution's lines about as often. */
const FOLLOW_INTERVAL_MS = 500;
/** The most lines one GetExecutionLogs answers with (its limit 0). */
const MAX_LINES_PER_CALL = 10_000;

interface LogsFlags {
  controller?: string;
  follow?: boolean;
  shard?: number;
  last?: boolean;
}

/** Registers `shardline logs EXECUTION [-f]` and `shardline logs JOB --shard N --last [-f]`. */
export function registerLogs(program: Command, io: CliIo): void {
  const logs = program
    .command("logs")
    .summary("print an execution's log (-f follows it while it runs)")
    .description(
      "Print what an execution wrote, as its agent captured it: its handler's ctx.log lines, its script's stdout " +
        "and stderr, its Kubernetes Job's pod log tail. The agent keeps each execution's newest lines within its " +
        "--log-max-bytes and --log-max-lines; a first line says how many earlier ones were dropped. With -f, new " +
        "lines are printed as they come until the execution ends. With --shard N --last, the argument is a job and " +
        "the log is that of its shard's latest execution. The log is kept with the execution, under the history's retention.",
    )
    .argument("<EXECUTION|JOB>", 'an execution id, as shown by "shardline get executions"; a job with --shard and --last');
  addControllerOption(logs)
    .option("-f, --follow", "keep printing new lines until the execution ends")
    .option("--shard <N>", "with --last: the shard of the job named", (value: string) => parseInteger(value, "--shard", 0, 9999))
    .option("--last", "print the log of the latest execution of the job's --shard")
    .action(async (target: string, flags: LogsFlags) => {
      if ((flags.shard === undefined) !== (flags.last !== true)) {
        throw ShardlineError.invalid(flags.last ? "--last" : "--shard", flags.last ? "without --shard" : flags.shard, "--shard N and --last together, naming a job");
      }
      await withAdminClient(flags, io, async (client) => {
        const id = flags.shard === undefined ? target : await latestExecution(client, target, flags.shard);
        await printLog(client, id, flags.follow === true, io);
      });
    });
}

async function latestExecution(client: AdminClient, job: string, shard: number): Promise<string> {
  await client.getJob({ name: job }).catch((error: unknown) => {
    throw withNotFoundHint(error, 'run "shardline get jobs" to list the jobs');
  });
  const { executions } = await client.listExecutions({ job, shard, limit: 1 });
  const latest = executions[0];
  if (latest === undefined) {
    throw new ShardlineError("not-found", `shard ${shard} of job ${job} has no execution kept yet`, { field: "--shard", value: String(shard) });
  }
  return latest.id;
}

/** Prints the log from its start; with `follow`, again from where it stopped, until the execution is over. */
async function printLog(client: AdminClient, id: string, follow: boolean, io: CliIo): Promise<void> {
  let afterLine = 0n;
  let printedUpTo: bigint | undefined;
  for (;;) {
    const page: GetExecutionLogsResponse = await client.getExecutionLogs({ id, afterLine, limit: 0 }).catch((error: unknown) => {
      throw withNotFoundHint(error, 'run "shardline get executions" to list recent executions');
    });
    let out = "";
    for (const line of page.lines) {
      // What the log no longer holds before this line: dropped by a bound, or lost on the way.
      if (printedUpTo === undefined) {
        if (line.number > 0n) out += `[${line.number} earlier lines dropped]\n`;
      } else if (line.number > printedUpTo) {
        out += `[${line.number - printedUpTo} lines missing]\n`;
      }
      out += `${line.text}\n`;
      printedUpTo = line.number + 1n;
    }
    if (out !== "") io.stdout(out);
    afterLine = page.nextLine;
    // A full page may have more behind it at once.
    if (page.lines.length >= MAX_LINES_PER_CALL) continue;
    if (!follow || page.finished) return;
    await new Promise((resolve) => setTimeout(resolve, FOLLOW_INTERVAL_MS));
  }
}
