import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ListExecutionsRequestSchema } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import type { Execution } from "../../../shared/gen/shardline/v1/types_pb.js";
import { type ExecutionStateName, executionStateOf } from "./states.js";

/**
 * The executions page's filters, as its URL's query holds them so that a link shares them:
 * `job`, `shard`, `agent`, `state` (a state's name: failed, timed_out...), `since` and `until`
 * (ISO-8601 instants, or Unix milliseconds), `limit`.
 */
export interface ExecutionFilters {
  job: string;
  shard: number | undefined;
  agent: string;
  state: ExecutionStateName | "";
  /** Fires at or after, Unix ms. */
  since: number | undefined;
  /** Fires before, Unix ms (exclusive): also how the page goes to older executions. */
  until: number | undefined;
  limit: number;
}

export const DEFAULT_LIMIT = 50;
/** The controller's most per ListExecutions. */
export const MAX_LIMIT = 10_000;

/** The filters a query holds, and what in it could not be read (shown, never silently dropped). */
export function filtersFromQuery(query: URLSearchParams): { filters: ExecutionFilters; problems: string[] } {
  const problems: string[] = [];
  const text = (name: string): string => query.get(name)?.trim() ?? "";
  const shardText = text("shard");
  let shard: number | undefined;
  if (shardText !== "") {
    shard = /^\d{1,4}$/.test(shardText) ? Number(shardText) : undefined;
    if (shard === undefined) problems.push(`shard ${JSON.stringify(shardText)} is not a shard number (0 to 9999)`);
  }
  const stateText = text("state").toLowerCase();
  const state = stateText === "" || executionStateOf(stateText) !== undefined ? (stateText as ExecutionStateName | "") : "";
  if (stateText !== "" && state === "") problems.push(`state ${JSON.stringify(stateText)} is not an execution state`);
  const instant = (name: string): number | undefined => {
    const value = text(name);
    if (value === "") return undefined;
    const parsed = parseInstant(value);
    if (parsed === undefined) problems.push(`${name} ${JSON.stringify(value)} is not an instant (ISO-8601, e.g. 2026-12-07T16:00:00Z, or Unix milliseconds)`);
    return parsed;
  };
  const limitText = text("limit");
  let limit = DEFAULT_LIMIT;
  if (limitText !== "") {
    const parsed = /^\d+$/.test(limitText) ? Number(limitText) : NaN;
    if (parsed >= 1 && parsed <= MAX_LIMIT) limit = parsed;
    else problems.push(`limit ${JSON.stringify(limitText)} is not a number from 1 to ${MAX_LIMIT}`);
  }
  const filters = { job: text("job"), shard, agent: text("agent"), state, since: instant("since"), until: instant("until"), limit };
  return { filters, problems };
}

/** The query that holds `filters`, without the defaults, in a fixed order: `job=x&state=failed`. */
export function queryFromFilters(filters: ExecutionFilters): string {
  const query = new URLSearchParams();
  if (filters.job !== "") query.set("job", filters.job);
  if (filters.shard !== undefined) query.set("shard", String(filters.shard));
  if (filters.agent !== "") query.set("agent", filters.agent);
  if (filters.state !== "") query.set("state", filters.state);
  if (filters.since !== undefined) query.set("since", formatInstant(filters.since));
  if (filters.until !== undefined) query.set("until", formatInstant(filters.until));
  if (filters.limit !== DEFAULT_LIMIT) query.set("limit", String(filters.limit));
  return query.toString();
}

/** The ListExecutions request of `filters`; one more than the limit, to know whether older ones exist. */
export function listRequest(filters: ExecutionFilters): MessageInitShape<typeof ListExecutionsRequestSchema> {
  return {
    job: filters.job,
    agent: filters.agent,
    state: filters.state === "" ? undefined : executionStateOf(filters.state),
    ...(filters.shard === undefined ? {} : { shard: filters.shard }),
    sinceUnixMs: BigInt(filters.since ?? 0),
    untilUnixMs: BigInt(filters.until ?? 0),
    limit: Math.min(filters.limit + 1, MAX_LIMIT),
  };
}

/**
 * One page of a listing asked with listRequest: at most `limit` executions, and where the next
 * (older) page starts. Paging is by fire time (`until` is exclusive), so a fire is never split
 * across pages: the oldest fire is left for the next page unless it alone fills this one (then
 * the next page starts before it, and what it had past the limit is not shown).
 */
export function pageOf(executions: readonly Execution[], limit: number): { shown: readonly Execution[]; nextUntil: number | undefined } {
  if (executions.length <= limit) return { shown: executions, nextUntil: undefined };
  const page = executions.slice(0, limit);
  const oldest = page[page.length - 1]!.fireTimeUnixMs;
  const whole = page.filter((execution) => execution.fireTimeUnixMs !== oldest);
  if (whole.length === 0) return { shown: page, nextUntil: Number(oldest) };
  return { shown: whole, nextUntil: Number(oldest) + 1 };
}

/** An instant from ISO-8601 (a zone needed, or UTC assumed) or Unix milliseconds; undefined when neither. */
export function parseInstant(text: string): number | undefined {
  if (/^\d{1,15}$/.test(text)) return Number(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text)) return undefined;
  const zoned = /(Z|[+-]\d{2}:?\d{2})$/i.test(text) || !text.includes("T") ? text : `${text}Z`;
  const ms = Date.parse(zoned);
  return Number.isNaN(ms) ? undefined : ms;
}

/** An instant as a URL holds it: ISO-8601 in UTC, milliseconds only when there are some. */
export function formatInstant(ms: number): string {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}
