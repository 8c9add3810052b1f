import { z } from "zod";
import type { RolloutSpec, RolloutStep } from "./job-spec.js";
import { SELECTOR_OPERATORS } from "./job-spec.js";
import { integer, labelKey, labelMap, mapping, flag, oneOf, clean, text } from "./manifest-fields.js";
import { refuse, refuseValue } from "./schema-issues.js";

/**
 * spec.rollout: the steps a changed job takes from its stable revision to the new one
 * (docs/rollouts.md). Each step is a mapping with exactly one of wave, weight, pause, analysis.
 */

/** The most steps a rollout has. */
export const MAX_ROLLOUT_STEPS = 32;
/** The longest pause by duration: 30 days. */
export const MAX_PAUSE_SECONDS = 30 * 86_400;
export const STEP_KINDS = ["wave", "weight", "pause", "analysis"] as const;

const DURATION = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;
const DURATION_ALLOWED = `a duration such as 90s, 30m, 1h or 1h30m, or a whole number of seconds, at most ${MAX_PAUSE_SECONDS / 86_400} days`;

/** A pause's duration in ms: `30m`, `1h30m`, `90s`, or a number of seconds. Undefined when it is not one. */
export function durationMs(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isInteger(value) && value > 0 && value <= MAX_PAUSE_SECONDS ? value * 1000 : undefined;
  const match = DURATION.exec(value);
  if (match === null || value === "") return undefined;
  const seconds = Number(match[1] ?? 0) * 3600 + Number(match[2] ?? 0) * 60 + Number(match[3] ?? 0);
  return seconds > 0 && seconds <= MAX_PAUSE_SECONDS ? seconds * 1000 : undefined;
}

const duration = z
  .union([z.string(), z.number()], { error: DURATION_ALLOWED })
  .refine((value) => durationMs(value) !== undefined, { error: DURATION_ALLOWED });

const WAVE_ALLOWED = "at least one of clusters, matchLabels and matchExpressions";
const VALUES_ALLOWED = "a list of label values: 1 or more for In and NotIn, none for Exists and DoesNotExist";

const expression = mapping("spec.rollout.steps[].wave.matchExpressions[]", {
  key: labelKey(),
  operator: oneOf(SELECTOR_OPERATORS),
  values: z.array(text(), { error: "a list of strings" }).optional(),
}).superRefine(
  (item, ctx) => {
    const needsValues = item.operator === "In" || item.operator === "NotIn";
    if (needsValues !== (item.values !== undefined && item.values.length > 0)) refuse(ctx, ["values"], VALUES_ALLOWED);
  },
  { when: clean },
);

const wave = mapping("spec.rollout.steps[].wave", {
  clusters: z
    .array(text(), { error: "a list of cluster names (the agents' cluster label)" })
    .min(1, { error: "a list of cluster names (the agents' cluster label)" })
    .optional()
    .describe("Agents whose label `cluster` is one of these: short for matchExpressions [{key: cluster, operator: In, values}]."),
  matchLabels: labelMap().optional().describe("Agent labels that must all match."),
  matchExpressions: z.array(expression, { error: "a list of {key, operator, values}" }).optional().describe("As a Kubernetes label selector's."),
}).superRefine(
  (selector, ctx) => {
    if (selector.clusters === undefined && selector.matchLabels === undefined && selector.matchExpressions === undefined) refuse(ctx, [], WAVE_ALLOWED);
  },
  { when: clean },
);

const pause = mapping("spec.rollout.steps[].pause", {
  duration: duration.optional().describe("Waits this long (90s, 30m, 1h30m, or seconds)."),
  fires: integer(1, 100_000).optional().describe("Waits for this many fires of the job."),
}).superRefine(
  (step, ctx) => {
    if (step.duration !== undefined && step.fires !== undefined) refuse(ctx, ["fires"], "one of duration and fires, or neither (wait to be promoted)");
  },
  { when: clean },
);

const RATE_ALLOWED = "a number from 0 to 1 (0.05 is 5%)";
const analysis = mapping("spec.rollout.steps[].analysis", {
  minExecutions: integer(1, 100_000).default(5).describe("Finished runs of the new revision the gate waits for before it judges."),
  maxFailures: integer(0, 100_000).optional().describe("More failed or timed-out runs than this aborts the rollout at once."),
  maxFailureRate: z.number({ error: RATE_ALLOWED }).min(0, { error: RATE_ALLOWED }).max(1, { error: RATE_ALLOWED }).optional().describe("Failed or timed-out runs over finished runs; above it aborts."),
  noWorseThanStable: flag().optional().describe("Aborts when the new revision's failure rate is above the stable revision's over the same fires."),
  maxP95DurationSeconds: z
    .number({ error: "a number of seconds above 0" })
    .positive({ error: "a number of seconds above 0" })
    .optional()
    .describe("Aborts when the 95th percentile of the new revision's run durations is above it."),
});

const step = mapping("spec.rollout.steps[]", {
  wave: wave.optional().describe("A wave by selector: shards whose owners match run the new revision."),
  weight: integer(1, 100).optional().describe("A wave by weight: this percent of the job's shards (cumulative) run the new revision."),
  pause: pause.optional().describe("Waits: {} until promoted, {duration} or {fires}."),
  analysis: analysis.optional().describe("A gate on the new revision's runs since the last wave began."),
})
  .superRefine(
    (item, ctx) => {
      const given = STEP_KINDS.filter((kind) => item[kind] !== undefined);
      if (given.length !== 1) refuse(ctx, [], `exactly one of ${STEP_KINDS.join(", ")}${given.length > 1 ? `; ${given.join(" and ")} are given together` : ""}`);
    },
    { when: clean },
  )
  .transform((item) => Object.fromEntries(Object.entries(item).filter(([, value]) => value !== undefined)) as RolloutStep);

/** spec.rollout as the schema reads it. */
export const rolloutSchema = mapping("spec.rollout", {
  steps: z
    .array(step, { error: `a list of 1 to ${MAX_ROLLOUT_STEPS} steps` })
    .min(1, { error: `a list of 1 to ${MAX_ROLLOUT_STEPS} steps` })
    .max(MAX_ROLLOUT_STEPS, { error: `a list of 1 to ${MAX_ROLLOUT_STEPS} steps` })
    .describe("Run in order when a change of what the job runs is applied; after the last, every shard runs the new revision."),
})
  .superRefine(
    (rollout, ctx) => {
      // Weights are cumulative: a later wave never takes shards back.
      let weight = 0;
      rollout.steps.forEach((item, index) => {
        if (!("weight" in item)) return;
        if (item.weight < weight) refuseValue(ctx, ["steps", index, "weight"], item.weight, `a percent of at least ${weight}: weights are cumulative, and an earlier step reached ${weight}`);
        weight = item.weight;
      });
    },
    { when: clean },
  )
  .transform((rollout): RolloutSpec => rollout);

