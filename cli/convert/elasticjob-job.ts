import { ShardlineError } from "../../shared/errors.js";
import { validateSchedule, validateTimeZone } from "../../shared/schedule.js";
import type { ElasticJobDefinition } from "./elasticjob-config.js";
import { QuartzCronError, quartzToCron } from "./quartz-cron.js";

/**
 * One ElasticJob job turned into a ShardedJob manifest: each setting either becomes a manifest
 * field or is reported (docs/migrating-from-elasticjob.md has the table). A setting that would
 * make the job run at other times or with other data than it did (a cron with a year, a time
 * zone with half an hour) stops the job's conversion; one whose behaviour Shardline has in
 * another form, or lacks, is converted without it and reported.
 */

/** A setting the manifest does not carry as it was: why, and what to do. */
export interface ConversionProblem {
  /** The ElasticJob job, or undefined for a setting outside any job. */
  job: string | undefined;
  /** The setting, as ElasticJob names it: `cron`, `props.script.command.line`. */
  field: string;
  /** Its value as given, or undefined when the problem is that it was not given. */
  value: string | undefined;
  why: string;
  advice: string;
  /** True when the job could not be converted at all: nothing is written for it. */
  fatal: boolean;
}

/** What converting one job gave: a manifest unless a fatal problem stopped it. */
export interface JobConversion {
  /** The ElasticJob job's name. */
  job: string;
  /** The ShardedJob manifest, as a plain object ready to write as YAML. */
  manifest: Record<string, unknown> | undefined;
  problems: ConversionProblem[];
}

/** The label a converted job carries with the ElasticJob name it had, for finding it in `get jobs -l`. */
export const ELASTICJOB_NAME_LABEL = "elasticjob-job";

const STRATEGIES: Record<string, string> = {
  AVG_ALLOCATION: "balanced",
  ODEVITY: "odd-even",
  ROUND_ROBIN: "round-robin",
  // ElasticJob 2.x named the built-in strategies by class.
  AverageAllocationJobShardingStrategy: "balanced",
  OdevitySortByNameJobShardingStrategy: "odd-even",
  RotateServerByNameJobShardingStrategy: "round-robin",
};

const HANDLER = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/**
 * Settings with no manifest field, and what to tell the user about each. Settings the manifest
 * carries are read in convertJob; any other name is reported as unknown.
 */
const WITHOUT_EQUIVALENT: Record<string, (value: string) => { why: string; advice: string }> = {
  overwrite: (value) =>
    value.toLowerCase() === "false"
      ? {
          why: "no equivalent: ElasticJob kept the registry's copy of a job changed in its console; shardline apply makes the job what the manifest says",
          advice: "keep the manifest as the job's only source and change the job by applying it again",
        }
      : {
          why: "no equivalent: shardline apply always makes the job what the manifest says, as overwrite: true did",
          advice: "nothing to do",
        },
  monitorExecution: () => ({
    why: "no equivalent: the controller records every execution and never starts a shard's next fire over a running one (spec.overlap: forbid)",
    advice: "nothing to do; spec.overlap: allow lets fires overlap",
  }),
  maxTimeDiffSeconds: () => ({
    why: "no equivalent: only the controller's clock decides when a job fires",
    advice: "keep the controller's clock in sync (NTP); agents' clocks do not matter",
  }),
  reconcileIntervalMinutes: () => ({
    why: "no equivalent: the controller places shards again at once when an agent joins, leaves or is lost",
    advice: "nothing to do",
  }),
  jobExecutorServiceHandlerType: () => threadPool(),
  jobExecutorThreadPoolSizeProviderType: () => threadPool(),
  executorServiceHandler: () => threadPool(),
  jobErrorHandlerType: (value) => errorHandler(value),
  jobExceptionHandler: (value) => errorHandler(value),
  jobListenerTypes: () => ({
    why: "no equivalent in the manifest: listeners are code",
    advice: "export listeners {beforeExecution, afterExecution} from the agent's handler module; a distributed once-per-fire listener becomes spec.onFireComplete",
  }),
  listener: () => ({
    why: "no equivalent in the manifest: listeners are code",
    advice: "export listeners {beforeExecution, afterExecution} from the agent's handler module",
  }),
  distributedListener: () => ({
    why: "no equivalent in the manifest: a listener is code",
    advice: "set spec.onFireComplete.handler to a handler that runs once after every shard of a fire has finished",
  }),
  label: () => ({
    why: "no equivalent: jobs are matched to agents by agent labels",
    advice: "start the agents that may run it with --label KEY=VALUE and set spec.placement.selector",
  }),
  staticSharding: () => ({
    why: "no equivalent: shards are always placed again when agents come and go",
    advice: "spec.strategy: sticky moves only the shards of agents that left",
  }),
  jobBootstrapBeanName: () => ({
    why: "no equivalent: a job is fired by the controller, not by a bean in your application",
    advice: "fire it with shardline trigger JOB or shardline run JOB --wait",
  }),
  jobExtraConfigurations: () => ({
    why: "no equivalent: tracing and error handler settings are the controller's and the agents' own",
    advice: "see docs/observability.md for tracing, and spec.onFailure for failure notices",
  }),
  eventTraceRdbDataSource: () => ({
    why: "no equivalent: the controller keeps each execution's history itself",
    advice: "read it with shardline get executions --job JOB",
  }),
  monitorPort: () => ({
    why: "no equivalent: the controller's HTTP port serves metrics and the console",
    advice: "see docs/observability.md",
  }),
  streamingProcess: () => streaming(),
};

