import { describe, expect, it } from "vitest";
import { ShardlineError } from "./errors.js";
import { fireTimesBetween, nextFireAfter, validateSchedule } from "./schedule.js";

const at = (iso: string): number => Date.parse(iso);
const iso = (ms: number[]): string[] => ms.map((m) => new Date(m).toISOString());

describe("nextFireAfter", () => {
  it("reads a sixth field as seconds, first", () => {
    expect(nextFireAfter("*/5 * * * * *", "UTC", at("2026-01-01T00:00:03.250Z"))).toBe(at("2026-01-01T00:00:05Z"));
  });

  it("returns a fire strictly after the instant, never the instant itself", () => {
    expect(nextFireAfter("*/5 * * * * *", "UTC", at("2026-01-01T00:00:05Z"))).toBe(at("2026-01-01T00:00:10Z"));
    expect(nextFireAfter("0 9 * * *", "UTC", at("2026-01-01T09:00:00Z"))).toBe(at("2026-01-02T09:00:00Z"));
  });

  it("reads five fields as minute to day-of-week, firing at second 0", () => {
    // 2026-01-02 is a Friday, so the next weekday 09:00 is Monday the 5th.
    expect(nextFireAfter("0 9 * * 1-5", "UTC", at("2026-01-02T09:00:00Z"))).toBe(at("2026-01-05T09:00:00Z"));
  });

  it("reads the schedule in the given zone", () => {
    // Asia/Shanghai is UTC+8 all year.
    expect(nextFireAfter("0 9 * * *", "Asia/Shanghai", at("2026-06-01T00:00:00Z"))).toBe(at("2026-06-01T01:00:00Z"));
  });

  it("finds a fire years away for a schedule that matches rarely", () => {
    // A fifth Monday in February needs a leap year whose Feb 1 is a Monday: 2016, then 2044.
    expect(nextFireAfter("0 0 * 2 1#5", "UTC", at("2017-01-01T00:00:00Z"))).toBe(at("2044-02-29T00:00:00Z"));
  });
});

