import fc from "fast-check";
import { MAX_DRIFT, type Scenario, type Step, World } from "./world.js";

const AGENTS = 3;

const agent = fc.integer({ min: 0, max: AGENTS - 1 });

/** A random schedule of faults and edits; fast-check shrinks a failing one to a minimal one. */
export const stepArbitrary: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant("advance" as const), ms: fc.integer({ min: 1, max: 4000 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("crash" as const), agent }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("restart" as const), agent }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("drop" as const), agent }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("partition" as const), agent }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("heal" as const), agent }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("slow" as const), agent }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("fast" as const), agent }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("failover" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("resign" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("edit" as const), job: fc.integer({ min: 0, max: 1 }), shards: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("delete" as const), job: fc.integer({ min: 0, max: 1 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("impostor" as const), agent }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("drain" as const), agent }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("delay" as const), agent, ms: fc.integer({ min: 0, max: 800 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("pause" as const), agent, ms: fc.integer({ min: 1, max: 5000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("stall" as const), ms: fc.integer({ min: 1, max: 5000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("store-behind" as const), ms: fc.integer({ min: 1, max: 5000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("clock-jump" as const), agent, ms: fc.integer({ min: -5000, max: 5000 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("revise" as const), bad: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("promote" as const), full: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("abort-rollout" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("retry-rollout" as const) }) },
);

export const scenarioArbitrary: fc.Arbitrary<Scenario> = fc.record({
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  drifts: fc.array(fc.double({ min: -MAX_DRIFT, max: MAX_DRIFT, noNaN: true }), { minLength: AGENTS, maxLength: AGENTS }),
  steps: fc.array(stepArbitrary, { maxLength: 30 }),
  leaderLeases: fc.boolean(),
  daemons: fc.constant(true),
  // No grace (runs abort at a lapse, as before there was one), a short one, and one longer
  // than any control-plane outage here (invariant 6).
  graceMs: fc.constantFrom(0, 2_000, 8_000),
  // Small budgets split a fire's batch of jobs over several batches (Clock.advance).
  fireBudget: fc.constantFrom(1, 3, 2_000),
});

/** Runs one scenario; throws the first broken invariant with the steps that led to it. */
export function simulate(scenario: Scenario): void {
  const world = new World(scenario);
  world.run();
}

export interface SimulationResult {
  seeds: number;
  seed: number;
  failure?: string;
}

/**
 * Runs `runs` random scenarios from `seed`. On a failure, fast-check shrinks the scenario to a
 * minimal one and the result says how to replay it.
 */
export function simulateMany(runs: number, seed: number, path?: string): SimulationResult {
  const details = fc.check(
    fc.property(scenarioArbitrary, (scenario) => simulate(scenario)),
    { numRuns: runs, seed, endOnFailure: false, ...(path === undefined ? {} : { path }) },
  );
  if (!details.failed) return { seeds: details.numRuns, seed };
  const counterexample = details.counterexample?.[0];
  const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
  const failure = [
    `${error}`,
    `after ${details.numRuns} scenarios (seed ${seed}, path ${details.counterexamplePath ?? ""}), shrunk ${details.numShrinks} times to:`,
    JSON.stringify(counterexample, null, 1),
    `replay: npm run simulate -- --seed ${seed} --path ${details.counterexamplePath ?? ""}`,
  ].join("\n");
  return { seeds: details.numRuns, seed, failure };
}