function threadPool(): { why: string; advice: string } {
  return {
    why: "no equivalent: an agent runs executions on one event loop, not a thread pool per job",
    advice: "bound what an agent runs at once with shardline agent --max-concurrent N",
  };
}

function errorHandler(value: string): { why: string; advice: string } {
  const kind = value.toUpperCase();
  if (kind === "LOG" || kind === "IGNORE" || kind === "THROW") {
    return {
      why: "no equivalent: the controller records every failed execution with its error and logs it as a warning",
      advice: "read failures with shardline get executions --state failed; add spec.retries to retry them",
    };
  }
  return {
    why: "no equivalent: notices of failures go to a webhook",
    advice: "set spec.onFailure.webhook to a service that forwards them (email, WeChat, DingTalk)",
  };
}

function streaming(): { why: string; advice: string } {
  return {
    why: "no equivalent: a dataflow job's fetch-and-process loop is the handler's own",
    advice: "loop in the handler until there is no more data or ctx.signal aborts; spec.daemon: true runs a shard continuously",
  };
}

/** Converts one ElasticJob job; never throws for bad input, which becomes a fatal problem. */
export function convertJob(job: ElasticJobDefinition): JobConversion {
  const problems: ConversionProblem[] = [];
  const report = (field: string, value: string | undefined, why: string, advice: string, fatal = false): void => {
    problems.push({ job: job.name, field, value, why, advice, fatal });
  };
  const settings = new Map(job.settings);
  const take = (name: string): string | undefined => {
    const value = settings.get(name);
    settings.delete(name);
    return value === undefined || value.trim() === "" ? undefined : value.trim();
  };

  const name = dnsName(job.name);
  if (name === undefined) {
    report("jobName", job.name, "has no letters or digits to make a Shardline job name from", "rename the job", true);
  } else if (name !== job.name) {
    report("jobName", job.name, `Shardline's job names are DNS-1123 labels; the manifest names it ${name}`, `find it with shardline get job ${name}; its label ${ELASTICJOB_NAME_LABEL} keeps the old name`);
  }

  const spec: Record<string, unknown> = {};
  const timeZone = convertTimeZone(take("timeZone"), report);
  const cron = take("cron");
  if (cron === undefined) {
    report("cron", undefined, "not set: the job has no schedule, as an ElasticJob one-off job", "fire it with shardline trigger JOB or shardline run JOB --wait");
  } else {
    const schedule = convertCron(cron, timeZone ?? "UTC", report);
    if (schedule !== undefined) spec.schedule = schedule;
  }
  if (timeZone !== undefined) spec.timeZone = timeZone;

  const shards = convertShardCount(take("shardingTotalCount"), report);
  if (shards !== undefined) spec.shards = shards;
  const parameters = take("shardingItemParameters");
  if (parameters !== undefined && shards !== undefined) {
    const shardParameters = convertShardParameters(parameters, shards, report);
    if (shardParameters !== undefined && Object.keys(shardParameters).length > 0) spec.shardParameters = shardParameters;
  }
  const parameter = take("jobParameter");
  if (parameter !== undefined) spec.parameter = parameter;

  Object.assign(spec, convertExecutor(job, take, report));

  const strategyType = take("jobShardingStrategyType");
  const strategyClass = take("jobShardingStrategyClass");
  spec.strategy = convertStrategy(strategyType ?? strategyClass, strategyType === undefined ? "jobShardingStrategyClass" : "jobShardingStrategyType", report);
  // ElasticJob's defaults are written out: failover off, misfire on. Shardline's own differ.
  const failover = readFlag("failover", take("failover"), false, report);
  spec.failover = failover ? "fenced" : "off";
  const misfire = readFlag("misfire", take("misfire"), true, report);
  spec.misfire = misfire ? "fire-once" : "skip";
  if (readFlag("disabled", take("disabled"), false, report)) spec.suspend = true;
  const description = take("description");
  if (description !== undefined) spec.description = description;

  for (const [field, value] of settings) {
    const known = WITHOUT_EQUIVALENT[field];
    if (known) {
      const { why, advice } = known(value);
      report(field, value, why, advice);
    } else {
      report(field, value, "not an ElasticJob job setting this converter knows; ignored", "check its spelling, or carry its meaning over by hand");
    }
  }

  const fatal = problems.some((problem) => problem.fatal);
  const labels = LABEL_VALUE.test(job.name) ? { [ELASTICJOB_NAME_LABEL]: job.name } : {};
  const manifest = fatal || name === undefined ? undefined : { apiVersion: "shardline.dev/v1", kind: "ShardedJob", metadata: { name, labels }, spec };
  return { job: job.name, manifest, problems };
}

