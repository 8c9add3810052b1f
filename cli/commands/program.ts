import { Command, CommanderError, type ErrorOptions, type HelpContext } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import { parseLogLevel, LOG_LEVELS } from "../../shared/logging.js";
import { VERSION } from "../../shared/version.js";
import { CONTROLLER_ENV, DEFAULT_CONTROLLER_ADDRESS } from "../controller-address.js";
import { EXIT_CODES_HELP, ExitCode, exitCodeOf, isOutcomeError } from "../exit-codes.js";
import { oneLine, type CliIo } from "../output.js";
import { registerAgent } from "./agent.js";
import { registerAgentActions } from "./agent-actions.js";
import { registerApply } from "./apply.js";
import { registerController } from "./controller.js";
import { registerConvert } from "./convert.js";
import { registerCompletion } from "./completion.js";
import { registerDemo } from "./demo.js";
import { registerDiff } from "./diff.js";
import { registerEdit } from "./edit.js";
import { registerExplain } from "./explain.js";
import { registerVersion } from "./version.js";
import { registerEvents } from "./events.js";
import { registerGet } from "./get.js";
import { registerJobActions } from "./job-actions.js";
import { registerRollout } from "./rollout.js";
import { registerRun } from "./run.js";
import { registerDescribe } from "./describe.js";
import { registerExecutionActions } from "./execution-actions.js";
import { registerLogs } from "./logs.js";
import { registerShardActions } from "./shard-actions.js";

/** Code of the usage error for `shardline` with no command (commander would print the whole help). */
const NO_COMMAND = "shardline.noCommand";

/**
 * A commander Command whose own errors (unknown command or flag, missing argument) come out as
 * the CLI's one line, `shardline: <what was wrong>; <what is accepted>`, with exit code 2.
 */
class ShardlineCommand extends Command {
  override createCommand(name?: string): Command {
    return new ShardlineCommand(name);
  }

  override error(message: string, options?: ErrorOptions): never {
    return super.error(`shardline: ${usageLine(this, message, options?.code)}`, { ...options, exitCode: ExitCode.usage });
  }

  // Commander answers a bare `shardline` with the whole help on stderr; bad input gets one line.
  override help(context?: HelpContext | ((text: string) => string)): never {
    if (typeof context === "object" && context.error) this.error("no command given", { code: NO_COMMAND });
    return super.help(context as HelpContext);
  }
}

/** Builds the `shardline` program, writing through `io`. Exported for the tests. */
export function buildProgram(io: CliIo): Command {
  const program = new ShardlineCommand("shardline");
  program
    .description("Shardline: a distributed, sharded job scheduler. Run a controller and agents, and manage jobs.")
    .exitOverride()
    .configureOutput({ writeOut: (text) => io.stdout(text), writeErr: (text) => io.stderr(text) })
    .configureHelp({ showGlobalOptions: true })
    .showSuggestionAfterError(true)
    .version(VERSION, "-V, --version", "print the version")
    .option("--log-level <LEVEL>", `log level of the controller and agent: ${LOG_LEVELS.join(", ")} (default: info)`, (value: string) => parseLogLevel(value))
    .addHelpText(
      "after",
      [
        "",
        "Environment:",
        `  ${CONTROLLER_ENV}  the controller's gRPC address when --controller is not given (default ${DEFAULT_CONTROLLER_ADDRESS})`,
        "",
        EXIT_CODES_HELP,
        "",
      ].join("\n"),
    );
  registerController(program, io);
  registerAgent(program, io);
  registerApply(program, io);
  registerGet(program, io);
  registerJobActions(program, io);
  registerRun(program, io);
  registerRollout(program, io);
  registerShardActions(program, io);
  registerExecutionActions(program, io);
  registerLogs(program, io);
  registerDescribe(program, io);
  registerAgentActions(program, io);
  registerEvents(program, io);
  registerConvert(program, io);
  registerDiff(program, io);
  registerEdit(program, io);
  registerExplain(program, io);
  registerVersion(program, io);
  registerCompletion(program, io);
  registerDemo(program);
  return program;
}

/**
 * Runs `shardline` with `argv` (the arguments after the program name) and resolves its exit code.
 * Every failure is written to io.stderr as one line; nothing is thrown.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<ExitCode> {
  try {
    await buildProgram(io).parseAsync([...argv], { from: "user" });
    return ExitCode.ok;
  } catch (error) {
    // Commander has written its message (or the help, or the version) already.
    if (error instanceof CommanderError) return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    io.stderr(`shardline: ${describeFailure(error)}\n`);
    return exitCodeOf(error);
  }
}

function describeFailure(error: unknown): string {
  if (isOutcomeError(error)) return oneLine(error.message);
  if (error instanceof ShardlineError) {
    return error.code === "internal" ? `${oneLine(error.message)}; see the controller's or agent's log` : oneLine(error.message);
  }
  const text = error instanceof Error ? error.message : String(error);
  return `unexpected error: ${oneLine(text)}; this is a bug in shardline, please report it`;
}

/** Rewrites one of commander's messages into `<what was wrong>; <what is accepted>`. */
function usageLine(command: Command, message: string, code: string | undefined): string {
  const text = oneLine(message.replace(/^error: /, "")).replace(/\.$/, "");
  const path = commandPath(command);
  const commands = command.commands.map((sub) => sub.name()).filter((name) => name !== "help");
  switch (code) {
    case NO_COMMAND:
    case "commander.unknownCommand":
      return `${text}; expected one of: ${commands.join(", ")} (see "${path} --help")`;
    case "commander.unknownOption":
      return `${text}; "${path}" accepts ${acceptedFlags(command).join(", ")}`;
    default:
      return `${text}; usage: ${path} ${command.usage()}`;
  }
}

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let current: Command | null = command; current; current = current.parent) names.unshift(current.name());
  return names.join(" ");
}

/** The long flags a command accepts, its own and its ancestors' (global options). */
function acceptedFlags(command: Command): string[] {
  const flags: string[] = [];
  for (let current: Command | null = command; current; current = current.parent) {
    for (const option of current.options) flags.push(option.long ?? option.short ?? option.flags);
  }
  return [...new Set([...flags, "--help"])];
}