describe("fireTimesBetween", () => {
  it("lists fires in (after, until], ascending", () => {
    expect(iso(fireTimesBetween("*/5 * * * * *", "UTC", at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:20Z"), 10))).toEqual([
      "2026-01-01T00:00:05.000Z",
      "2026-01-01T00:00:10.000Z",
      "2026-01-01T00:00:15.000Z",
      "2026-01-01T00:00:20.000Z",
    ]);
  });

  it("stops at max", () => {
    expect(fireTimesBetween("*/5 * * * * *", "UTC", at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"), 2)).toEqual([
      at("2026-01-01T00:00:05Z"),
      at("2026-01-01T00:00:10Z"),
    ]);
  });

  it("is empty for an empty window or a max of 0", () => {
    expect(fireTimesBetween("* * * * * *", "UTC", 10_000, 10_000, 5)).toEqual([]);
    expect(fireTimesBetween("* * * * * *", "UTC", 10_000, 20_000, 0)).toEqual([]);
  });

  it("is empty when no fire falls in the window", () => {
    expect(fireTimesBetween("0 0 1 1 *", "UTC", at("2026-01-01T00:00:00Z"), at("2026-12-31T23:59:59Z"), 5)).toEqual([]);
  });
});

describe("daylight-saving changes", () => {
  // New York springs forward on Sunday 2026-03-08: 02:00 EST (UTC-5) becomes 03:00 EDT (UTC-4),
  // so 02:30 does not exist that day. cron-parser runs a fire scheduled in the skipped hour once, at
  // the same minute of the hour the clock lands on: 03:30 EDT = 07:30Z, the same instant as the
  // day before (02:30 EST = 07:30Z). The day after, 02:30 EDT = 06:30Z.
  it("runs a fire in the skipped spring-forward hour once, at the same minute an hour later", () => {
    const fires = fireTimesBetween("30 2 * * *", "America/New_York", at("2026-03-07T00:00:00Z"), at("2026-03-10T00:00:00Z"), 10);
    expect(iso(fires)).toEqual(["2026-03-07T07:30:00.000Z", "2026-03-08T07:30:00.000Z", "2026-03-09T06:30:00.000Z"]);
  });

  it("agrees at the spring-forward gap when the search starts inside the landing hour", () => {
    // 07:10Z is 03:10 EDT, after the change and before the moved fire at 03:30 EDT.
    expect(nextFireAfter("30 2 * * *", "America/New_York", at("2026-03-08T07:10:00Z"))).toBe(at("2026-03-08T07:30:00Z"));
  });

  // New York falls back on Sunday 2026-11-01: 02:00 EDT (UTC-4) becomes 01:00 EST (UTC-5), so
  // 01:30 happens twice, at 05:30Z (EDT) and 06:30Z (EST). It fires once, at the first.
  it("fires once in the repeated fall-back hour, at its first occurrence", () => {
    const fires = fireTimesBetween("30 1 * * *", "America/New_York", at("2026-10-31T00:00:00Z"), at("2026-11-03T00:00:00Z"), 10);
    expect(iso(fires)).toEqual(["2026-10-31T05:30:00.000Z", "2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"]);
  });

  it("does not fire the repeated hour again when the search starts after the first occurrence", () => {
    const nextDay = at("2026-11-02T06:30:00Z");
    expect(nextFireAfter("30 1 * * *", "America/New_York", at("2026-11-01T05:30:00Z"))).toBe(nextDay);
    // 06:10Z is 01:10 EST, inside the second pass through 01:00-02:00.
    expect(nextFireAfter("30 1 * * *", "America/New_York", at("2026-11-01T06:10:00Z"))).toBe(nextDay);
  });

  // Berlin moves from CET (UTC+1) to CEST (UTC+2) on Sunday 2026-03-29 at 02:00 local.
  it("keeps 09:00 local across a change outside the fire's hour", () => {
    const fires = fireTimesBetween("0 9 * * *", "Europe/Berlin", at("2026-03-27T12:00:00Z"), at("2026-03-31T00:00:00Z"), 10);
    expect(iso(fires)).toEqual(["2026-03-28T08:00:00.000Z", "2026-03-29T07:00:00.000Z", "2026-03-30T07:00:00.000Z"]);
  });
});

describe("validateSchedule", () => {
  const rejects = (schedule: string, timeZone: string, field: string, allowed: string) => {
    let caught: unknown;
    try {
      validateSchedule(schedule, timeZone);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ShardlineError);
    const error = caught as ShardlineError;
    expect(error.code).toBe("invalid-argument");
    expect(error.details.field).toBe(field);
    expect(error.message).toContain(`${field}: `);
    expect(error.message).toContain(allowed);
  };

  it("accepts 5- and 6-field expressions, names and L", () => {
    for (const schedule of ["*/5 * * * * *", "0 9 * * 1-5", "0 0 1 jan,jul mon-fri", "0 0 L * *", "0 0 29 2 *"]) {
      expect(() => validateSchedule(schedule, "Europe/Berlin")).not.toThrow();
    }
  });

  it.each([
    ["", "a cron expression with 5 fields"],
    ["* * * *", "a cron expression with 5 fields"],
    ["0 0 0 * * * 2026", "a cron expression with 5 fields"],
    ["@daily", "a cron expression with 5 fields"],
    ["61 * * * *", "got value 61"],
    ["H * * * *", "without the hashed form H"],
    // cron-parser refuses a day of month no listed month has, so these never reach a search.
    ["0 0 30 2 *", "Invalid explicit day of month definition"],
    ["0 0 31 4,6 *", "Invalid explicit day of month definition"],
  ])("rejects %j on spec.schedule", (schedule, allowed) => {
    rejects(schedule, "UTC", "spec.schedule", allowed);
  });

  it("rejects an unknown zone on the sibling timeZone field", () => {
    rejects("* * * * *", "Mars/Olympus_Mons", "spec.timeZone", "an IANA time zone");
    rejects("* * * * *", "+05:00", "spec.timeZone", "an IANA time zone");
  });

  it("names the field it is given", () => {
    expect(() => validateSchedule("nope", "UTC", "jobs.3.schedule")).toThrow(/^jobs\.3\.schedule: "nope"/);
  });
});
