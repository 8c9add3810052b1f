import { describe, expect, it } from "vitest";
import { fireTimesBetween } from "../../shared/schedule.js";
import { QuartzCronError, quartzToCron } from "./quartz-cron.js";

describe("quartzToCron", () => {
  it("reads ? as any day, and keeps seconds first", () => {
    expect(quartzToCron("0/5 * * * * ?")).toBe("0/5 * * * * *");
    expect(quartzToCron("0 30 2 ? * *")).toBe("0 30 2 * * *");
  });

  it("drops a year of *", () => {
    expect(quartzToCron("0 0 12 * * ? *")).toBe("0 0 12 * * *");
  });

  it("renumbers the days of the week from Quartz's 1 = Sunday to names", () => {
    expect(quartzToCron("0 0 9 ? * 2-6")).toBe("0 0 9 * * MON-FRI");
    expect(quartzToCron("0 0 9 ? * 1,7")).toBe("0 0 9 * * SUN,SAT");
    expect(quartzToCron("0 0 9 ? * 1-7")).toBe("0 0 9 * * *");
    expect(quartzToCron("0 0 9 ? * mon-fri,SAT,SUN")).toBe("0 0 9 * * *");
    expect(quartzToCron("0 0 9 ? * L")).toBe("0 0 9 * * SAT");
  });

  it("expands day-of-week steps and wrapping ranges, which the two conventions count differently", () => {
    expect(quartzToCron("0 0 9 ? * 2/2")).toBe("0 0 9 * * MON,WED,FRI");
    expect(quartzToCron("0 0 9 ? * FRI-MON")).toBe("0 0 9 * * SUN,MON,FRI,SAT");
  });

  it("keeps the N-th and last weekday of the month with cron's numbers", () => {
    expect(quartzToCron("0 0 9 ? * 6#3")).toBe("0 0 9 * * 5#3");
    expect(quartzToCron("0 0 9 ? * 6L")).toBe("0 0 9 * * 5L");
    expect(quartzToCron("0 0 9 L * ?")).toBe("0 0 9 L * *");
  });

  it("fires when Quartz would: the third Friday of the month at 09:00", () => {
    const [first, second] = fireTimesBetween(quartzToCron("0 0 9 ? * 6#3"), "UTC", Date.UTC(2026, 0, 1), Date.UTC(2026, 3, 1), 2);
    expect([new Date(first!).toISOString(), new Date(second!).toISOString()]).toEqual(["2026-01-16T09:00:00.000Z", "2026-02-20T09:00:00.000Z"]);
  });

  it.each([
    ["0 0 12 * * ? 2030", /year field "2030"/],
    ["0 0 12 15W * ?", /W \(the nearest weekday\)/],
    ["0 0 12 LW * ?", /W \(the nearest weekday\)/],
    ["0 0 12 L-3 * ?", /L-N/],
    ["0 0 12 * *", /has 5 fields/],
    ["0 0 12 ? * 8", /not a Quartz day of the week/],
  ])("refuses %s, saying why and what to do", (quartz, why) => {
    expect(() => quartzToCron(quartz)).toThrow(QuartzCronError);
    expect(() => quartzToCron(quartz)).toThrow(why);
  });
});
