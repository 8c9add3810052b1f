import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionSchema, ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { DEFAULT_LIMIT, filtersFromQuery, listRequest, pageOf, parseInstant, queryFromFilters } from "./execution-filters.js";

const execution = (fire: number, shard: number) => create(ExecutionSchema, { id: `j/${fire}/${shard}/1`, job: "j", shard, fireTimeUnixMs: BigInt(fire), attempt: 1 });

describe("the executions page's filters in its URL", () => {
  it("reads every filter from the query, and writes them back the same, defaults left out", () => {
    const query = "job=billing-rollup&shard=3&agent=w-1&state=failed&since=2026-12-07T16%3A00%3A00Z&until=2026-12-07T17%3A00%3A00.500Z&limit=20";
    const { filters, problems } = filtersFromQuery(new URLSearchParams(query));
    expect(problems).toEqual([]);
    expect(filters).toEqual({
      job: "billing-rollup",
      shard: 3,
      agent: "w-1",
      state: "failed",
      since: Date.UTC(2026, 11, 7, 16),
      until: Date.UTC(2026, 11, 7, 17) + 500,
      limit: 20,
    });
    expect(queryFromFilters(filters)).toBe(query);
    expect(queryFromFilters(filtersFromQuery(new URLSearchParams("")).filters)).toBe("");
    expect(queryFromFilters(filtersFromQuery(new URLSearchParams("job=x&state=timed_out")).filters)).toBe("job=x&state=timed_out");
  });

  it("keeps shard 0 (not 'any') and reads Unix milliseconds as instants too", () => {
    const { filters } = filtersFromQuery(new URLSearchParams("shard=0&since=1767225600000"));
    expect(filters.shard).toBe(0);
    expect(filters.since).toBe(1767225600000);
    expect(listRequest(filters)).toMatchObject({ shard: 0, sinceUnixMs: 1767225600000n, untilUnixMs: 0n });
    expect(listRequest(filtersFromQuery(new URLSearchParams("")).filters)).not.toHaveProperty("shard");
  });

  it("says what it could not read instead of dropping it silently", () => {
    const { filters, problems } = filtersFromQuery(new URLSearchParams("shard=two&state=exploded&since=yesterday&limit=0"));
    expect(filters).toMatchObject({ shard: undefined, state: "", since: undefined, limit: DEFAULT_LIMIT });
    expect(problems).toHaveLength(4);
    expect(problems[0]).toContain('shard "two"');
    expect(problems[1]).toContain('state "exploded"');
  });

  it("asks for the state by its enum value and one more execution than the page shows", () => {
    const { filters } = filtersFromQuery(new URLSearchParams("job=x&state=timed_out&limit=25"));
    expect(listRequest(filters)).toMatchObject({ job: "x", state: ExecutionState.TIMED_OUT, limit: 26 });
  });

  it("pages by fire without splitting one: the oldest fire waits for the next page, which starts just after it", () => {
    const listed = [execution(3000, 0), execution(3000, 1), execution(2000, 0), execution(2000, 1), execution(1000, 0)];
    expect(pageOf(listed.slice(0, 4), 4)).toEqual({ shown: listed.slice(0, 4), nextUntil: undefined });
    const page = pageOf(listed.slice(0, 4).concat(listed[4]!), 3);
    expect(page.shown.map((e) => e.id)).toEqual(["j/3000/0/1", "j/3000/1/1"]);
    expect(page.nextUntil).toBe(2001);
    // A fire larger than a page: shown cut, and the next page starts before it.
    const one = [execution(5000, 0), execution(5000, 1), execution(5000, 2), execution(4000, 0)];
    expect(pageOf(one, 2)).toEqual({ shown: one.slice(0, 2), nextUntil: 5000 });
  });

  it("reads ISO-8601 with or without a zone (UTC then), or a date alone", () => {
    expect(parseInstant("2026-12-07T16:00:00Z")).toBe(Date.UTC(2026, 11, 7, 16));
    expect(parseInstant("2026-12-07T16:00:00")).toBe(Date.UTC(2026, 11, 7, 16));
    expect(parseInstant("2026-12-07T18:00:00+02:00")).toBe(Date.UTC(2026, 11, 7, 16));
    expect(parseInstant("2026-12-07")).toBe(Date.UTC(2026, 11, 7));
    expect(parseInstant("soon")).toBeUndefined();
  });
});
