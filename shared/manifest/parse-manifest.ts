import { parseAllDocuments } from "yaml";
import { ShardlineError } from "../errors.js";
import { ENV_REFERENCE_ALLOWED, envReference } from "../security/env-reference.js";
import { validateSchedule, validateTimeZone } from "../schedule.js";
import {
  DEFAULT_START_TIMEOUT_SECONDS,
  FAILOVER_MODES,
  HTTP_METHODS,
  KUBERNETES_RESTART_POLICIES,
  MISFIRE_POLICIES,
  OVERLAP_POLICIES,
  STRATEGIES,
  type CustomStrategyName,
  type FailureSpec,
  type FireCompleteSpec,
  type HttpSpec,
  type JobSpec,
  type KubernetesPodTemplate,
  type KubernetesSpec,
  type ScriptSpec,
  type StrategyName,
} from "./job-spec.js";

/** The `apiVersion` and `kind` every job manifest carries, as a Kubernetes custom resource would. */
export const MANIFEST_API_VERSION = "shardline.dev/v1";
export const MANIFEST_KIND = "ShardedJob";

/** A manifest that passed validation: the normalised job and the text it came from. */
export interface ParsedManifest {
  spec: JobSpec;
  /** The original text, trimmed, kept so `get -o yaml` can show what the user applied. */
  manifest: string;
}

/** A manifest is small; a handful of aliases is plenty, and a low cap stops expansion bombs. */
const MAX_ALIAS_COUNT = 10;

/** The fields that say what a job runs; a job names exactly one. */
const EXECUTOR_FIELDS = ["handler", "script", "http", "kubernetes"] as const;
const EXECUTORS_ALLOWED = "exactly one of spec.handler, spec.script, spec.http and spec.kubernetes";

const FIELDS = {
  root: ["apiVersion", "kind", "metadata", "spec"],
  metadata: ["name", "labels"],
  spec: [
    "schedule",
    "timeZone",
    "shards",
    "shardParameters",
    "parameter",
    "handler",
    "script",
    "http",
    "kubernetes",
    "strategy",
    "failover",
    "misfire",
    "maxCatchUp",
    "overlap",
    "timeoutSeconds",
    "retries",
    "placement",
    "suspend",
    "priority",
    "daemon",
    "onFailure",
    "onFireComplete",
    "description",
  ],
  script: ["command", "args", "env", "killGraceSeconds"],
  http: ["method", "url", "headers", "body", "connectTimeoutSeconds", "readTimeoutSeconds"],
  kubernetes: ["template", "backoffLimit", "ttlSecondsAfterFinished", "logContainer", "startTimeoutSeconds"],
  podTemplate: ["metadata", "spec"],
  podMetadata: ["labels", "annotations"],
  onFailure: ["webhook"],
  onFireComplete: ["handler"],
  webhook: ["url", "headers"],
  retries: ["limit", "backoffSeconds"],
  placement: ["selector", "spreadBy"],
} as const;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const HANDLER_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
const SHARD_NUMBER = /^(0|[1-9][0-9]*)$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** An HTTP header name: an RFC 9110 token. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const NAME_ALLOWED = "a DNS-1123 label: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit";
const LABEL_KEY_ALLOWED =
  "label keys of 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, " +
  "optionally after a DNS subdomain prefix and '/' (e.g. example.com/team)";
const LABEL_VALUE_ALLOWED =
  "a string of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, or empty";
const HANDLER_ALLOWED = "a handler name of 1 to 128 characters: letters, digits, '.', '_', ':' or '-', starting with a letter or digit";
const COMMAND_ALLOWED = "a program name on the agent's PATH or an absolute path: a non-empty string without NUL";
const STRATEGY_ALLOWED =
  `one of ${STRATEGIES.join(", ")}, or custom:NAME where NAME is a DNS-1123 label naming a strategy ` +
  "the controller loaded with --strategy NAME=MODULE";
