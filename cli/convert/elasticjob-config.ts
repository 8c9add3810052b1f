import { isMap, parseDocument, type Document } from "yaml";
import { ShardlineError } from "../../shared/errors.js";
import { parseJavaProperties } from "./java-properties.js";

/**
 * ElasticJob job configuration as its users write it, read into one shape whatever the source:
 * - the Spring Boot starter's `application.yml`, jobs under `elasticjob.jobs.NAME`;
 * - the same as flat properties, `elasticjob.jobs.NAME.cron=0/5 * * * * ?` (application.properties);
 * - one job's configuration as ElasticJob keeps it in its registry (`jobName: ...` at the top,
 *   what `get /NAMESPACE/JOB/config` prints in ZooKeeper's shell).
 * Spring Boot's relaxed names are accepted (`sharding-total-count`, `shardingTotalCount`).
 */

/** One ElasticJob job: its name and settings, each under its canonical (camelCase) name. */
export interface ElasticJobDefinition {
  /** The job's name as ElasticJob knows it, e.g. `dataflowJob`. */
  name: string;
  /** Settings by canonical name (`shardingTotalCount`); unknown ones keep the name they were given. */
  settings: Map<string, string>;
  /** The job's `props`, by their own dotted names (`script.command.line`). */
  props: Map<string, string>;
}

/** What a configuration file holds besides its jobs' settings. */
export interface ElasticJobConfig {
  jobs: ElasticJobDefinition[];
  /** ElasticJob settings outside any job (`elasticjob.regCenter`, `elasticjob.tracing`), by group. */
  others: { key: string; value: string }[];
}

/** ElasticJob's job settings, by canonical name: from JobConfiguration, the Spring Boot starter and 2.x's Lite jobs. */
export const JOB_SETTINGS = [
  "jobName",
  "elasticJobClass",
  "elasticJobType",
  "jobBootstrapBeanName",
  "cron",
  "timeZone",
  "shardingTotalCount",
  "shardingItemParameters",
  "jobParameter",
  "monitorExecution",
  "failover",
  "misfire",
  "maxTimeDiffSeconds",
  "reconcileIntervalMinutes",
  "jobShardingStrategyType",
  "jobExecutorServiceHandlerType",
  "jobExecutorThreadPoolSizeProviderType",
  "jobErrorHandlerType",
  "jobListenerTypes",
  "description",
  "disabled",
  "overwrite",
  "label",
  "staticSharding",
  "jobExtraConfigurations",
  // ElasticJob 2.x names, still found in configurations carried forward.
  "jobShardingStrategyClass",
  "scriptCommandLine",
  "streamingProcess",
  "jobExceptionHandler",
  "executorServiceHandler",
  "monitorPort",
  "eventTraceRdbDataSource",
  "listener",
  "distributedListener",
] as const;

const BY_LOOSE_NAME = new Map<string, string>(JOB_SETTINGS.map((name) => [looseName(name), name]));

/**
 * Reads ElasticJob configuration from `text`: properties when `file` ends in `.properties` or
 * the text is not a YAML mapping, YAML otherwise. Throws ShardlineError (invalid-argument) for
 * YAML that does not parse.
 */
export function readElasticJobConfig(text: string, file: string): ElasticJobConfig {
  if (file.endsWith(".properties")) return bind(parseJavaProperties(text));
  const document = parseDocument(text);
  if (document.errors.length > 0) {
    // Properties text is usually valid YAML (one long string); YAML that fails may still be properties.
    if (looksLikeProperties(text)) return bind(parseJavaProperties(text));
    throw new ShardlineError(
      "invalid-argument",
      `${file}: not valid YAML (${document.errors[0]!.message.split("\n")[0]}); expected a Spring Boot application.yml or .properties file with elasticjob.jobs.NAME settings`,
      { field: "FILE", value: file },
    );
  }
  if (!isMap(document.contents)) return bind(parseJavaProperties(text));
  const flat = flatten(document);
  if (flat.has("jobName")) return registryJob(flat);
  return bind(flat);
}

