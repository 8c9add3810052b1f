#!/usr/bin/env node
/**
 * `npm run simulate [-- --seeds N] [--seed S] [--path P]`: runs the deterministic simulator over
 * N random fault schedules and prints the first broken invariant, shrunk to a minimal scenario,
 * with the command that replays it.
 */
import { Command, InvalidArgumentError } from "commander";
import { simulateMany } from "./scenario.js";

function integer(name: string, min: number): (value: string) => number {
  return (value) => {
    const parsed = Number(value);
    if (!Number.isSafeInteger(parsed) || parsed < min) throw new InvalidArgumentError(`${name} must be an integer of at least ${min}, not ${JSON.stringify(value)}`);
    return parsed;
  };
}

const program = new Command("simulate")
  .description("run the deterministic simulator over random fault schedules and check the invariants listed in docs/architecture.md")
  .option("--seeds <N>", "how many scenarios to run", integer("--seeds", 1), 10_000)
  .option("--seed <S>", "the random seed (default: a new one, printed)", integer("--seed", 0))
  .option("--path <P>", "replay one scenario: the path a failure printed (with its --seed)")
  .action((options: { seeds: number; seed?: number; path?: string }) => {
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
    const started = Date.now();
    const result = simulateMany(options.seeds, seed, options.path);
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (result.failure !== undefined) {
      process.stderr.write(`simulate: ${result.failure}\n`);
      process.exit(1);
    }
    process.stdout.write(`simulate: ${result.seeds} scenarios (seed ${seed}) kept every invariant, in ${seconds} s\n`);
  });

program.parse();