const URL_ALLOWED = "an absolute http:// or https:// URL, e.g. https://billing.internal/rollup";
const CONTAINER_NAME_ALLOWED = "a DNS-1123 label: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit";
const IMAGE_ALLOWED = "a container image reference without spaces, e.g. busybox:1.36 or registry.example.com/team/rollup@sha256:...";
/** The most topology levels spec.placement.spreadBy takes (cluster, zone, node). */
const MAX_SPREAD_LEVELS = 3;
const SPREAD_BY_ALLOWED =
  `a list of 1 to ${MAX_SPREAD_LEVELS} distinct agent label keys, outermost first, e.g. [zone, node] or [topology.kubernetes.io/zone]`;
/** The label prefix the agent writes on every Job and pod it makes; a template may not set it. */
const RESERVED_LABEL_PREFIX = "shardline.dev/";
/**
 * The largest pod template, as JSON: it travels in every execution's context, so a job with many
 * shards multiplies it. Real templates are a few KiB.
 */
const MAX_POD_TEMPLATE_BYTES = 32 * 1024;

type Fields = Record<string, unknown>;

/**
 * Reads one YAML or JSON job manifest (DESIGN.md "Job manifest") and returns the job with every
 * default filled in. Throws `ShardlineError` (invalid-argument) naming the dotted field path, the
 * value and what is allowed; unknown fields are errors too, so a typo never silently means a default.
 */
export function parseManifest(text: string): ParsedManifest {
  const manifest = text.trim();
  const root = mapping(readDocument(manifest), "", FIELDS.root);

  const apiVersion = root.apiVersion;
  if (apiVersion !== MANIFEST_API_VERSION) throw ShardlineError.invalid("apiVersion", apiVersion, JSON.stringify(MANIFEST_API_VERSION));
  if (root.kind !== MANIFEST_KIND) throw ShardlineError.invalid("kind", root.kind, JSON.stringify(MANIFEST_KIND));

  const metadata = mapping(root.metadata, "metadata", FIELDS.metadata);
  const name = metadata.name;
  if (typeof name !== "string" || name.length > 63 || !DNS_LABEL.test(name)) {
    throw ShardlineError.invalid("metadata.name", name, NAME_ALLOWED);
  }
  const labels = labelMap(metadata.labels, "metadata.labels");

  const spec = specFields(root.spec);
  return { spec: { name, labels, ...spec }, manifest };
}

/**
 * True when two jobs mean the same thing, ignoring the order of map entries: applying the same
 * manifest twice changes nothing.
 */
export function specEquals(a: JobSpec, b: JobSpec): boolean {
  return (
    a.name === b.name &&
    a.description === b.description &&
    a.schedule === b.schedule &&
    a.timeZone === b.timeZone &&
    a.shards === b.shards &&
    a.parameter === b.parameter &&
    a.handler === b.handler &&
    scriptEquals(a.script, b.script) &&
    httpEquals(a.http, b.http) &&
    kubernetesEquals(a.kubernetes, b.kubernetes) &&
    a.strategy === b.strategy &&
    a.failover === b.failover &&
    a.misfire === b.misfire &&
    a.maxCatchUp === b.maxCatchUp &&
    a.overlap === b.overlap &&
    a.timeoutSeconds === b.timeoutSeconds &&
    a.retries.limit === b.retries.limit &&
    a.retries.backoffSeconds === b.retries.backoffSeconds &&
    a.suspend === b.suspend &&
    (a.daemon ?? false) === (b.daemon ?? false) &&
    failureEquals(a.onFailure, b.onFailure) &&
    a.onFireComplete?.handler === b.onFireComplete?.handler &&
    (a.priority ?? 0) === (b.priority ?? 0) &&
    recordEquals(a.labels, b.labels) &&
    recordEquals(a.shardParameters, b.shardParameters) &&
    recordEquals(a.placement.selector, b.placement.selector) &&
    listEquals(a.placement.spreadBy ?? [], b.placement.spreadBy ?? [])
  );
}

