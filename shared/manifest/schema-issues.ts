import type { z } from "zod";
import { ShardlineError } from "../errors.js";

/**
 * How the manifest schema's issues become the one ShardlineError a user sees. Every issue's
 * message is the "allowed" text of the rule that raised it (the schema sets it, not zod's
 * wording); its path is the dotted field; the value is read from the document as written, so
 * a default or a normalisation never shows up in an error.
 */

/** What a refinement may pass in an issue's params. */
interface RefusalParams {
  /** The value to show when it is not the field's own, e.g. the offending key of a mapping. */
  value?: unknown;
  /** A refusal from a validator outside the schema (cron, time zones), passed on as it is. */
  error?: ShardlineError;
}

/** Refuses the field at `path` (relative to the schema the refinement sits on): `allowed` says what is. */
export function refuse(ctx: z.RefinementCtx, path: PropertyKey[], allowed: string): void {
  ctx.addIssue({ code: "custom", path, message: allowed });
}

/** As `refuse`, showing `value` instead of the field's own, e.g. the offending key of a mapping. */
export function refuseValue(ctx: z.RefinementCtx, path: PropertyKey[], value: unknown, allowed: string): void {
  const params: RefusalParams = { value };
  ctx.addIssue({ code: "custom", path, message: allowed, params });
}

/** Runs `check`, a validator that throws ShardlineError, and turns its refusal into an issue at `path`. */
export function refuseThrown(ctx: z.RefinementCtx, path: PropertyKey[], check: () => void): void {
  try {
    check();
  } catch (err) {
    if (!(err instanceof ShardlineError)) throw err;
    const params: RefusalParams = { error: err };
    ctx.addIssue({ code: "custom", path, message: err.details.allowed ?? err.message, params });
  }
}

/**
 * The error for a manifest the schema refused. zod reports every issue; the user gets one, the
 * first in the order the fields are declared, except that an unknown field is reported before
 * any problem inside the same mapping: a misspelt field usually causes the next problem (a
 * required field missing), and naming the typo is what fixes both.
 */
export function manifestError(issues: readonly z.core.$ZodIssue[], document: unknown): ShardlineError {
  const first = issues[0];
  if (first === undefined) return ShardlineError.invalid("manifest", document, "a manifest the schema accepts");
  const unknownField = issues.find((issue) => issue.code === "unrecognized_keys" && isPrefix(issue.path, first.path));
  return toError(unknownField ?? first, document);
}

function toError(issue: z.core.$ZodIssue, document: unknown): ShardlineError {
  const params = issue.code === "custom" ? (issue.params as RefusalParams | undefined) : undefined;
  if (params?.error !== undefined) return params.error;
  if (issue.code === "unrecognized_keys") {
    // The issue names the mapping; the user needs the field that should not be there.
    const key = issue.keys[0] ?? "";
    return ShardlineError.invalid(dotted([...issue.path, key]), valueAt(document, [...issue.path, key]), issue.message);
  }
  if (issue.code === "invalid_key") {
    // A bad key in a mapping of names (labels, env, headers): the mapping is the field, the key its value.
    return ShardlineError.invalid(dotted(issue.path.slice(0, -1)), issue.path.at(-1), issue.message);
  }
  const value = params !== undefined && "value" in params ? params.value : valueAt(document, issue.path);
  return ShardlineError.invalid(dotted(issue.path), value, issue.message);
}

/** `spec.script.args.1`; the document itself is `manifest`. */
function dotted(path: readonly PropertyKey[]): string {
  return path.length === 0 ? "manifest" : path.map(String).join(".");
}

function valueAt(document: unknown, path: readonly PropertyKey[]): unknown {
  let value = document;
  for (const key of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

function isPrefix(prefix: readonly PropertyKey[], path: readonly PropertyKey[]): boolean {
  return prefix.length <= path.length && prefix.every((key, index) => key === path[index]);
}
