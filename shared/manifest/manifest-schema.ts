import { z } from "zod";
import { validateSchedule, validateTimeZone } from "../schedule.js";
import { EXECUTOR_FIELDS, withExecutor } from "./executor-fields.js";
import { httpSchema, scriptSchema } from "./executor-schemas.js";
import { FAILOVER_MODES, MISFIRE_POLICIES, OVERLAP_POLICIES, STRATEGIES, type JobSpec } from "./job-spec.js";
import { kubernetesSchema } from "./kubernetes-schema.js";
import {
  DNS_LABEL,
  HANDLER_ALLOWED,
  clean,
  dnsLabel,
  flag,
  handlerName,
  handlerOrEmpty,
  headerMap,
  httpUrl,
  integer,
  labelKey,
  labelMap,
  mapping,
  oneOf,
  text,
} from "./manifest-fields.js";
import { rolloutSchema } from "./rollout-schema.js";
import { refuse, refuseThrown, refuseValue } from "./schema-issues.js";

/**
 * The ShardedJob manifest as one zod schema: it validates a manifest, fills in every default
 * (its output is the stored JobSpec, where the one of spec.handler, spec.script, spec.http and
 * spec.kubernetes given becomes JobSpec.runs) and, through z.toJSONSchema, describes the manifest
 * to editors (shardedjob.schema.json). The meaning of each field is in job-spec.ts and in
 * docs/architecture.md, "Job manifest".
 */

/** The `apiVersion` and `kind` every job manifest carries, as a Kubernetes custom resource would. */
export const MANIFEST_API_VERSION = "shardline.dev/v1";
export const MANIFEST_KIND = "ShardedJob";

const EXECUTORS_ALLOWED = "exactly one of spec.handler, spec.script, spec.http and spec.kubernetes";
/** The most topology levels spec.placement.spreadBy takes (cluster, zone, node). */
const MAX_SPREAD_LEVELS = 3;
const SPREAD_BY_ALLOWED = `a list of 1 to ${MAX_SPREAD_LEVELS} distinct agent label keys, outermost first, e.g. [zone, node] or [topology.kubernetes.io/zone]`;
const STRATEGY_ALLOWED =
  `one of ${STRATEGIES.join(", ")}, or custom:NAME where NAME is a DNS-1123 label naming a strategy ` +
  "the controller loaded with --strategy NAME=MODULE";
/** A shard number as a mapping key: decimal, without leading zeros. */
const SHARD_NUMBER = /^(0|[1-9][0-9]*)$/;

const strategy = z.union([oneOf(STRATEGIES), z.templateLiteral(["custom:", z.string().regex(DNS_LABEL)])], { error: STRATEGY_ALLOWED });

/** spec.shardParameters: a number is taken as its decimal text, as a user writing `0: 2024` means. */
const shardParameters = z.record(
  // The keys are checked against spec.shards in crossFieldRules; the pattern is for editors.
  z.string().meta({ pattern: SHARD_NUMBER.source }),
  z.union([z.string(), z.number()], { error: "a string (a number is taken as its decimal text)" }).transform(String),
  { error: 'a mapping from shard number to parameter, e.g. {"0": beijing}' },
);

const spreadKey = labelKey();

/**
 * spec.placement.spreadBy. Every problem, a bad item too, is reported on the list, which is
 * what a user rewrites; so the items are checked here rather than by an item type, and the
 * JSON Schema is told their type.
 */
const spreadBy = z
  .array(z.unknown(), { error: SPREAD_BY_ALLOWED })
  .max(MAX_SPREAD_LEVELS, { error: SPREAD_BY_ALLOWED })
  .refine((keys): keys is string[] => keys.every((key) => spreadKey.safeParse(key).success) && new Set(keys).size === keys.length, {
    error: SPREAD_BY_ALLOWED,
  })
  .meta({ items: { type: "string" }, uniqueItems: true });

const placement = mapping("spec.placement", {
  selector: labelMap().default({}).describe("Agent labels that must all match."),
  spreadBy: spreadBy
    .optional()
    .describe(
      "Agent label keys, outermost first (e.g. [zone, node]): shards are shared evenly between the label's values, then between agents. " +
        "Agents without every one of these labels take none. Only with strategy sticky.",
    ),
}).transform(({ selector, spreadBy: keys }) => (keys === undefined || keys.length === 0 ? { selector } : { selector, spreadBy: keys }));