function readDocument(text: string): unknown {
  const documents = parseAllDocuments(text, { uniqueKeys: true });
  const allowed = "one YAML or JSON document describing a ShardedJob";
  if ("empty" in documents || documents.length === 0) throw ShardlineError.invalid("manifest", text, allowed);
  if (documents.length > 1) throw ShardlineError.invalid("manifest", `${documents.length} documents`, allowed);
  const [document] = documents;
  // Warnings (e.g. an unknown !tag) would silently change a value's type; treat them as errors.
  const problem = document?.errors[0] ?? document?.warnings[0];
  if (problem !== undefined || document === undefined) {
    throw ShardlineError.invalid("manifest", firstLine(problem?.message ?? ""), allowed);
  }
  try {
    return document.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    // What fails here is an alias bomb: the yaml library's message says so, not what the limit is.
    const aliases = `${allowed}, using an anchor through aliases (*name) at most ${MAX_ALIAS_COUNT} times, fewer when it holds aliases itself (a fixed limit, no flag raises it)`;
    throw ShardlineError.invalid("manifest", firstLine(err instanceof Error ? err.message : String(err)), aliases);
  }
}

function specFields(value: unknown): Omit<JobSpec, "name" | "labels"> {
  const spec = mapping(value, "spec", FIELDS.spec);
  const executor = executorFields(spec);

  const timeZone = optionalString(spec, "timeZone", "spec.timeZone") ?? "UTC";
  validateTimeZone(timeZone, "spec.timeZone");
  const schedule = optionalString(spec, "schedule", "spec.schedule");
  if (schedule !== undefined) validateSchedule(schedule, timeZone, "spec.schedule");
  const daemon = boolean(spec.daemon, "spec.daemon") ?? false;
  if (daemon && schedule !== undefined) {
    throw ShardlineError.invalid(
      "spec.schedule",
      schedule,
      "no spec.schedule when spec.daemon is true: a daemon job runs continuously and has no schedule",
    );
  }
  const onFailure = failureSpec(spec.onFailure);
  const onFireComplete = fireCompleteSpec(spec.onFireComplete);
  if (daemon && onFireComplete !== undefined) {
    throw ShardlineError.invalid(
      "spec.onFireComplete",
      spec.onFireComplete,
      "no spec.onFireComplete when spec.daemon is true: a daemon job has no fires that complete",
    );
  }

  const shards = integer(spec.shards, "spec.shards", 1, 10_000) ?? 1;
  const retries = mapping(spec.retries ?? {}, "spec.retries", FIELDS.retries);
  const placement = mapping(spec.placement ?? {}, "spec.placement", FIELDS.placement);
  const strategyName = strategy(spec.strategy) ?? "sticky";

  return {
    description: optionalString(spec, "description", "spec.description") ?? "",
    ...(schedule === undefined ? {} : { schedule }),
    timeZone,
    shards,
    shardParameters: shardParameters(spec.shardParameters, shards),
    parameter: optionalString(spec, "parameter", "spec.parameter") ?? "",
    ...executor,
    strategy: strategyName,
    failover: oneOf(spec.failover, "spec.failover", FAILOVER_MODES) ?? "fenced",
    misfire: oneOf(spec.misfire, "spec.misfire", MISFIRE_POLICIES) ?? "fire-once",
    maxCatchUp: integer(spec.maxCatchUp, "spec.maxCatchUp", 1, 1000) ?? 10,
    overlap: oneOf(spec.overlap, "spec.overlap", OVERLAP_POLICIES) ?? "forbid",
    timeoutSeconds: integer(spec.timeoutSeconds, "spec.timeoutSeconds", 0, 604_800) ?? 0,
    retries: {
      limit: integer(retries.limit, "spec.retries.limit", 0, 100) ?? 0,
      backoffSeconds: integer(retries.backoffSeconds, "spec.retries.backoffSeconds", 0, 86_400) ?? 10,
    },
    placement: placementSpec(placement, strategyName),
    suspend: boolean(spec.suspend, "spec.suspend") ?? false,
    priority: integer(spec.priority, "spec.priority", -1000, 1000) ?? 0,
    daemon,
    ...(onFailure === undefined ? {} : { onFailure }),
    ...(onFireComplete === undefined ? {} : { onFireComplete }),
  };
}

