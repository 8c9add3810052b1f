import type { Command } from "commander";
import type { CliIo } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint } from "./admin.js";
import { executionStateName } from "./resources.js";

/** Registers `shardline cancel EXECUTION`. */
export function registerExecutionActions(program: Command, io: CliIo): void {
  const cancel = program
    .command("cancel")
    .summary("cancel a pending or running execution")
    .description(
      "Cancel an execution. A pending one is cancelled at once; a running one is aborted on its agent " +
        "(its handler's AbortSignal fires; a script gets SIGTERM, then SIGKILL) and recorded as cancelled " +
        "when the agent confirms. A cancelled execution is never re-run by failover or retries.",
    )
    .argument("<EXECUTION>", 'the execution id, as shown by "shardline get executions"');
  addControllerOption(cancel)
    .option("--reason <TEXT>", "why, kept in the execution's error (default: cancelled by an operator)")
    .action(async (id: string, options: { controller?: string; reason?: string }) => {
      await withAdminClient(options, io, async (client) => {
        const response = await client.cancelExecution({ id, reason: options.reason ?? "" }).catch((error: unknown) => {
          throw withNotFoundHint(error, 'run "shardline get executions" to list recent executions');
        });
        const state = executionStateName(response.state);
        io.stdout(state === "cancelled" ? `execution/${id} cancelled\n` : `execution/${id} cancelling (${state} on its agent)\n`);
      });
    });
}
