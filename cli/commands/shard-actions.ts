import type { Command } from "commander";
import type { CliIo } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint } from "./admin.js";
import { parseInteger } from "./options.js";

/** Registers `shardline disable JOB SHARD` and `shardline enable JOB SHARD`. */
export function registerShardActions(program: Command, io: CliIo): void {
  const actions = [
    {
      name: "disable",
      summary: "stop firing one shard of a job",
      description: "Stop firing one shard of a job until it is enabled again. Its assignment stays and a run in progress finishes.",
      done: "disabled",
    },
    { name: "enable", summary: "fire a disabled shard again", description: "Fire a disabled shard again from its next scheduled fire.", done: "enabled" },
  ] as const;
  for (const action of actions) {
    const command = program
      .command(action.name)
      .summary(action.summary)
      .description(action.description)
      .argument("<JOB>", "the job's name")
      .argument("<SHARD>", "the shard number", (value: string) => parseInteger(value, "SHARD", 0, 9_999));
    addControllerOption(command).action(async (job: string, shard: number, options: { controller?: string }) => {
      await withAdminClient(options, io, async (client) => {
        const request = { job, shard };
        await (action.name === "disable" ? client.disableShard(request) : client.enableShard(request)).catch((error: unknown) => {
          throw withNotFoundHint(error, 'run "shardline get jobs" to list the jobs');
        });
        io.stdout(`shard/${job}/${shard} ${action.done}\n`);
      });
    });
  }
}
