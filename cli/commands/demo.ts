import type { Command } from "commander";
import { importPart } from "./lifecycle.js";
import { parseSeconds } from "./options.js";

/** What cli/demo.ts exports. */
interface DemoModule {
  runDemo(options: { durationSeconds?: number }): Promise<void>;
}

/** What cli/demo-rollout.ts exports. */
interface RolloutDemoModule {
  runRolloutDemo(options: { durationSeconds?: number }): Promise<void>;
}

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .summary("run a controller and agents in this process and show them at work")
    .description("Run a controller and a few agents in this process, apply sample jobs, and show fires, executions and a failover.")
    .option("--duration <SECONDS>", "how long to run before stopping (default: 30; with --rollout at most 60, and it stops once its story is told)", (value: string) =>
      parseSeconds(value, "--duration", 1, 86_400),
    )
    .option("--rollout", "show a rollout instead: agents in three clusters, a broken revision rolled back by its canary's analysis, then a good one reaching every cluster")
    .action(async (options: { duration?: number; rollout?: boolean }) => {
      const durationSeconds = options.duration === undefined ? {} : { durationSeconds: options.duration };
      if (options.rollout === true) {
        const module = await importPart<RolloutDemoModule>(new URL("../demo-rollout.js", import.meta.url), "the rollout demo");
        await module.runRolloutDemo(durationSeconds);
        return;
      }
      const module = await importPart<DemoModule>(new URL("../demo.js", import.meta.url), "the demo");
      await module.runDemo(durationSeconds);
    });
}
