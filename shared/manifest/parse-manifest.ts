import { createHash } from "node:crypto";
import { priorityOf, type JobSpec } from "./job-spec.js";
import { manifestSchema } from "./manifest-schema.js";
import { readDocument } from "./read-document.js";
import { manifestError } from "./schema-issues.js";

export { MANIFEST_API_VERSION, MANIFEST_KIND } from "./manifest-schema.js";

/** A manifest that passed validation: the normalised job and the text it came from. */
export interface ParsedManifest {
  spec: JobSpec;
  /** The original text, trimmed, kept so `get -o yaml` can show what the user applied. */
  manifest: string;
}

/**
 * Reads one YAML or JSON job manifest (docs/architecture.md, "Job manifest") and returns the job
 * with every default filled in. Throws `ShardlineError` (invalid-argument) naming the dotted field
 * path, the value and what is allowed; unknown fields are errors too, so a typo never silently
 * means a default. What is valid is manifest-schema.ts; shardedjob.schema.json is made from it.
 */
export function parseManifest(text: string): ParsedManifest {
  const manifest = text.trim();
  const document = readDocument(manifest);
  const result = manifestSchema.safeParse(document);
  if (!result.success) throw manifestError(result.error.issues, document);
  return { spec: result.data, manifest };
}

/**
 * True when two jobs mean the same thing, ignoring the order of map entries: applying the same
 * manifest twice changes nothing. Both are compared as the schema writes a spec today, as JSON
 * with sorted keys, so no field can be forgotten in the comparison.
 */
export function specEquals(a: JobSpec, b: JobSpec): boolean {
  return canonicalJson(asParsedToday(a)) === canonicalJson(asParsedToday(b));
}

/**
 * A stored spec as the schema would write it today. Specs stored before spec.daemon and
 * spec.priority existed lack them, and a spec may hold an onFailure without a webhook or an empty
 * spreadBy, both of which the schema now leaves out. (A kubernetes spec without
 * startTimeoutSeconds is left as it is: it compared unequal before the schema, and still does.)
 */
function asParsedToday(spec: JobSpec): JobSpec {
  const { onFailure, placement, ...rest } = spec;
  return {
    ...rest,
    daemon: spec.daemon ?? false,
    priority: priorityOf(spec),
    placement: placement.spreadBy === undefined || placement.spreadBy.length === 0 ? { selector: placement.selector } : placement,
    ...(onFailure?.webhook === undefined ? {} : { onFailure }),
  };
}

/** The sha256 (hex) of a spec as the schema writes it today: equal for equal specs (specEquals). */
export function specHash(spec: JobSpec): string {
  return createHash("sha256").update(canonicalJson(asParsedToday(spec))).digest("hex");
}

/** JSON with every mapping's keys sorted: equal for values that differ only in key order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) =>
    typeof item === "object" && item !== null && !Array.isArray(item)
      ? Object.fromEntries(Object.keys(item).sort().map((key) => [key, (item as Record<string, unknown>)[key]]))
      : item,
  );
}
