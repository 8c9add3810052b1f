/**
 * A commit's executions as they cross to the writer thread.
 *
 * A structured clone copies an object per record key by key, a string at a time, and the thread
 * rebuilds each one only to take its fields apart into bound parameters: that cost as much CPU
 * as the statements. What crosses instead is one string holding the text fields of the batch, an
 * Int32Array of their lengths, a Float64Array of the numbers and a Uint8Array of each row's kind,
 * each copied whole.
 *
 * An execution the file already holds open (OpenExecutions) is sent as only what an update of it
 * sets, and written by an UPDATE of those columns: its id fixes the others, and the upsert has
 * always kept them as first written. Leaving out its agent when unchanged spares SQLite the
 * agent index.
 */
import { OPEN_STATES } from "../../../shared/execution-state.js";
import type { ExecutionRecord } from "../store.js";

/** The states sqlite-file.ts counts as open (OPEN_STATES_SQL): retention never deletes such a row. */
const OPEN = new Set<string>(OPEN_STATES);

/** What a row holds and how the thread writes it. */
export const RowKind = {
  /** Every column: upserted (a new execution, or one the store does not know to be open in the file). */
  whole: 0,
  /** An open execution's update, its agent unchanged. */
  update: 1,
  /** An open execution's update with a new agent. */
  updateWithAgent: 2,
} as const;
type RowKind = (typeof RowKind)[keyof typeof RowKind];

/** Where each number of a row sits among its NUMBERS_PER_ROW in ExecutionColumns.numbers. */
const Num = { startedAt: 0, finishedAt: 1, notBefore: 2, graceMs: 3, revision: 4, shard: 5, fireTime: 6, attempt: 7 } as const;
const NUMBERS_PER_ROW = 8;
/** The most text fields a row has (a whole one). */
const MAX_TEXTS_PER_ROW = 10;

/** One commit's executions, in the batch's order. */
export interface ExecutionColumns {
  count: number;
  /** Each row's RowKind. */
  kinds: Uint8Array;
  /** The text fields of every row, one after another, in the order ColumnReader.next reads them. */
  text: string;
  /** The length of each text field in `text`; -1 where the record has none (NULL). */
  lengths: Int32Array;
  /** Each row's numbers (see Num); NaN where the record has none, which binds as NULL as NaN itself does. */
  numbers: Float64Array;
}

/**
 * The executions the file holds open, by id, with the agent each was last written with: those
 * a commit may send as updates. Kept by the store's side in the order batches are handed over,
 * which is the order they are written. A later commit never finds one of them missing from the
 * file: the file held it open when that commit was handed over, only a commit changes it, and
 * retention deletes finished executions only. (After a failed commit nothing later is written.)
 */
export class OpenExecutions {
  private readonly agents = new Map<string, string>();

  /** The agent an open execution was written with; undefined for one not known to be open in the file. */
  agentOf(id: string): string | undefined {
    return this.agents.get(id);
  }

  /** Notes `e` as it will be in the file once its batch is written. */
  written(e: ExecutionRecord): void {
    if (OPEN.has(e.state)) this.agents.set(e.id, e.agent);
    else this.agents.delete(e.id);
  }
}

/**
 * The columns of `records`, made on the store's side, noting them in `open`: each execution
 * `open` knows becomes an update, every other one a whole row. fireOutcome and traceContext
 * cross as JSON.
 */
export function toColumns(records: readonly ExecutionRecord[], open: OpenExecutions): ExecutionColumns {
  const count = records.length;
  const kinds = new Uint8Array(count);
  const texts: string[] = [];
  const lengths = new Int32Array(count * MAX_TEXTS_PER_ROW);
  const numbers = new Float64Array(count * NUMBERS_PER_ROW);
  let field = 0;
  const add = (value: unknown): void => {
    const text = textOf(value);
    if (text === undefined) {
      lengths[field++] = -1;
    } else {
      texts.push(text);
      lengths[field++] = text.length;
    }
  };
  for (let i = 0; i < count; i++) {
    const e = records[i]!;
    const agent = open.agentOf(e.id);
    const kind: RowKind = agent === undefined ? RowKind.whole : agent === e.agent ? RowKind.update : RowKind.updateWithAgent;
    kinds[i] = kind;
    // The order ColumnReader.next reads them in.
    add(e.id);
    if (kind !== RowKind.update) add(e.agent);
    add(e.state);
    add(e.error);
    add(e.result);
    add(e.fireOutcome === undefined ? undefined : JSON.stringify(e.fireOutcome));
    if (kind === RowKind.whole) {
      add(e.job);
      add(e.cause);
      add(e.parameter);
      add(e.traceContext === undefined ? undefined : traceContextJson(e.traceContext));
    }
    const n = i * NUMBERS_PER_ROW;
    numbers[n + Num.startedAt] = numberOrNaN(e.startedAt);
    numbers[n + Num.finishedAt] = numberOrNaN(e.finishedAt);
    numbers[n + Num.notBefore] = numberOrNaN(e.notBefore);
    numbers[n + Num.graceMs] = numberOrNaN(e.disconnectGraceMs);
    numbers[n + Num.revision] = numberOrNaN(e.revision);
    if (kind === RowKind.whole) {
      numbers[n + Num.shard] = numberOrNaN(e.shard);
      numbers[n + Num.fireTime] = numberOrNaN(e.fireTime);
      numbers[n + Num.attempt] = numberOrNaN(e.attempt);
    }
    open.written(e);
  }
  return { count, kinds, text: texts.join(""), lengths, numbers };
}