/** spec.placement: the selector, and the topology labels to spread shards across (only with sticky). */
function placementSpec(placement: Fields, strategyName: string): JobSpec["placement"] {
  const selector = labelMap(placement.selector, "spec.placement.selector");
  if (absent(placement.spreadBy)) return { selector };
  const path = "spec.placement.spreadBy";
  const value = placement.spreadBy;
  if (!Array.isArray(value) || value.length > MAX_SPREAD_LEVELS || value.some((key) => typeof key !== "string" || !isLabelKey(key)) || new Set(value).size !== value.length) {
    throw ShardlineError.invalid(path, value, SPREAD_BY_ALLOWED);
  }
  if (value.length > 0 && strategyName !== "sticky") {
    throw ShardlineError.invalid(path, value, `no spreadBy with spec.strategy ${strategyName}: spreading works only with sticky, the default strategy`);
  }
  return value.length === 0 ? { selector } : { selector, spreadBy: value as string[] };
}

/** spec.strategy: a built-in name, or `custom:NAME` for a strategy the controller loads. */
function strategy(value: unknown): StrategyName | CustomStrategyName | undefined {
  if (absent(value)) return undefined;
  const builtIn = STRATEGIES.find((candidate) => candidate === value);
  if (builtIn !== undefined) return builtIn;
  if (typeof value === "string" && value.startsWith("custom:")) {
    const name = value.slice("custom:".length);
    if (name.length <= 63 && DNS_LABEL.test(name)) return `custom:${name}`;
  }
  throw ShardlineError.invalid("spec.strategy", value, STRATEGY_ALLOWED);
}

/** spec.onFailure; one without a webhook means the default, logging, and is left out. */
function failureSpec(value: unknown): FailureSpec | undefined {
  if (absent(value)) return undefined;
  const onFailure = mapping(value, "spec.onFailure", FIELDS.onFailure);
  if (absent(onFailure.webhook)) return undefined;
  const webhook = mapping(onFailure.webhook, "spec.onFailure.webhook", FIELDS.webhook);
  return {
    webhook: {
      url: httpUrl(webhook.url, "spec.onFailure.webhook.url"),
      headers: headers(webhook.headers, "spec.onFailure.webhook.headers"),
    },
  };
}

/** spec.onFireComplete: the in-process handler run once when every shard of a fire has finished. */
function fireCompleteSpec(value: unknown): FireCompleteSpec | undefined {
  if (absent(value)) return undefined;
  const onFireComplete = mapping(value, "spec.onFireComplete", FIELDS.onFireComplete);
  const handler = onFireComplete.handler;
  if (typeof handler !== "string" || handler.length > 128 || !HANDLER_NAME.test(handler)) {
    throw ShardlineError.invalid("spec.onFireComplete.handler", handler, HANDLER_ALLOWED);
  }
  return { handler };
}