type Report = (field: string, value: string | undefined, why: string, advice: string, fatal?: boolean) => void;

/** An ElasticJob name as a DNS-1123 label: `dataflowJob` -> `dataflow-job`, `billing_rollup` -> `billing-rollup`. */
export function dnsName(name: string): string | undefined {
  const label = name
    .replace(/([a-z0-9])([A-Z])/g, "$1-$2")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .slice(0, 63)
    .replace(/^-+|-+$/g, "");
  return label === "" ? undefined : label;
}

/**
 * ElasticJob's time zone, read by Java's TimeZone: `GMT+08:00` (also `GMT+8`, `GMT+0800`, `UTC`)
 * or a region id. A whole-hour offset becomes the Etc zone, whose sign is inverted by POSIX
 * convention: GMT+08:00 is Etc/GMT-8. Undefined (nothing written) when not given or refused.
 */
function convertTimeZone(value: string | undefined, report: Report): string | undefined {
  if (value === undefined) {
    report(
      "timeZone",
      undefined,
      "not set: ElasticJob read the cron in the JVM's default time zone; the manifest reads it in UTC",
      "set timeZone (or spec.timeZone) to the zone the JVM ran in, e.g. Asia/Shanghai",
    );
    return undefined;
  }
  const offset = /^(?:GMT|UTC)([+-])(\d{1,2})(?::?(\d{2}))?$/i.exec(value);
  let zone = value;
  if (/^(GMT|UTC|Z)$/i.test(value)) zone = "UTC";
  else if (offset) {
    const [, sign, hours, minutes] = offset;
    if (minutes !== undefined && minutes !== "00") {
      report("timeZone", value, "an offset with minutes has no IANA Etc zone", "set timeZone to the region's IANA zone, e.g. Asia/Kolkata for GMT+05:30", true);
      return undefined;
    }
    zone = Number(hours) === 0 ? "UTC" : `Etc/GMT${sign === "+" ? "-" : "+"}${Number(hours)}`;
  }
  try {
    validateTimeZone(zone, "timeZone");
  } catch (error) {
    if (!(error instanceof ShardlineError)) throw error;
    report("timeZone", value, "is not a time zone Shardline knows (Java read an unknown id as GMT)", "set an IANA zone such as Asia/Shanghai, or GMT+08:00", true);
    return undefined;
  }
  return zone;
}

