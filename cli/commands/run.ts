import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import { ExecutionState, type Execution } from "../../shared/gen/shardline/v1/types_pb.js";
import { TERMINAL_EXECUTION_STATES } from "../../shared/execution-view.js";
import { RunFailedError } from "../exit-codes.js";
import { renderDocument, renderTable, type CliIo } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint, type AdminClient } from "./admin.js";
import { parseSeconds, parseShardList } from "./options.js";
import { executionColumns, executionStateName, executionView, zonesOf } from "./resources.js";
import { triggerOutcome } from "./job-actions.js";

/** How often `run --wait` looks at the run's executions. */
const POLL_MS = 250;

interface RunOptions {
  controller?: string;
  shards?: number[];
  parameter?: string;
  wait?: boolean;
  timeout?: number;
  output?: "json" | "wide";
}

/** Registers `shardline run JOB`: a one-off run of a job, optionally waited for. */
export function registerRun(program: Command, io: CliIo): void {
  const command = program
    .command("run")
    .summary("run a job once now, and optionally wait for its outcome")
    .description(
      "Submit a one-off run of a job, with or without a schedule: one execution per shard (or per --shards). " +
        "When the agents' slots are full the executions wait in line, highest spec.priority first, then first in, first out " +
        '("shardline get executions" shows their place). With --wait, wait until every shard\'s last attempt has finished ' +
        "(failover re-runs and retries included) and exit 0 only if all succeeded, 6 otherwise.",
    )
    .argument("<JOB>", "the job's name");
  addControllerOption(command)
    .option("--shards <LIST>", "only these shards, e.g. 0,2 or 0-3 (default: every shard)", parseShardList)
    .option("--parameter <TEXT>", "replaces the job's parameter for this run")
    .option("--wait", "wait for the outcome; exit 6 if any execution did not succeed")
    .option("--timeout <SECONDS>", "with --wait: give up waiting after this long (default: no limit)", (value: string) =>
      parseSeconds(value, "--timeout", 0.1, 31_536_000),
    )
    .option("-o, --output <FORMAT>", "with --wait: json (the final executions as JSON) or wide (a wider table)", (value: string) => {
      if (value !== "json" && value !== "wide") throw ShardlineError.invalid("-o", value, "json, wide");
      return value;
    })
    .action(async (job: string, options: RunOptions) => {
      await withAdminClient(options, io, async (client) => {
        const fired = await client.triggerJob({ name: job, shards: options.shards ?? [], parameter: options.parameter ?? "" }).catch((error: unknown) => {
          throw withNotFoundHint(error, 'run "shardline get jobs" to list the jobs');
        });
        if (!options.wait) {
          io.stdout(`${triggerOutcome(job, fired)}\n${fired.executionIds.join("\n")}\n`);
          return;
        }
        const shards = new Set(fired.executionIds.map((id) => Number(id.split("/")[2])));
        const final = await waitForRun(client, job, fired.fireTimeUnixMs, shards, options.timeout);
        if (options.output === "json") io.stdout(renderDocument(final.map(executionView), "json"));
        else io.stdout(renderTable(final, executionColumns(zonesOf([(await client.getJob({ name: job })).job].filter((found) => found !== undefined))), options.output === "wide"));
        const failed = final.filter((e) => e.state !== ExecutionState.SUCCEEDED);
        if (failed.length > 0) {
          throw new RunFailedError(
            `job/${job} run finished: ${failed.length} of ${final.length} executions did not succeed (${failed
              .map((e) => `shard ${e.shard} ${executionStateName(e.state)}`)
              .join(", ")})`,
          );
        }
      });
    });
}

/** Waits until the last attempt of every shard of the fire is terminal. */
async function waitForRun(client: AdminClient, job: string, fireTime: bigint, shards: Set<number>, timeoutSeconds?: number): Promise<Execution[]> {
  const deadline = timeoutSeconds === undefined ? Infinity : Date.now() + timeoutSeconds * 1000;
  for (;;) {
    const { executions } = await client.listExecutions({ job, sinceUnixMs: fireTime, untilUnixMs: fireTime + 1n, limit: 10_000 });
    const latest = new Map<number, Execution>();
    for (const execution of executions) {
      if (execution.fireComplete || !shards.has(execution.shard)) continue;
      const seen = latest.get(execution.shard);
      if (seen === undefined || execution.attempt > seen.attempt) latest.set(execution.shard, execution);
    }
    // The controller stores a failed or lost attempt together with its retry or failover re-run,
    // so a terminal last attempt is the shard's outcome.
    if (latest.size === shards.size && [...latest.values()].every((e) => TERMINAL_EXECUTION_STATES.has(e.state))) {
      return [...latest.values()].sort((a, b) => a.shard - b.shard);
    }
    if (Date.now() > deadline) {
      throw new RunFailedError(`job/${job} run did not finish within --timeout ${timeoutSeconds} s; it goes on without us`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