/** spec.handler, spec.script, spec.http or spec.kubernetes: exactly one is given; handler is "" for the others. */
function executorFields(spec: Fields): Pick<JobSpec, "handler" | "script" | "http" | "kubernetes"> {
  // An empty handler counts as none given: it is what a script, http or kubernetes job's spec holds.
  const given = EXECUTOR_FIELDS.filter((field) => !absent(spec[field]) && spec[field] !== "");
  if (given.length === 0) {
    throw ShardlineError.invalid("spec.handler", spec.handler, `exactly one of spec.handler (${HANDLER_ALLOWED}), spec.script, spec.http or spec.kubernetes`);
  }
  if (given.length > 1) {
    const [first, second] = given as [string, string];
    throw ShardlineError.invalid(`spec.${second}`, spec[second], `${EXECUTORS_ALLOWED}; spec.${first} is given too`);
  }
  if (given[0] === "script") return { handler: "", script: scriptSpec(spec.script) };
  if (given[0] === "http") return { handler: "", http: httpSpec(spec.http) };
  if (given[0] === "kubernetes") return { handler: "", kubernetes: kubernetesSpec(spec.kubernetes) };
  const handler = spec.handler;
  if (typeof handler !== "string" || handler.length > 128 || !HANDLER_NAME.test(handler)) {
    throw ShardlineError.invalid("spec.handler", handler, HANDLER_ALLOWED);
  }
  return { handler };
}

function scriptSpec(value: unknown): ScriptSpec {
  const script = mapping(value, "spec.script", FIELDS.script);
  const command = script.command;
  if (typeof command !== "string" || command === "" || command.includes("\0")) {
    throw ShardlineError.invalid("spec.script.command", command, COMMAND_ALLOWED);
  }
  return {
    command,
    args: stringList(script.args, "spec.script.args"),
    env: environment(script.env, "spec.script.env"),
    killGraceSeconds: integer(script.killGraceSeconds, "spec.script.killGraceSeconds", 0, 3600) ?? 10,
  };
}

function httpSpec(value: unknown): HttpSpec {
  const http = mapping(value, "spec.http", FIELDS.http);
  return {
    method: oneOf(http.method, "spec.http.method", HTTP_METHODS) ?? "POST",
    url: httpUrl(http.url, "spec.http.url"),
    headers: headers(http.headers, "spec.http.headers"),
    body: optionalString(http, "body", "spec.http.body") ?? "",
    connectTimeoutSeconds: integer(http.connectTimeoutSeconds, "spec.http.connectTimeoutSeconds", 1, 300) ?? 10,
    readTimeoutSeconds: integer(http.readTimeoutSeconds, "spec.http.readTimeoutSeconds", 1, 86_400) ?? 60,
  };
}

/**
 * spec.kubernetes. The template is checked where Shardline depends on it (what the agent sets
 * must stay the agent's; the log container must exist; a Job's pods may not restart Always);
 * the rest of the pod spec is Kubernetes' own schema, which the API server checks.
 */
function kubernetesSpec(value: unknown): KubernetesSpec {
  const kubernetes = mapping(value, "spec.kubernetes", FIELDS.kubernetes);
  const template = podTemplate(kubernetes.template);
  const containerNames = template.spec.containers.map((container) => container.name as string);
  const logContainer = optionalString(kubernetes, "logContainer", "spec.kubernetes.logContainer") ?? containerNames[0]!;
  if (!containerNames.includes(logContainer)) {
    throw ShardlineError.invalid("spec.kubernetes.logContainer", logContainer, `the name of one of the template's containers: ${containerNames.join(", ")}`);
  }
  return {
    template,
    backoffLimit: integer(kubernetes.backoffLimit, "spec.kubernetes.backoffLimit", 0, 100) ?? 0,
    ttlSecondsAfterFinished: integer(kubernetes.ttlSecondsAfterFinished, "spec.kubernetes.ttlSecondsAfterFinished", 0, 2_592_000) ?? 3600,
    logContainer,
    startTimeoutSeconds: integer(kubernetes.startTimeoutSeconds, "spec.kubernetes.startTimeoutSeconds", 0, 86_400) ?? DEFAULT_START_TIMEOUT_SECONDS,
  };
}

