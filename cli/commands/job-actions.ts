import type { Command } from "commander";
import type { TriggerJobResponse } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { tableTime, type CliIo } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint, type AdminClient } from "./admin.js";
import { parseShardList } from "./options.js";

/** The flags of `shardline trigger`, parsed. */
export interface TriggerOptions {
  controller?: string;
  shards?: number[];
  parameter?: string;
}

const JOB_HINT = 'run "shardline get jobs" to list the jobs';

/** Registers trigger, pause, resume and delete: the commands that act on one job. */
export function registerJobActions(program: Command, io: CliIo): void {
  const trigger = program
    .command("trigger")
    .summary("fire a job now, outside its schedule")
    .description("Fire a job now, outside its schedule: one execution per shard (or per --shards).")
    .argument("<JOB>", "the job's name");
  addControllerOption(trigger)
    .option("--shards <LIST>", "only these shards, e.g. 0,2 or 0-3 (default: every shard)", parseShardList)
    .option("--parameter <TEXT>", "replaces the job's parameter for this fire")
    .action(async (job: string, options: TriggerOptions) => {
      await runTrigger(job, options, io);
    });

  const simple: { name: string; summary: string; description: string; act: (client: AdminClient, name: string) => Promise<unknown>; done: string }[] = [
    {
      name: "pause",
      summary: "stop a job's scheduled fires until it is resumed",
      description: "Stop a job's scheduled fires until it is resumed. Manual triggers still run.",
      act: (client, name) => client.pauseJob({ name }),
      done: "paused",
    },
    {
      name: "resume",
      summary: "resume a paused job's scheduled fires",
      description: "Resume a paused job's scheduled fires from now on; fires missed while paused are not made.",
      act: (client, name) => client.resumeJob({ name }),
      done: "resumed",
    },
    {
      name: "delete",
      summary: "delete a job and cancel its executions",
      description: "Delete a job. Its pending executions are cancelled, and running ones are cancelled on their agents.",
      act: (client, name) => client.deleteJob({ name }),
      done: "deleted",
    },
  ];
  for (const action of simple) {
    const command = program
      .command(action.name)
      .summary(action.summary)
      .description(action.description)
      .argument("<JOB>", "the job's name");
    addControllerOption(command).action(async (job: string, options: { controller?: string }) => {
      await withAdminClient(options, io, async (client) => {
        await action.act(client, job).catch((error: unknown) => {
          throw withNotFoundHint(error, JOB_HINT);
        });
        io.stdout(`job/${job} ${action.done}\n`);
      });
    });
  }
}

/** `shardline trigger JOB`: fires the job and says when and how many executions it made. */
export async function runTrigger(job: string, options: TriggerOptions, io: CliIo): Promise<void> {
  await withAdminClient(options, io, async (client) => {
    const response = await client.triggerJob({ name: job, shards: options.shards ?? [], parameter: options.parameter ?? "" }).catch((error: unknown) => {
      throw withNotFoundHint(error, JOB_HINT);
    });
    io.stdout(`${triggerOutcome(job, response)}\n`);
  });
}

/** `job/NAME triggered: fire 2026-05-01T10:00:00Z, 3 executions`. */
export function triggerOutcome(job: string, response: Pick<TriggerJobResponse, "fireTimeUnixMs" | "executionIds">): string {
  const count = response.executionIds.length;
  return `job/${job} triggered: fire ${tableTime(response.fireTimeUnixMs)}, ${count} execution${count === 1 ? "" : "s"}`;
}