function convertCron(cron: string, timeZone: string, report: Report): string | undefined {
  let schedule: string;
  try {
    schedule = quartzToCron(cron);
  } catch (error) {
    if (!(error instanceof QuartzCronError)) throw error;
    report("cron", cron, error.why, error.advice, true);
    return undefined;
  }
  try {
    validateSchedule(schedule, timeZone, "cron");
  } catch (error) {
    if (!(error instanceof ShardlineError)) throw error;
    report("cron", cron, `read as ${JSON.stringify(schedule)}, which Shardline refuses (${error.details.allowed ?? error.message})`, "rewrite it with seconds, minutes, hours, day-of-month, month and day-of-week", true);
    return undefined;
  }
  return schedule;
}

function convertShardCount(value: string | undefined, report: Report): number | undefined {
  const count = value === undefined ? NaN : Number(value);
  if (Number.isInteger(count) && count >= 1 && count <= 10_000) return count;
  report("shardingTotalCount", value, value === undefined ? "not set; ElasticJob requires it" : "is not a whole number from 1 to 10000", "set shardingTotalCount from 1 to 10000", true);
  return undefined;
}

/** `0=Beijing,1=Shanghai`, split as ElasticJob splits it: at commas, then at the first `=`, trimmed. */
function convertShardParameters(text: string, shards: number, report: Report): Record<string, string> | undefined {
  const parameters: Record<string, string> = {};
  for (const pair of text.split(",")) {
    if (pair.trim() === "") continue;
    const match = /^\s*(\d+)\s*=(.*)$/.exec(pair);
    const shard = match ? Number(match[1]) : NaN;
    if (!match || shard >= shards) {
      const why = match ? `shard ${shard} is not below shardingTotalCount ${shards}` : `${JSON.stringify(pair.trim())} is not ITEM=PARAMETER`;
      report("shardingItemParameters", text, why, "write 0=a,1=b,... with items from 0 to shardingTotalCount - 1", true);
      return undefined;
    }
    parameters[String(shard)] = match[2]!.trim();
  }
  return parameters;
}

function convertStrategy(value: string | undefined, field: string, report: Report): string {
  if (value === undefined) return "balanced";
  const known = STRATEGIES[value.toUpperCase()] ?? STRATEGIES[value.replace(/^.*\./, "")];
  if (known !== undefined) return known;
  report(
    field,
    value,
    "a custom sharding strategy has no built-in equivalent; the manifest uses sticky",
    "port it as a strategy module (shardline controller --strategy NAME=MODULE) and set spec.strategy: custom:NAME",
  );
  return "sticky";
}

function readFlag(field: string, value: string | undefined, fallback: boolean, report: Report): boolean {
  if (value === undefined) return fallback;
  if (/^true$/i.test(value)) return true;
  if (/^false$/i.test(value)) return false;
  report(field, value, "is not true or false", `write true or false (ElasticJob's default is ${fallback})`, true);
  return fallback;
}

/**
 * What the job runs: the job's class as the handler name; a SCRIPT job's command line as
 * spec.script; an HTTP job's request as spec.http. Reads and reports the job's props.
 */
