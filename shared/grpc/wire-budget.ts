import { status } from "@grpc/grpc-js";
import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/**
 * Bounds on what one request may cost to decode, checked on its bytes before it is decoded.
 * The size limit alone does not bound that cost: 4 MiB of empty repeated entries or unknown
 * fields is two million objects, and decoding them holds up the event loop, every agent's
 * heartbeats with it, for seconds.
 */
export interface WireBudget {
  /**
   * Fields in one message, counting those of every nested message and unknown ones. 4 MiB of
   * real execution updates is about 400,000.
   */
  maxFields: number;
  /** Entries of one repeated or map field of one message. */
  maxEntries: number;
}

/** The budget of every request served by shared/grpc. */
export const DEFAULT_WIRE_BUDGET: Readonly<WireBudget> = { maxFields: 500_000, maxEntries: 100_000 };

/** A request over its WireBudget: the status to answer with, and a message naming the field. */
export class WireBudgetExceeded extends Error {
  override readonly name = "WireBudgetExceeded";
  constructor(
    message: string,
    /** INVALID_ARGUMENT for a repeated field past maxEntries; RESOURCE_EXHAUSTED past maxFields. */
    readonly code: status.INVALID_ARGUMENT | status.RESOURCE_EXHAUSTED,
  ) {
    super(message);
  }
}

/**
 * Walks the wire format of `bytes` as a `schema` message without decoding it, and throws a
 * WireBudgetExceeded when it holds more than the budget allows. Malformed bytes throw what
 * protobuf's reader throws (the caller answers them as malformed). About ten times cheaper than
 * decoding, and allocation-free but for skipped fields' views.
 */
export function checkWireBudget(schema: DescMessage, bytes: Uint8Array, budget: Readonly<WireBudget> = DEFAULT_WIRE_BUDGET): void {
  // Every field counted takes two bytes at least (a tag and a value, or a group's start and end
  // tags), so a message this short cannot be over either bound: most are, and are not walked.
  if (bytes.length <= 2 * Math.min(budget.maxFields, budget.maxEntries)) return;
  const reader = new BinaryReader(bytes);
  walk(schema, reader, bytes.length, "", { fields: 0, budget, root: schema.typeName });
}

interface Walk {
  fields: number;
  readonly budget: Readonly<WireBudget>;
  readonly root: string;
}

function walk(schema: DescMessage, reader: BinaryReader, end: number, path: string, state: Walk): void {
  const fields = fieldsByNumber(schema);
  let entries: Map<number, number> | undefined;
  while (reader.pos < end) {
    const [number, wireType] = reader.tag();
    if (++state.fields > state.budget.maxFields) {
      throw new WireBudgetExceeded(
        `${state.root}: more than ${state.budget.maxFields} fields in one message, counting those of nested messages; ` +
          "a fixed limit (no flag raises it): send less in each message",
        status.RESOURCE_EXHAUSTED,
      );
    }
    const field = fields.get(number);
    if (field !== undefined && (field.fieldKind === "list" || field.fieldKind === "map")) {
      entries ??= new Map();
      const count = (entries.get(number) ?? 0) + 1;
      entries.set(number, count);
      if (count > state.budget.maxEntries) {
        // Worded as ShardlineError.invalid words it, like the checks made after decoding.
        throw new WireBudgetExceeded(
          `${path}${field.name}: "more than ${state.budget.maxEntries} entries" is not allowed; expected at most ${state.budget.maxEntries} in one message`,
          status.INVALID_ARGUMENT,
        );
      }
    }
    if (wireType !== WireType.LengthDelimited) {
      reader.skip(wireType, number);
      continue;
    }
    const length = reader.uint32();
    const nestedEnd = reader.pos + length;
    if (nestedEnd > end) throw new RangeError("premature EOF");
    const nested = field === undefined ? undefined : messageOf(field);
    if (nested === undefined) {
      reader.pos = nestedEnd;
    } else {
      walk(nested, reader, nestedEnd, `${path}${field!.name}.`, state);
      // A nested message that overran its length is malformed.
      if (reader.pos !== nestedEnd) throw new RangeError(`invalid length of ${path}${field!.name}`);
    }
  }
  if (reader.pos > end) throw new RangeError("premature EOF");
}

/** The message type a length-delimited field holds, if it holds one (a map's entries are not walked). */
function messageOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  return undefined;
}

const byNumber = new WeakMap<DescMessage, Map<number, DescField>>();

function fieldsByNumber(schema: DescMessage): Map<number, DescField> {
  let fields = byNumber.get(schema);
  if (fields === undefined) {
    fields = new Map(schema.fields.map((f) => [f.number, f]));
    byNumber.set(schema, fields);
  }
  return fields;
}
