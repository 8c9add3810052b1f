import type { Command } from "commander";
import { importPart } from "./lifecycle.js";
import { parseSeconds } from "./options.js";

/** What cli/demo.ts exports. */
interface DemoModule {
  runDemo(options: { durationSeconds?: number }): Promise<void>;
}

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .summary("run a controller and agents in this process and show them at work")
    .description("Run a controller and a few agents in this process, apply sample jobs, and show fires, executions and a failover.")
    .option("--duration <SECONDS>", "how long to run before stopping (default: 30)", (value: string) =>
      parseSeconds(value, "--duration", 1, 86_400),
    )
    .action(async (options: { duration?: number }) => {
      const module = await importPart<DemoModule>(new URL("../demo.js", import.meta.url), "the demo");
      await module.runDemo(options.duration === undefined ? {} : { durationSeconds: options.duration });
    });
}