function podTemplate(value: unknown): KubernetesPodTemplate {
  const path = "spec.kubernetes.template";
  const template = mapping(value, path, FIELDS.podTemplate);
  const metadata = mapping(template.metadata ?? {}, `${path}.metadata`, FIELDS.podMetadata);
  const labels = labelMap(metadata.labels, `${path}.metadata.labels`);
  for (const key of Object.keys(labels)) {
    if (key.startsWith(RESERVED_LABEL_PREFIX)) {
      throw ShardlineError.invalid(`${path}.metadata.labels`, key, `label keys outside ${RESERVED_LABEL_PREFIX}, which the agent sets on every pod it makes`);
    }
  }
  const annotations = annotationMap(metadata.annotations, `${path}.metadata.annotations`);
  if (!isMapping(template.spec)) throw ShardlineError.invalid(`${path}.spec`, template.spec, "a Kubernetes PodSpec: a mapping with at least containers");
  const spec = template.spec;
  const names = new Set<string>();
  const containers = containerList(spec.containers, `${path}.spec.containers`, names, true);
  if (!absent(spec.initContainers)) containerList(spec.initContainers, `${path}.spec.initContainers`, names, false);
  const restartPolicy = oneOf(spec.restartPolicy, `${path}.spec.restartPolicy`, KUBERNETES_RESTART_POLICIES) ?? "Never";
  const result: KubernetesPodTemplate = { metadata: { labels, annotations }, spec: { ...spec, containers, restartPolicy } };
  const bytes = Buffer.byteLength(JSON.stringify(result));
  if (bytes > MAX_POD_TEMPLATE_BYTES) {
    throw ShardlineError.invalid(path, `${bytes} bytes of JSON`, `a pod template of at most ${MAX_POD_TEMPLATE_BYTES} bytes as JSON, a fixed limit (no flag raises it): mount large configuration from a ConfigMap`);
  }
  return result;
}

/** A list of containers, each with a name unique in the pod (`names` gathers them) and an image. */
function containerList(value: unknown, path: string, names: Set<string>, required: boolean): Record<string, unknown>[] {
  if (!Array.isArray(value) || (required && value.length === 0)) {
    throw ShardlineError.invalid(path, value, required ? "a list of at least one container, each with a name and an image" : "a list of containers, each with a name and an image");
  }
  return value.map((item: unknown, index) => {
    if (!isMapping(item)) throw ShardlineError.invalid(`${path}.${index}`, item, "a Kubernetes Container: a mapping with at least name and image");
    const { name, image } = item;
    if (typeof name !== "string" || name.length > 63 || !DNS_LABEL.test(name)) throw ShardlineError.invalid(`${path}.${index}.name`, name, CONTAINER_NAME_ALLOWED);
    if (names.has(name)) throw ShardlineError.invalid(`${path}.${index}.name`, name, "a container name used once in the pod, init containers included");
    names.add(name);
    if (typeof image !== "string" || image === "" || /\s/.test(image)) throw ShardlineError.invalid(`${path}.${index}.image`, image, IMAGE_ALLOWED);
    return item;
  });
}

/** Kubernetes annotations: label-style keys, any string values. */
function annotationMap(value: unknown, path: string): Record<string, string> {
  const result: Record<string, string> = {};
  if (absent(value)) return result;
  if (!isMapping(value)) throw ShardlineError.invalid(path, value, "a mapping of annotation keys to string values");
  for (const [key, text] of Object.entries(value)) {
    if (!isLabelKey(key)) throw ShardlineError.invalid(path, key, LABEL_KEY_ALLOWED);
    if (typeof text !== "string") throw ShardlineError.invalid(`${path}.${key}`, text, "a string (quote numbers and booleans)");
    result[key] = text;
  }
  return result;
}

function httpUrl(value: unknown, path: string): string {
  if (typeof value !== "string") throw ShardlineError.invalid(path, value, URL_ALLOWED);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw ShardlineError.invalid(path, value, URL_ALLOWED);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "") throw ShardlineError.invalid(path, value, URL_ALLOWED);
  return value;
}

