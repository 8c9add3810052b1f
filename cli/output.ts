import { stringify as toYaml } from "yaml";
import { ShardlineError } from "../shared/errors.js";
import { isoTime } from "../shared/execution-view.js";

export { isoTime };

/**
 * What a command reads and writes besides the network, injected so that commands run in-process
 * in tests exactly as they do from a terminal.
 */
export interface CliIo {
  /** Command output: tables, JSON, one-line results. */
  stdout(text: string): void;
  /** Errors and notes that are not the command's output ("No jobs found."). */
  stderr(text: string): void;
  /** The whole of standard input, for `apply -f -`. */
  readStdin(): Promise<string>;
  /** The environment (SHARDLINE_CONTROLLER). */
  env: Readonly<Record<string, string | undefined>>;
  /** Calls `listener` on SIGINT or SIGTERM until the returned function is called. */
  onSignal(listener: (signal: NodeJS.Signals) => void): () => void;
}

/** How `get` prints resources: an aligned table (default), a wider table, JSON, YAML, or only their names (KIND/NAME). */
export type OutputFormat = "table" | "wide" | "json" | "yaml" | "name";

/** The values `-o` accepts. */
export const OUTPUT_FORMATS = ["json", "yaml", "wide", "name"] as const;

/** Checks an `-o` value against the formats a command supports. */
export function parseOutputFormat(value: string, accepted: readonly string[] = OUTPUT_FORMATS): OutputFormat {
  if (!accepted.includes(value)) throw ShardlineError.invalid("-o", value, accepted.join(", "));
  return value as OutputFormat;
}

/** One column of a table: its heading and how a row shows in it. */
export interface Column<T> {
  header: string;
  value: (row: T) => string;
  /** Shown only with `-o wide`. */
  wide?: boolean;
}

/** Space between columns, as kubectl prints it. */
const GAP = "   ";

/**
 * Renders rows as a table with a heading line, each column padded to its widest cell. Cells are
 * made one line, and the last column is not padded, so lines carry no trailing spaces.
 */
export function renderTable<T>(rows: readonly T[], columns: readonly Column<T>[], wide = false): string {
  const shown = columns.filter((column) => wide || !column.wide);
  const cells = [shown.map((column) => column.header), ...rows.map((row) => shown.map((column) => oneLine(column.value(row))))];
  const widths = shown.map((_, index) => Math.max(...cells.map((line) => (line[index] ?? "").length)));
  return cells
    .map((line) =>
      line
        .map((cell, index) => (index === line.length - 1 ? cell : cell.padEnd(widths[index] ?? 0)))
        .join(GAP)
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join("");
}

/** Renders a value as JSON (two-space indent) or YAML, ending with a newline. */
export function renderDocument(value: unknown, format: "json" | "yaml"): string {
  return format === "json" ? `${JSON.stringify(value, null, 2)}\n` : toYaml(value);
}


/**
 * An instant for a table cell: ISO-8601 without zero milliseconds, or `<none>`; in UTC (`Z`), or
 * with `timeZone` (a job's spec.timeZone) as that zone's wall-clock time and offset, e.g.
 * `2026-01-01T08:00:00+08:00` for Asia/Shanghai.
 */
export function tableTime(unixMs: bigint | number, timeZone?: string | null): string {
  const iso = isoTime(unixMs);
  if (iso === null) return NONE;
  if (timeZone === undefined || timeZone === null || timeZone === "UTC" || timeZone === "Etc/UTC") return iso.replace(/\.000Z$/, "Z");
  const ms = Number(unixMs);
  const parts = Object.fromEntries(zoneFormat(timeZone).formatToParts(new Date(ms)).map((part) => [part.type, part.value]));
  // "GMT+08:00", or "GMT" for an offset of zero.
  const offset = parts.timeZoneName === "GMT" ? "+00:00" : (parts.timeZoneName ?? "").replace(/^GMT/, "");
  const millis = ms % 1000 === 0 ? "" : `.${String(((ms % 1000) + 1000) % 1000).padStart(3, "0")}`;
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour === "24" ? "00" : parts.hour}:${parts.minute}:${parts.second}${millis}${offset}`;
}

const zoneFormats = new Map<string, Intl.DateTimeFormat>();

/** The wall-clock parts and offset of an instant in `timeZone` (one formatter per zone). */
function zoneFormat(timeZone: string): Intl.DateTimeFormat {
  let format = zoneFormats.get(timeZone);
  if (format === undefined) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      timeZoneName: "longOffset",
    });
    zoneFormats.set(timeZone, format);
  }
  return format;
}

/** How a table shows an empty cell, as kubectl does. */
export const NONE = "<none>";

/** A duration for a table cell: `850ms`, `12.3s`, `4m05s`, `2h10m`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const totalSeconds = Math.round(ms / 1000);
  if (totalSeconds < 3600) return `${Math.floor(totalSeconds / 60)}m${String(totalSeconds % 60).padStart(2, "0")}s`;
  const totalMinutes = Math.round(totalSeconds / 60);
  return `${Math.floor(totalMinutes / 60)}h${String(totalMinutes % 60).padStart(2, "0")}m`;
}

/** Text made to fit on one line: an error on stderr and a table cell must never break a line. */
export function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, " ").trim();
}
