/**
 * Quartz cron expressions (ElasticJob's `cron`) read as the cron Shardline's schedules use
 * (cron-parser, seconds first). The two differ in three ways that matter:
 * - Quartz numbers the days of the week 1-7 from Sunday; cron-parser 0-7, Sunday being 0 and 7.
 * - Quartz has an optional seventh field, the year; cron-parser has none.
 * - Quartz writes `?` for "no specific value" in day-of-month or day-of-week, and has `W`
 *   (nearest weekday) and `L-N` (N days before the last), which cron-parser lacks.
 */

/** A Quartz expression that has no cron-parser equivalent: why, and what to do instead. */
export class QuartzCronError extends Error {
  override readonly name = "QuartzCronError";
  constructor(
    /** Why it cannot be converted, naming the part of the expression. */
    readonly why: string,
    /** What the user can do instead. */
    readonly advice: string,
  ) {
    super(`${why}; ${advice}`);
  }
}

const DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] as const;

/**
 * The cron-parser expression (6 fields, seconds first) that fires when the Quartz expression
 * `quartz` does. Throws QuartzCronError for what cron-parser cannot express: a year other than
 * `*`, `W`, `L-N`, a field count other than 6 or 7. Day-of-week numbers are renumbered and written
 * as names (Quartz `2-6` becomes `MON-FRI`), so the result reads the same in either convention.
 */
export function quartzToCron(quartz: string): string {
  const fields = quartz.trim().split(/\s+/);
  if (fields.length !== 6 && fields.length !== 7) {
    throw new QuartzCronError(
      `has ${fields.length} fields`,
      "a Quartz expression has 6 or 7: second minute hour day-of-month month day-of-week [year]",
    );
  }
  const [second, minute, hour, dayOfMonth, month, dayOfWeek, year] = fields as [string, string, string, string, string, string, string | undefined];
  if (year !== undefined && year !== "*") {
    throw new QuartzCronError(
      `the year field ${JSON.stringify(year)} has no equivalent (Shardline's schedules have no year)`,
      "drop the year and pause or delete the job when its years are over",
    );
  }
  return [second, minute, hour, convertDayOfMonth(dayOfMonth), month, convertDayOfWeek(dayOfWeek.toUpperCase())].join(" ");
}

function convertDayOfMonth(field: string): string {
  if (field === "?") return "*";
  if (/W/i.test(field)) {
    throw new QuartzCronError(
      `day-of-month ${JSON.stringify(field)}: W (the nearest weekday) has no equivalent`,
      "schedule every weekday near that date and let the handler decide, or use a fixed day",
    );
  }
  if (/L-\d/i.test(field)) {
    throw new QuartzCronError(
      `day-of-month ${JSON.stringify(field)}: L-N (N days before the last) has no equivalent`,
      "schedule the last days of the month (e.g. 26-31) and let the handler check the date",
    );
  }
  return field.toUpperCase();
}

function convertDayOfWeek(field: string): string {
  if (field === "?" || field === "*") return "*";
  const special: string[] = [];
  const days: number[] = [];
  for (const item of field.split(",")) {
    const converted = convertSpecialDay(item);
    if (converted === undefined) days.push(...expandDays(item));
    else special.push(converted);
  }
  // Days, ranges and steps are merged into one set: MON-FRI,SAT,SUN is every day, `*`.
  // Every day of the week already includes the last Friday or the third Monday.
  const plain = days.length === 0 ? [] : [compress(days)];
  return plain[0] === "*" ? "*" : [...plain, ...special].join(",");
}

/**
 * A comma-separated item of a Quartz day-of-week that is `N#K` (the K-th N of the month) or `NL`
 * (the last N), with cron-parser's numbers (0 = Sunday), which it reads in them; undefined for
 * a day, range or step. `L` alone, Saturday, is a day.
 */
function convertSpecialDay(item: string): string | undefined {
  const nth = /^([A-Z]{3}|\d)#(\d)$/.exec(item);
  if (nth) return `${quartzDay(nth[1]!, item) - 1}#${nth[2]}`;
  const last = /^([A-Z]{3}|\d)L$/.exec(item);
  if (last) return `${quartzDay(last[1]!, item) - 1}L`;
  return undefined;
}

/** The Quartz days (1-7) a day, range (`2-6`, `MON-FRI`, wrapping `FRI-MON`) or step (`2/2`, `MON-FRI/2`) covers. */
function expandDays(item: string): number[] {
  const step = /^(.+)\/(\d+)$/.exec(item);
  const base = step ? step[1]! : item;
  const every = step ? Number(step[2]) : 1;
  if (every < 1) throw badDay(item);
  let from: number;
  let to: number;
  const range = /^([A-Z]{3}|\d)-([A-Z]{3}|\d)$/.exec(base);
  if (base === "*") [from, to] = [1, 7];
  else if (base === "L") [from, to] = [7, 7];
  else if (range) [from, to] = [quartzDay(range[1]!, item), quartzDay(range[2]!, item)];
  // Quartz reads `2/3` as from 2 to the end of the week, every 3rd.
  else [from, to] = [quartzDay(base, item), step ? 7 : quartzDay(base, item)];
  const days: number[] = [];
  const span = (to - from + 7) % 7;
  for (let offset = 0; offset <= span; offset += every) days.push(((from - 1 + offset) % 7) + 1);
  return days;
}

/** A Quartz day number (1 = Sunday) from a number or a three-letter name. */
function quartzDay(text: string, item: string): number {
  const byName = DAY_NAMES.indexOf(text as (typeof DAY_NAMES)[number]);
  if (byName >= 0) return byName + 1;
  const day = Number(text);
  if (!Number.isInteger(day) || day < 1 || day > 7) throw badDay(item);
  return day;
}

function badDay(item: string): QuartzCronError {
  return new QuartzCronError(
    `day-of-week ${JSON.stringify(item)} is not a Quartz day of the week`,
    "write days as 1-7 (1 is Sunday) or SUN-SAT, with ranges, lists, steps, N#K or NL",
  );
}

/** Quartz days (1-7) as cron-parser day names, runs of three or more written as ranges: MON-FRI. */
function compress(quartzDays: readonly number[]): string {
  const days = [...new Set(quartzDays.map((day) => day - 1))].sort((a, b) => a - b);
  if (days.length === 7) return "*";
  const parts: string[] = [];
  for (let start = 0; start < days.length; ) {
    let end = start;
    while (end + 1 < days.length && days[end + 1] === days[end]! + 1) end++;
    const [first, lastDay] = [DAY_NAMES[days[start]!]!, DAY_NAMES[days[end]!]!];
    if (end - start >= 2) parts.push(`${first}-${lastDay}`);
    else parts.push(...days.slice(start, end + 1).map((day) => DAY_NAMES[day]!));
    start = end + 1;
  }
  return parts.join(",");
}