/** A list of strings; like Kubernetes' args, numbers must be quoted so nothing is reformatted. */
function stringList(value: unknown, path: string): string[] {
  if (absent(value)) return [];
  if (!Array.isArray(value)) throw ShardlineError.invalid(path, value, "a list of strings");
  return value.map((item: unknown, index) => {
    if (typeof item !== "string" || item.includes("\0")) {
      throw ShardlineError.invalid(`${path}.${index}`, item, "a string without NUL (quote numbers and booleans)");
    }
    return item;
  });
}

function environment(value: unknown, path: string): Record<string, string> {
  const result: Record<string, string> = {};
  if (absent(value)) return result;
  if (!isMapping(value)) throw ShardlineError.invalid(path, value, "a mapping of variable names to string values");
  for (const [name, text] of Object.entries(value)) {
    if (!ENV_NAME.test(name)) throw ShardlineError.invalid(path, name, "variable names of letters, digits and '_', not starting with a digit");
    if (typeof text !== "string" || text.includes("\0")) {
      throw ShardlineError.invalid(`${path}.${name}`, text, "a string without NUL (quote numbers and booleans)");
    }
    result[name] = text;
  }
  return result;
}

function headers(value: unknown, path: string): Record<string, string> {
  const result: Record<string, string> = {};
  if (absent(value)) return result;
  if (!isMapping(value)) throw ShardlineError.invalid(path, value, "a mapping of header names to string values");
  const seen = new Set<string>();
  for (const [name, text] of Object.entries(value)) {
    if (!HEADER_NAME.test(name)) throw ShardlineError.invalid(path, name, "header names of letters, digits and !#$%&'*+.^_`|~-");
    // Header names are case-insensitive: two spellings of one would leave which one is sent to chance.
    if (seen.has(name.toLowerCase())) throw ShardlineError.invalid(path, name, "each header name once, in any letter case");
    seen.add(name.toLowerCase());
    // A line break in a value would let it smuggle in headers of its own.
    if (typeof text !== "string" || /[\r\n\0]/.test(text)) {
      throw ShardlineError.invalid(`${path}.${name}`, text, "a string without line breaks or NUL (quote numbers and booleans)");
    }
    if (envReference(text) === "") throw ShardlineError.invalid(`${path}.${name}`, text, ENV_REFERENCE_ALLOWED);
    result[name] = text;
  }
  return result;
}

function shardParameters(value: unknown, shards: number): Record<number, string> {
  const result: Record<number, string> = {};
  if (absent(value)) return result;
  if (!isMapping(value)) {
    throw ShardlineError.invalid("spec.shardParameters", value, 'a mapping from shard number to parameter, e.g. {"0": beijing}');
  }
  for (const [key, parameter] of Object.entries(value)) {
    const field = `spec.shardParameters.${key}`;
    if (!SHARD_NUMBER.test(key) || Number(key) >= shards) {
      throw ShardlineError.invalid(field, key, `a shard number from 0 to ${shards - 1} (spec.shards is ${shards})`);
    }
    if (typeof parameter === "string") result[Number(key)] = parameter;
    else if (typeof parameter === "number" && Number.isFinite(parameter)) result[Number(key)] = String(parameter);
    else throw ShardlineError.invalid(field, parameter, "a string (a number is taken as its decimal text)");
  }
  return result;
}

function labelMap(value: unknown, path: string): Record<string, string> {
  const result: Record<string, string> = {};
  if (absent(value)) return result;
  if (!isMapping(value)) throw ShardlineError.invalid(path, value, "a mapping of label keys to string values");
  for (const [key, labelValue] of Object.entries(value)) {
    if (!isLabelKey(key)) throw ShardlineError.invalid(path, key, LABEL_KEY_ALLOWED);
    if (typeof labelValue !== "string" || (labelValue !== "" && (labelValue.length > 63 || !LABEL_NAME.test(labelValue)))) {
      throw ShardlineError.invalid(`${path}.${key}`, labelValue, LABEL_VALUE_ALLOWED);
    }
    result[key] = labelValue;
  }
  return result;
}