function convertExecutor(job: ElasticJobDefinition, take: (name: string) => string | undefined, report: Report): Record<string, unknown> {
  const props = new Map(job.props);
  const prop = (name: string): string | undefined => {
    const value = props.get(name);
    props.delete(name);
    return value === undefined || value.trim() === "" ? undefined : value.trim();
  };
  const type = take("elasticJobType")?.toUpperCase();
  const jobClass = take("elasticJobClass");
  const scriptLine = take("scriptCommandLine");
  let executor: Record<string, unknown> = {};
  if (type === "SCRIPT" || (type === undefined && jobClass === undefined && scriptLine !== undefined)) {
    executor = scriptExecutor(prop("script.command.line") ?? scriptLine, report);
  } else if (type === "HTTP") {
    executor = httpExecutor(prop, report);
  } else if (type !== undefined) {
    report("elasticJobType", type, "is not a job type Shardline runs (SCRIPT and HTTP are)", "write it as a handler and name its class in elasticJobClass", true);
  } else if (jobClass !== undefined) {
    const handler = jobClass.replace(/[^A-Za-z0-9._:-]/g, ".").slice(0, 128);
    if (handler !== jobClass) report("elasticJobClass", jobClass, `a handler name has only letters, digits and . _ : -; the handler is ${handler}`, "declare a handler of that name");
    if (HANDLER.test(handler)) executor = { handler };
    else report("elasticJobClass", jobClass, "makes no handler name", "name the class with letters and digits", true);
  } else if (HANDLER.test(job.name)) {
    report("elasticJobClass", undefined, `not set; the handler is named after the job, ${job.name}`, "declare a handler of that name in the agent's handler module");
    executor = { handler: job.name };
  } else {
    report("elasticJobClass", undefined, "not set, and the job's name makes no handler name", "set elasticJobClass", true);
  }
  const streamingProcess = prop("streaming.process");
  if (streamingProcess !== undefined) {
    const { why, advice } = streaming();
    report("props.streaming.process", streamingProcess, why, advice);
  }
  for (const [name, value] of props) {
    report(
      `props.${name}`,
      value,
      "no equivalent: a job's props reached ElasticJob's job types and plugins",
      "pass what the handler needs in spec.parameter or in its own configuration",
    );
  }
  return executor;
}

function scriptExecutor(line: string | undefined, report: Report): Record<string, unknown> {
  const words = line === undefined ? [] : splitCommandLine(line);
  const [command, ...args] = words;
  if (command === undefined) {
    report("props.script.command.line", line, "not set; a SCRIPT job needs it", "set props.script.command.line to the command to run", true);
    return {};
  }
  report(
    "props.script.command.line",
    line,
    `runs ${command} without a shell, and ElasticJob's last argument (the ShardingContext JSON) is not added: the script reads the context as JSON on stdin or from SHARDLINE_* variables`,
    `start the agents that run it with --allow-script ${command}`,
  );
  return { script: { command, args } };
}

/** A command line split into words as Apache Commons Exec splits it: at blanks, quotes kept together. */
export function splitCommandLine(line: string): string[] {
  const words: string[] = [];
  for (const match of line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)) words.push(match[1] ?? match[2] ?? match[3]!);
  return words;
}

function httpExecutor(prop: (name: string) => string | undefined, report: Report): Record<string, unknown> {
  const url = prop("http.url");
  if (url === undefined) {
    report("props.http.url", undefined, "not set; an HTTP job needs it", "set props.http.url", true);
    return {};
  }
  const http: Record<string, unknown> = { method: (prop("http.method") ?? "GET").toUpperCase(), url };
  const data = prop("http.data");
  if (data !== undefined) http.body = data;
  const contentType = prop("http.content.type");
  if (contentType !== undefined) http.headers = { "Content-Type": contentType };
  const seconds = (name: string): number | undefined => {
    const value = prop(name);
    if (value === undefined) return undefined;
    const ms = Number(value);
    if (Number.isFinite(ms) && ms > 0) return Math.max(1, Math.ceil(ms / 1000));
    report(`props.${name}`, value, "is not a positive number of milliseconds", "write milliseconds, e.g. 3000", true);
    return undefined;
  };
  const connect = seconds("http.connect.timeout.milliseconds");
  if (connect !== undefined) http.connectTimeoutSeconds = Math.min(connect, 300);
  const read = seconds("http.read.timeout.milliseconds");
  if (read !== undefined) http.readTimeoutSeconds = Math.min(read, 86_400);
  report(
    "elasticJobType",
    "HTTP",
    "ElasticJob sent the ShardingContext in a shardingContext header; Shardline sends the execution's context as the JSON body when no http.data is given",
    "start the agents that run it with --allow-http",
  );
  return { http };
}