const retries = mapping("spec.retries", {
  limit: integer(0, 100).default(0).describe("How many times a failed execution is retried."),
  backoffSeconds: integer(0, 86_400).default(10).describe("The wait before a retry."),
});

/** spec.onFailure; one without a webhook means the default, logging, and is left out. */
const onFailure = mapping("spec.onFailure", {
  webhook: mapping("spec.onFailure.webhook", {
    url: httpUrl().describe("An absolute http:// or https:// URL."),
    headers: headerMap().default({}).describe("Request headers; a value ${env:NAME} is read from the controller's environment when sending."),
  })
    .optional()
    .describe("POST each failed, timed-out, lost or misfired execution as JSON to url."),
}).transform(({ webhook }) => (webhook === undefined ? undefined : { webhook }));

const onFireComplete = mapping("spec.onFireComplete", {
  handler: handlerName().describe("A handler agents declare, run once with each shard's outcome."),
});

/**
 * spec.script, spec.http or spec.kubernetes, absent when written as "": the hand-written parser
 * this schema replaced counted "" as not given for each of them, as for spec.handler, so every
 * manifest it accepted still applies.
 */
function executor<T extends z.ZodType>(schema: T) {
  return z.preprocess((value) => (value === "" ? undefined : value), schema.optional());
}

const specFields = mapping("spec", {
  schedule: text()
    .optional()
    .describe("A cron expression with 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first; absent for manual-only jobs."),
  timeZone: text()
    .superRefine((zone, ctx) => refuseThrown(ctx, [], () => validateTimeZone(zone, "spec.timeZone")))
    .default("UTC")
    .describe("The IANA time zone the schedule is read in, e.g. Europe/Berlin."),
  shards: integer(1, 10_000).default(1).describe("How many shards the job is split into; agents share them out by spec.strategy."),
  shardParameters: shardParameters.default({}).describe("Shard number to the parameter that shard receives."),
  parameter: text().default("").describe("Passed to every shard (a trigger may override it)."),
  handler: handlerOrEmpty()
    .default("")
    .describe('The handler name agents declare; only they receive the job\'s shards. Exactly one of handler, script, http and kubernetes ("" counts as none).'),
  script: executor(scriptSchema),
  http: executor(httpSchema),
  kubernetes: executor(kubernetesSchema),
  strategy: strategy.default("sticky").describe("How shards are spread over agents; custom:NAME names a strategy the controller loaded."),
  failover: oneOf(FAILOVER_MODES).default("fenced").describe("What happens to a lost agent's shards and running executions."),
  misfire: oneOf(MISFIRE_POLICIES).default("fire-once").describe("What to do with fires that could not start on time."),
  maxCatchUp: integer(1, 1000).default(10).describe("The most missed fires misfire catch-up runs."),
  overlap: oneOf(OVERLAP_POLICIES).default("forbid").describe("What a fire does while the shard's previous run is still going."),
  timeoutSeconds: integer(0, 604_800).default(0).describe("The agent aborts an execution after this long; 0 is none."),
  disconnectGraceSeconds: integer(0, 86_400)
    .optional()
    .describe(
      "How long a running execution goes on when its agent loses touch with every controller (a controller restart, a partition) before the agent aborts it; the fire re-runs elsewhere only after it. Absent: the controller's --disconnect-grace (15 s by default). 0: abort at once. Ignored with failover: fast.",
    ),
  retries: retries.prefault({}).describe("Retries of a failed or timed-out execution, the backoff doubling each time."),
  placement: placement.prefault({}).describe("Which agents may own the job's shards, and how they are spread across topology."),
  suspend: flag().default(false).describe("No scheduled fires while true."),
  priority: integer(-1000, 1000).default(0).describe("When agents' slots are short, executions of higher-priority jobs start first."),
  daemon: flag().default(false).describe("Each shard runs for as long as an agent owns it (a consumer per partition); excludes schedule."),
  onFailure: onFailure.optional().describe("What to do when an execution fails, times out, is lost or misfires; without it, a warning is logged."),
  onFireComplete: onFireComplete.optional().describe("Once every shard of a fire has finished, one agent runs this handler once."),
  description: text().default("").describe("Free text."),
  rollout: rolloutSchema.optional().describe("How a change of what the job runs reaches its shards: in waves, gated on its own runs (docs/rollouts.md)."),
});

