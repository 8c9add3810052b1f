import type { Command } from "commander";
import type { CliIo } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint } from "./admin.js";

const AGENT_HINT = 'run "shardline get agents" to list the agents';

/** Registers drain and uncordon: the commands that act on one agent. */
export function registerAgentActions(program: Command, io: CliIo): void {
  const drain = program
    .command("drain")
    .summary("move an agent's shards away and give it no new ones")
    .description("Move an agent's shards to other agents and give it no new ones until it is uncordoned.")
    .argument("<AGENT>", "the agent's id");
  addControllerOption(drain).action(async (agent: string, options: { controller?: string }) => {
    await withAdminClient(options, io, async (client) => {
      await client.drainAgent({ id: agent }).catch((error: unknown) => {
        throw withNotFoundHint(error, AGENT_HINT);
      });
      io.stdout(`agent/${agent} draining\n`);
    });
  });

  const uncordon = program
    .command("uncordon")
    .summary("let a drained agent receive shards again")
    .description("Let a drained agent receive shards again.")
    .argument("<AGENT>", "the agent's id");
  addControllerOption(uncordon).action(async (agent: string, options: { controller?: string }) => {
    await withAdminClient(options, io, async (client) => {
      await client.uncordonAgent({ id: agent }).catch((error: unknown) => {
        throw withNotFoundHint(error, AGENT_HINT);
      });
      io.stdout(`agent/${agent} uncordoned\n`);
    });
  });
}
