import { parseStoreUrl } from "../../controller/store/store-url.js";
import { ShardlineError } from "../../shared/errors.js";

/**
 * Parsers of flag values. Each throws ShardlineError "invalid-argument" naming the flag, the
 * value and what is accepted, which the CLI prints as its one-line usage error (exit code 2).
 */

/** An integer flag within [min, max]. */
export function parseInteger(value: string, field: string, min: number, max: number): number {
  const allowed = `an integer from ${min} to ${max}`;
  if (!/^[+-]?\d+$/.test(value.trim())) throw ShardlineError.invalid(field, value, allowed);
  const number = Number(value);
  if (!Number.isSafeInteger(number) || number < min || number > max) throw ShardlineError.invalid(field, value, allowed);
  return number;
}

/** A decimal number of seconds within [min, max]. */
export function parseSeconds(value: string, field: string, min: number, max: number): number {
  const allowed = `a number of seconds from ${min} to ${max}`;
  if (!/^\+?(\d+(\.\d*)?|\.\d+)$/.test(value.trim())) throw ShardlineError.invalid(field, value, allowed);
  const number = Number(value);
  if (!Number.isFinite(number) || number < min || number > max) throw ShardlineError.invalid(field, value, allowed);
  return number;
}

/** Kubernetes-style label keys (an optional DNS prefix and a name) and values. */
const LABEL_KEY = /^(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const LABEL_ALLOWED =
  "KEY=VALUE, where KEY is letters, digits, '-', '_', '.' (optionally prefixed by DNS-NAME/) and VALUE is up to 63 such characters or empty";

/** One `--label KEY=VALUE`, added to the labels gathered from earlier ones (a repeated key is an error). */
export function parseLabel(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const equals = value.indexOf("=");
  if (equals <= 0) throw ShardlineError.invalid("--label", value, LABEL_ALLOWED);
  const key = value.slice(0, equals);
  const labelValue = value.slice(equals + 1);
  if (!LABEL_KEY.test(key) || !LABEL_VALUE.test(labelValue)) throw ShardlineError.invalid("--label", value, LABEL_ALLOWED);
  if (Object.hasOwn(previous, key)) {
    throw ShardlineError.invalid("--label", value, `each label key once; "${key}" was already given`);
  }
  return { ...previous, [key]: labelValue };
}

/** One label copied from the agent's Node: `from` on the Node, `to` on the agent. */
export interface NodeLabelFlag {
  from: string;
  to: string;
}

const LABEL_FROM_NODE_ALLOWED =
  "NODE_LABEL or NODE_LABEL=AGENT_LABEL, label keys such as topology.kubernetes.io/zone or topology.kubernetes.io/zone=zone, each agent label once";

/** One `--label-from-node NODE_LABEL[=AGENT_LABEL]`, added to the ones gathered from earlier flags. */
export function parseLabelFromNode(value: string, previous: NodeLabelFlag[] = []): NodeLabelFlag[] {
  const [from = "", to = from, ...rest] = value.split("=");
  if (rest.length > 0 || !LABEL_KEY.test(from) || !LABEL_KEY.test(to) || previous.some((copy) => copy.to === to)) {
    throw ShardlineError.invalid("--label-from-node", value, LABEL_FROM_NODE_ALLOWED);
  }
  return [...previous, { from, to }];
}

/** One `--allow-script COMMAND`, added to the commands gathered from earlier ones. */
export function parseAllowScript(value: string, previous: string[] = []): string[] {
  if (value === "" || value.includes("\0")) {
    throw ShardlineError.invalid("--allow-script", value, "a command name on PATH or an absolute path, as jobs name it in spec.script.command");
  }
  return previous.includes(value) ? previous : [...previous, value];
}

const SHARDS_ALLOWED = "shard numbers and ranges separated by commas, e.g. 0,2 or 0-3,7";

/** `--shards 0,2,5-7`: the distinct shard numbers, ascending. */
export function parseShardList(value: string): number[] {
  const shards = new Set<number>();
  for (const part of value.split(",")) {
    const range = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(part);
    if (!range) throw ShardlineError.invalid("--shards", value, SHARDS_ALLOWED);
    const first = Number(range[1]);
    const last = range[2] === undefined ? first : Number(range[2]);
    if (last < first || first > 9999 || last > 9999) throw ShardlineError.invalid("--shards", value, `${SHARDS_ALLOWED}, within 0..9999`);
    for (let shard = first; shard <= last; shard++) shards.add(shard);
  }
  return [...shards].sort((a, b) => a - b);
}

/** `--store`: `sqlite:PATH` or `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`, checked for shape only. */
export function parseStore(value: string): string {
  parseStoreUrl(value);
  return value;
}

const AGENT_ID = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/;

/** `--id`: letters, digits, '.', '_', '-', starting and ending with a letter or digit. */
export function parseAgentId(value: string): string {
  if (!AGENT_ID.test(value)) {
    throw ShardlineError.invalid("--id", value, "1 to 253 letters, digits, '.', '_' or '-', starting and ending with a letter or digit");
  }
  return value;
}

/**
 * The default agent id: the hostname, lowercased, with anything an id cannot hold replaced by
 * '-', so `My_Host.local` becomes `my_host.local` and a pod name stays as it is.
 */
export function defaultAgentId(hostname: string): string {
  const cleaned = hostname
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "")
    .slice(0, 253)
    .replace(/[^a-z0-9]+$/, "");
  return cleaned === "" ? "agent" : cleaned;
}

/**
 * A point in time for --since/--until: an ISO-8601 instant (`2026-05-01T10:00:00Z`), or a
 * duration back from `now` (`90s`, `15m`, `2h`, `7d`). Returns Unix milliseconds.
 */
export function parseInstant(value: string, field: string, now: number = Date.now()): number {
  const relative = /^(\d+)(s|m|h|d)$/.exec(value.trim());
  if (relative !== null) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2] as "s" | "m" | "h" | "d"];
    return now - Number(relative[1]) * unit;
  }
  const parsed = /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(value.trim()) ? Date.parse(value) : NaN;
  if (Number.isNaN(parsed) || parsed < 0) {
    throw ShardlineError.invalid(field, value, "an ISO-8601 time such as 2026-05-01T10:00:00Z, or a duration ago such as 90s, 15m, 2h, 7d");
  }
  return parsed;
}

/** --trace-url-template: an http(s) URL with {traceId} in it. */
export function parseTraceUrlTemplate(value: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value.replaceAll("{traceId}", "0"));
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:") || !value.includes("{traceId}")) {
    throw ShardlineError.invalid("--trace-url-template", value, "an http:// or https:// URL with {traceId} where the trace id goes, e.g. http://jaeger:16686/trace/{traceId}");
  }
  return value;
}
