import { CronDate, CronExpressionParser, type CronExpression } from "cron-parser";
import { ShardlineError } from "./errors.js";

const SCHEDULE_ALLOWED =
  "a cron expression with 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first";
const TIME_ZONE_ALLOWED = "an IANA time zone such as UTC, Europe/Berlin or Asia/Shanghai";

/** cron-parser's only error from next() without start/end dates: no match within its step limit. */
const NO_MATCH_MESSAGE = "Invalid expression, loop limit exceeded";

/**
 * How far back to look for a daylight-saving change. cron-parser learns about a skipped or repeated
 * hour only while stepping across the change, so a search that starts inside the hour after one must
 * start before it to agree with a search that began earlier. Shifts are at most 2 hours.
 */
const DST_LOOKBACK_MS = 3 * 60 * 60 * 1000;

/** Where validation searches for a first fire; any instant works, cron has no year field. */
const VALIDATION_REFERENCE_MS = Date.UTC(2000, 0, 1);

const MAX_CACHED_EXPRESSIONS = 1024;
const expressions = new Map<string, CronExpression>();

/**
 * The first fire of `schedule` read in `timeZone` strictly after `afterMs` (Unix ms), or undefined
 * when the schedule never matches a real date (e.g. February 30). Fires are whole seconds.
 * Throws `ShardlineError` (invalid-argument) for a schedule or zone `validateSchedule` rejects.
 */
export function nextFireAfter(schedule: string, timeZone: string, afterMs: number): number | undefined {
  return fireTimesBetween(schedule, timeZone, afterMs, Number.POSITIVE_INFINITY, 1)[0];
}

/**
 * The fires of `schedule` in `timeZone` within (afterMs, untilMs], ascending, at most `max`.
 *
 * At a spring-forward gap a fire scheduled in the skipped hour runs once, at the same minute of the
 * hour the clock lands on (cron-parser's rule); at a fall-back a fire in the repeated hour runs once,
 * in its first occurrence. The answer is the same whether the search starts before or inside the
 * changed hour.
 */
export function fireTimesBetween(
  schedule: string,
  timeZone: string,
  afterMs: number,
  untilMs: number,
  max: number,
): number[] {
  const fires: number[] = [];
  if (max <= 0 || !(untilMs > afterMs)) return fires;
  const expression = parse(schedule, timeZone, "schedule");
  expression.reset(new Date(searchStart(timeZone, afterMs)));
  while (fires.length < max) {
    const fire = next(expression);
    if (fire === undefined || fire > untilMs) break;
    if (fire > afterMs) fires.push(fire);
  }
  return fires;
}

/**
 * Throws `ShardlineError.invalid` unless `schedule` is a 5- or 6-field cron expression that fires at
 * least once in the IANA zone `timeZone`. A bad zone is reported on the sibling field `timeZone` of
 * `field` (`spec.schedule` -> `spec.timeZone`).
 */
export function validateSchedule(schedule: string, timeZone: string, field = "spec.schedule"): void {
  parse(schedule, timeZone, field);
  if (nextFireAfter(schedule, timeZone, VALIDATION_REFERENCE_MS) === undefined) {
    throw ShardlineError.invalid(field, schedule, "a schedule that matches at least one real date (not e.g. February 30)");
  }
}

/** Throws `ShardlineError.invalid` on `field` unless `timeZone` is an IANA zone this runtime knows. */
export function validateTimeZone(timeZone: string, field = "spec.timeZone"): void {
  // Offsets such as "+05:00" are accepted by some runtimes but are not zones and have no DST rules.
  if (typeof timeZone !== "string" || !/^[A-Za-z]/.test(timeZone)) {
    throw ShardlineError.invalid(field, timeZone, TIME_ZONE_ALLOWED);
  }
  try {
    new Intl.DateTimeFormat(undefined, { timeZone });
  } catch (err) {
    if (err instanceof RangeError) throw ShardlineError.invalid(field, timeZone, TIME_ZONE_ALLOWED);
    throw err;
  }
}

function parse(schedule: string, timeZone: string, field: string): CronExpression {
  const key = `${timeZone}\u0000${schedule}`;
  const cached = expressions.get(key);
  if (cached !== undefined) return cached;

  const fields = typeof schedule === "string" ? schedule.trim().split(/\s+/) : [];
  if (fields.length !== 5 && fields.length !== 6) {
    throw ShardlineError.invalid(field, schedule, SCHEDULE_ALLOWED);
  }
  // cron-parser's `H` picks a random value unless seeded; fires must be the same on every leader.
  if (fields.some((f) => /H/i.test(f.replace(/[a-z]{3}/gi, "")))) {
    throw ShardlineError.invalid(field, schedule, `${SCHEDULE_ALLOWED}, without the hashed form H`);
  }
  validateTimeZone(timeZone, field.replace(/[^.]*$/, "timeZone"));
  let expression: CronExpression;
  try {
    expression = CronExpressionParser.parse(schedule, { tz: timeZone, currentDate: VALIDATION_REFERENCE_MS });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw ShardlineError.invalid(field, schedule, `${SCHEDULE_ALLOWED} (${reason})`);
  }
  if (expressions.size >= MAX_CACHED_EXPRESSIONS) {
    const oldest = expressions.keys().next().value;
    if (oldest !== undefined) expressions.delete(oldest);
  }
  expressions.set(key, expression);
  return expression;
}

function next(expression: CronExpression): number | undefined {
  try {
    return expression.next().getTime();
  } catch (err) {
    if (err instanceof Error && err.message === NO_MATCH_MESSAGE) return undefined;
    throw err;
  }
}

/**
 * `afterMs`, or, when the zone's offset changed within the lookback, a whole second just before the
 * change, so that cron-parser steps across it (see DST_LOOKBACK_MS).
 */
function searchStart(timeZone: string, afterMs: number): number {
  let old = Math.floor((afterMs - DST_LOOKBACK_MS) / 1000);
  let changed = Math.floor(afterMs / 1000);
  const oldOffset = offsetMinutes(timeZone, old * 1000);
  if (oldOffset === offsetMinutes(timeZone, changed * 1000)) return afterMs;
  while (changed - old > 1) {
    const mid = Math.floor((old + changed) / 2);
    if (offsetMinutes(timeZone, mid * 1000) === oldOffset) old = mid;
    else changed = mid;
  }
  return old * 1000;
}

function offsetMinutes(timeZone: string, ms: number): number {
  return new CronDate(ms, timeZone).getUTCOffset();
}