type SpecFields = z.output<typeof specFields>;

/** The rules that tie fields together, which a field's own type cannot say. */
function crossFieldRules(spec: SpecFields, ctx: z.RefinementCtx): void {
  // An empty handler counts as none given: it is what a script, http or kubernetes job's spec holds.
  const given = EXECUTOR_FIELDS.filter((field) => spec[field] !== undefined && spec[field] !== "");
  const [first, second] = given;
  if (first === undefined) {
    refuse(ctx, ["handler"], `exactly one of spec.handler (${HANDLER_ALLOWED}), spec.script, spec.http or spec.kubernetes`);
  } else if (second !== undefined) {
    refuse(ctx, [second], `${EXECUTORS_ALLOWED}; spec.${first} is given too`);
  }
  if (spec.schedule !== undefined) {
    const { schedule, timeZone } = spec;
    refuseThrown(ctx, ["schedule"], () => validateSchedule(schedule, timeZone, "spec.schedule"));
    if (spec.daemon) refuse(ctx, ["schedule"], "no spec.schedule when spec.daemon is true: a daemon job runs continuously and has no schedule");
  }
  if (spec.daemon && spec.rollout !== undefined) {
    refuse(ctx, ["rollout"], "no spec.rollout when spec.daemon is true: a daemon shard's run never ends by itself, so it has no next fire to move to a new revision");
  }
  if (spec.daemon && spec.onFireComplete !== undefined) {
    refuse(ctx, ["onFireComplete"], "no spec.onFireComplete when spec.daemon is true: a daemon job has no fires that complete");
  }
  for (const key of Object.keys(spec.shardParameters)) {
    if (!SHARD_NUMBER.test(key) || Number(key) >= spec.shards) {
      refuseValue(ctx, ["shardParameters", key], key, `a shard number from 0 to ${spec.shards - 1} (spec.shards is ${spec.shards})`);
    }
  }
  if (spec.placement.spreadBy !== undefined && spec.strategy !== "sticky") {
    refuse(ctx, ["placement", "spreadBy"], `no spreadBy with spec.strategy ${spec.strategy}: spreading works only with sticky, the default strategy`);
  }
}

const spec = specFields.superRefine(crossFieldRules, { when: clean });

const metadata = mapping("metadata", {
  name: dnsLabel().describe("The job's name, unique in the controller."),
  labels: labelMap().default({}).describe("Free labels, as on any Kubernetes object."),
});

/** A whole ShardedJob manifest; its output is the job with every default filled in. */
export const manifestSchema = mapping("a manifest", {
  apiVersion: z.literal(MANIFEST_API_VERSION, { error: JSON.stringify(MANIFEST_API_VERSION) }),
  kind: z.literal(MANIFEST_KIND, { error: JSON.stringify(MANIFEST_KIND) }),
  metadata: metadata.describe("The job's name and labels."),
  spec: spec.describe("What the job runs, when, on how many shards, and on which agents."),
})
  .transform(({ metadata: { name, labels }, spec: fields }) => withoutAbsent({ name, labels, ...withExecutor(fields) }))
  .meta({ title: "ShardedJob", description: "A Shardline job manifest (apiVersion shardline.dev/v1, kind ShardedJob)." });

/** The job without the optional fields a manifest left out, or gave empty (`onFailure: {}`): absent, not undefined. */
function withoutAbsent<T extends object>(job: T): T {
  return Object.fromEntries(Object.entries(job).filter(([, value]) => value !== undefined)) as T;
}

/** What the schema produces: a JobSpec, with the fields that older stored specs may lack always filled in. */
export type ParsedJobSpec = z.output<typeof manifestSchema>;

type Expect<T extends true> = T;
/** Fails to compile when the schema and JobSpec drift apart: the output must be a JobSpec, with no field either lacks. */
type _SchemaMakesJobSpec = Expect<
  [ParsedJobSpec extends JobSpec ? true : false, Exclude<keyof JobSpec, keyof ParsedJobSpec>, Exclude<keyof ParsedJobSpec, keyof JobSpec>] extends [true, never, never]
    ? true
    : false
>;