function looksLikeProperties(text: string): boolean {
  return /^\s*elasticjob(\.|\[)/m.test(text) && /^\s*[^#!\s:=]+\s*=/m.test(text);
}

/** A YAML document as Spring Boot sees it: dotted keys to scalar text; a list of scalars joined with commas. */
function flatten(document: Document): Map<string, string> {
  const flat = new Map<string, string>();
  const visit = (prefix: string, value: unknown): void => {
    if (value === null || value === undefined) return;
    if (Array.isArray(value)) {
      if (value.every((item) => typeof item !== "object" || item === null)) flat.set(prefix, value.map(String).join(","));
      else value.forEach((item, index) => visit(`${prefix}[${index}]`, item));
    } else if (typeof value === "object") {
      for (const [key, item] of Object.entries(value)) visit(prefix === "" ? key : `${prefix}.${key}`, item);
    } else {
      flat.set(prefix, String(value));
    }
  };
  visit("", document.toJS());
  return flat;
}

const JOB_KEY = /^elasticjob\.jobs(?:\.([^.[\]]+)|\[([^\]]+)\])\.(.+)$/;

/** Groups Spring Boot properties into jobs: `elasticjob.jobs.NAME.FIELD` and `elasticjob.jobs[NAME].FIELD`. */
function bind(properties: ReadonlyMap<string, string>): ElasticJobConfig {
  const jobs = new Map<string, ElasticJobDefinition>();
  const others = new Map<string, string>();
  for (const [key, value] of properties) {
    const match = JOB_KEY.exec(key);
    if (match) {
      const name = match[1] ?? match[2]!;
      let job = jobs.get(name);
      if (job === undefined) {
        job = { name, settings: new Map(), props: new Map() };
        jobs.set(name, job);
      }
      addSetting(job, match[3]!, value);
    } else if (/^elasticjob[.[]/.test(key)) {
      // Reported by group (elasticjob.regCenter), not by each of its keys.
      const group = /^elasticjob\.([^.[]+)/.exec(key)?.[1] ?? key;
      if (!others.has(group)) others.set(group, key);
    }
  }
  return { jobs: [...jobs.values()], others: [...others].map(([group, key]) => ({ key: `elasticjob.${group}`, value: key })) };
}

/** One job as ElasticJob's registry keeps it: every top-level key is a setting of the job `jobName`. */
function registryJob(flat: ReadonlyMap<string, string>): ElasticJobConfig {
  const job: ElasticJobDefinition = { name: flat.get("jobName")!, settings: new Map(), props: new Map() };
  for (const [key, value] of flat) if (key !== "jobName") addSetting(job, key, value);
  return { jobs: [job], others: [] };
}

function addSetting(job: ElasticJobDefinition, field: string, value: string): void {
  const props = /^props(?:\.(.+)|\[([^\]]+)\])$/.exec(field);
  if (props) {
    job.props.set(props[1] ?? props[2]!, value);
    return;
  }
  // A list given item by item (jobListenerTypes[0]=a) is one comma-separated setting, as Spring binds it.
  const item = /^([^.[]+)\[\d+\]$/.exec(field);
  const name = item ? item[1]! : field;
  const nested = !item && /[.[]/.test(name);
  const base = nested ? name.replace(/[.[].*$/, "") : name;
  const canonical = BY_LOOSE_NAME.get(looseName(base)) ?? base;
  const previous = job.settings.get(canonical);
  // A setting with structure of its own (jobExtraConfigurations) is reported whole, not by its parts.
  if (nested) job.settings.set(canonical, "{...}");
  else job.settings.set(canonical, previous === undefined || !item ? value : `${previous},${value}`);
}

/** Spring Boot's relaxed binding: case, dashes and underscores do not matter. */
function looseName(name: string): string {
  return name.replace(/[-_]/g, "").toLowerCase();
}