/**
 * The rows of ExecutionColumns, read on the thread one at a time into this one object (no object
 * per row): a field a row's kind does not carry is left as the previous row had it. Text fields
 * are null where the record had none, numbers null where absent.
 */
export class ColumnReader {
  kind: RowKind = RowKind.whole;
  id: string | null = null;
  agent: string | null = null;
  state: string | null = null;
  error: string | null = null;
  result: string | null = null;
  fireOutcome: string | null = null;
  startedAt: number | null = null;
  finishedAt: number | null = null;
  notBefore: number | null = null;
  graceMs: number | null = null;
  revision: number | null = null;
  /** The columns only a whole row carries. */
  job: string | null = null;
  cause: string | null = null;
  parameter: string | null = null;
  traceContext: string | null = null;
  shard = Number.NaN;
  fireTime = Number.NaN;
  attempt = Number.NaN;

  private row = -1;
  private field = 0;
  private offset = 0;

  constructor(private readonly columns: ExecutionColumns) {}

  /** Moves to the next row; false after the last. */
  next(): boolean {
    const c = this.columns;
    if (++this.row >= c.count) return false;
    const kind = c.kinds[this.row] as RowKind;
    this.kind = kind;
    this.id = this.text();
    if (kind !== RowKind.update) this.agent = this.text();
    this.state = this.text();
    this.error = this.text();
    this.result = this.text();
    this.fireOutcome = this.text();
    if (kind === RowKind.whole) {
      this.job = this.text();
      this.cause = this.text();
      this.parameter = this.text();
      this.traceContext = this.text();
    }
    const n = this.row * NUMBERS_PER_ROW;
    const numbers = c.numbers;
    this.startedAt = orNull(numbers[n + Num.startedAt]!);
    this.finishedAt = orNull(numbers[n + Num.finishedAt]!);
    this.notBefore = orNull(numbers[n + Num.notBefore]!);
    this.graceMs = orNull(numbers[n + Num.graceMs]!);
    this.revision = orNull(numbers[n + Num.revision]!);
    if (kind === RowKind.whole) {
      // NaN binds as NULL, so a missing one fails its NOT NULL constraint.
      this.shard = numbers[n + Num.shard]!;
      this.fireTime = numbers[n + Num.fireTime]!;
      this.attempt = numbers[n + Num.attempt]!;
    }
    return true;
  }

  private text(): string | null {
    const length = this.columns.lengths[this.field++]!;
    if (length < 0) return null;
    const start = this.offset;
    this.offset += length;
    return this.columns.text.slice(start, this.offset);
  }
}

/** What JSON.stringify escapes in a string: a quote, a backslash, a control character, a surrogate. */
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * JSON.stringify(context), byte for byte, without its generic path for the usual context of a
 * few plain strings: the controller makes one per execution, and JSON.stringify of so small an
 * object cost more than the rest of its row. Anything else goes to JSON.stringify.
 */
export function traceContextJson(context: Record<string, string>): string {
  if (typeof context !== "object" || context === null || Array.isArray(context)) return JSON.stringify(context);
  let json = "{";
  for (const key of Object.keys(context)) {
    const value = context[key];
    if (typeof value !== "string" || NEEDS_ESCAPE.test(key) || NEEDS_ESCAPE.test(value)) return JSON.stringify(context);
    json += json.length === 1 ? `"${key}":"${value}"` : `,"${key}":"${value}"`;
  }
  return `${json}}`;
}

function orNull(value: number): number | null {
  return Number.isNaN(value) ? null : value;
}

/**
 * A text field as SQLite's TEXT affinity would store what was bound before: a string as it is,
 * absent or null as NULL (a required one then fails its NOT NULL constraint), anything else as
 * its string form.
 */
function textOf(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  return value === undefined || value === null ? undefined : String(value);
}

/** A field that is not a number (absent, or null in a malformed record) as NaN, which binds as NULL. */
function numberOrNaN(value: number | undefined): number {
  return typeof value === "number" ? value : Number.NaN;
}