function isLabelKey(key: string): boolean {
  const slash = key.indexOf("/");
  const prefix = slash < 0 ? undefined : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) return false;
  return name.length <= 63 && LABEL_NAME.test(name);
}

/** A mapping whose keys are all in `allowed`; the path "" is the document itself. */
function mapping(value: unknown, path: string, allowed: readonly string[]): Fields {
  if (!isMapping(value)) {
    throw ShardlineError.invalid(path || "manifest", value, `a mapping with the fields ${allowed.join(", ")}`);
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      const field = path ? `${path}.${key}` : key;
      throw ShardlineError.invalid(field, value[key], `a known field; ${path || "a manifest"} has only ${allowed.join(", ")}`);
    }
  }
  return value;
}

function isMapping(value: unknown): value is Fields {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** YAML writes an empty `field:` as null; like kubectl, that means "not given". */
function absent(value: unknown): value is undefined | null {
  return value === undefined || value === null;
}

function optionalString(fields: Fields, key: string, path: string): string | undefined {
  const value = fields[key];
  if (absent(value)) return undefined;
  if (typeof value !== "string") throw ShardlineError.invalid(path, value, "a string");
  return value;
}

function integer(value: unknown, path: string, min: number, max: number): number | undefined {
  if (absent(value)) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw ShardlineError.invalid(path, value, `an integer from ${min} to ${max}`);
  }
  return value;
}

function oneOf<T extends string>(value: unknown, path: string, allowed: readonly T[]): T | undefined {
  if (absent(value)) return undefined;
  const match = allowed.find((candidate) => candidate === value);
  if (match === undefined) throw ShardlineError.invalid(path, value, `one of ${allowed.join(", ")}`);
  return match;
}

function boolean(value: unknown, path: string): boolean | undefined {
  if (absent(value)) return undefined;
  if (typeof value !== "boolean") throw ShardlineError.invalid(path, value, "true or false");
  return value;
}

function scriptEquals(a: ScriptSpec | undefined, b: ScriptSpec | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.command === b.command &&
    a.killGraceSeconds === b.killGraceSeconds &&
    a.args.length === b.args.length &&
    a.args.every((arg, index) => arg === b.args[index]) &&
    recordEquals(a.env, b.env)
  );
}

function httpEquals(a: HttpSpec | undefined, b: HttpSpec | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.method === b.method &&
    a.url === b.url &&
    a.body === b.body &&
    a.connectTimeoutSeconds === b.connectTimeoutSeconds &&
    a.readTimeoutSeconds === b.readTimeoutSeconds &&
    recordEquals(a.headers, b.headers)
  );
}

function kubernetesEquals(a: KubernetesSpec | undefined, b: KubernetesSpec | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return canonicalJson(a) === canonicalJson(b);
}

/** JSON with every mapping's keys sorted: equal for values that differ only in key order. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) =>
    isMapping(item) ? Object.fromEntries(Object.keys(item).sort().map((key) => [key, item[key]])) : item,
  );
}

function failureEquals(a: FailureSpec | undefined, b: FailureSpec | undefined): boolean {
  const hookA = a?.webhook;
  const hookB = b?.webhook;
  if (hookA === undefined || hookB === undefined) return hookA === hookB;
  return hookA.url === hookB.url && recordEquals(hookA.headers, hookB.headers);
}

function listEquals(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((item, index) => item === b[index]);
}

function recordEquals(a: Record<string | number, string>, b: Record<string | number, string>): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && a[key] === b[key]);
}

function firstLine(message: string): string {
  return message.split("\n", 1)[0]?.replace(/:$/, "") ?? message;
}
