import { z } from "zod";
import { ENV_REFERENCE_ALLOWED, envReference } from "../security/env-reference.js";
import { refuseValue } from "./schema-issues.js";

/**
 * The field types a job manifest is made of, each with the text that says what it allows. That
 * text is the message of every issue the field raises, so an error names what is accepted in
 * Shardline's words, never zod's.
 */

/** A DNS-1123 label of at most 63 characters, the length in the pattern so JSON Schema states it too. */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_LABEL_ALLOWED = "a DNS-1123 label: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit";

const DNS_SUBDOMAIN = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL_NAME = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?";
/** A Kubernetes label key: an optional DNS subdomain prefix and '/', then a name of at most 63. */
const LABEL_KEY = new RegExp(`^(${DNS_SUBDOMAIN}/)?${LABEL_NAME}$`);
const MAX_LABEL_PREFIX = 253;
const LABEL_VALUE = new RegExp(`^(${LABEL_NAME})?$`);
/** A handler name: 1 to 128 characters. Empty is allowed here: it is what a job that runs something else holds. */
const HANDLER_OR_EMPTY = /^([A-Za-z0-9][A-Za-z0-9._:-]{0,127})?$/;
const HANDLER = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** An HTTP header name: an RFC 9110 token. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const LABEL_KEY_ALLOWED =
  "label keys of 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, " +
  "optionally after a DNS subdomain prefix and '/' (e.g. example.com/team)";
const LABEL_VALUE_ALLOWED = "a string of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, or empty";
export const HANDLER_ALLOWED = "a handler name of 1 to 128 characters: letters, digits, '.', '_', ':' or '-', starting with a letter or digit";
const URL_ALLOWED = "an absolute http:// or https:// URL, e.g. https://billing.internal/rollup";
/** Like Kubernetes' own fields, a string field takes no number or boolean, so nothing is reformatted. */
const QUOTED = "(quote numbers and booleans)";

/**
 * A mapping with exactly the fields of `shape`: an unknown field is an error, so a typo never
 * silently means a default. `name` is the mapping's dotted path as the error names it. A field
 * written empty (`field:`, which YAML reads as null) counts as not given, as kubectl reads it.
 */
export function mapping<Shape extends z.ZodRawShape>(name: string, shape: Shape) {
  const fields = Object.keys(shape).join(", ");
  const object = z.strictObject(shape, {
    error: (issue) => (issue.code === "unrecognized_keys" ? `a known field; ${name} has only ${fields}` : `a mapping with the fields ${fields}`),
  });
  return z.preprocess((value) => withoutEmptyFields(value, shape), object);
}

/** `value` without the fields of `shape` written empty; an unknown field stays, to be refused even when empty. */
function withoutEmptyFields(value: unknown, shape: z.ZodRawShape): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).filter(([key, item]) => item !== null || !Object.hasOwn(shape, key)));
}

/** An integer within [min, max]; a number written as a string is refused like any other value. */
export function integer(min: number, max: number) {
  const allowed = `an integer from ${min} to ${max}`;
  return z.int({ error: allowed }).min(min, { error: allowed }).max(max, { error: allowed });
}

/** One of a fixed list of names, spelt exactly (`post` is not `POST`). */
export function oneOf<const T extends readonly string[]>(values: T) {
  return z.enum(values, { error: `one of ${values.join(", ")}` });
}

export function text() {
  return z.string({ error: "a string" });
}

/** A YAML 1.2 boolean: `yes` and `on` are strings, and refused. */
export function flag() {
  return z.boolean({ error: "true or false" });
}

/** A name Kubernetes would take as an object name: metadata.name, container names, custom strategies. */
export function dnsLabel(allowed = DNS_LABEL_ALLOWED) {
  return z.string({ error: allowed }).regex(DNS_LABEL, { error: allowed });
}

/** spec.handler: a handler name, or "" when the job runs a script, an http call or a Kubernetes Job. */
export function handlerOrEmpty() {
  return z.string({ error: HANDLER_ALLOWED }).regex(HANDLER_OR_EMPTY, { error: HANDLER_ALLOWED });
}

/** A handler name agents declare, e.g. spec.onFireComplete.handler. */
export function handlerName() {
  return z.string({ error: HANDLER_ALLOWED }).regex(HANDLER, { error: HANDLER_ALLOWED });
}

export function labelKey(allowed = LABEL_KEY_ALLOWED) {
  return z
    .string({ error: allowed })
    .regex(LABEL_KEY, { error: allowed })
    .refine((key) => !key.includes("/") || key.indexOf("/") <= MAX_LABEL_PREFIX, { error: allowed });
}

/**
 * A mapping whose keys must pass `key` and values `value`. A bad key is reported on the mapping
 * itself with the key as the value (the key is what to fix, and it is not a field of its own).
 */
function namedMap<V extends z.ZodType<string>>(what: string, key: z.ZodType<string>, keyAllowed: string, value: V) {
  return z.record(key, value, {
    error: (issue) => (issue.code === "invalid_key" ? keyAllowed : what),
  });
}

/** Kubernetes labels: metadata.labels, spec.placement.selector, a pod template's labels. */
export function labelMap() {
  const value = z.string({ error: LABEL_VALUE_ALLOWED }).regex(LABEL_VALUE, { error: LABEL_VALUE_ALLOWED });
  return namedMap("a mapping of label keys to string values", labelKey(), LABEL_KEY_ALLOWED, value);
}

/** Kubernetes annotations: label-style keys, any string values. */
export function annotationMap() {
  return namedMap("a mapping of annotation keys to string values", labelKey(), LABEL_KEY_ALLOWED, z.string({ error: `a string ${QUOTED}` }));
}

/** A child process's extra environment variables. */
export function environment() {
  const nameAllowed = "variable names of letters, digits and '_', not starting with a digit";
  const valueAllowed = `a string without NUL ${QUOTED}`;
  const value = z.string({ error: valueAllowed }).refine((text) => !text.includes("\0"), { error: valueAllowed });
  return namedMap("a mapping of variable names to string values", z.string().regex(ENV_NAME), nameAllowed, value);
}

/** Command arguments; like Kubernetes' args, numbers must be quoted so nothing is reformatted. */
export function stringList() {
  const itemAllowed = `a string without NUL ${QUOTED}`;
  const item = z.string({ error: itemAllowed }).refine((text) => !text.includes("\0"), { error: itemAllowed });
  return z.array(item, { error: "a list of strings" });
}

/**
 * HTTP request headers. A value may be `${env:NAME}`, read from the sender's environment when
 * it sends, so a secret stays out of the manifest every viewer can read.
 */
export function headerMap() {
  const valueAllowed = `a string without line breaks or NUL ${QUOTED}`;
  const value = z
    .string({ error: valueAllowed })
    // A line break in a value would let it smuggle in headers of its own.
    .refine((text) => !/[\r\n\0]/.test(text), { error: valueAllowed, abort: true })
    .refine((text) => envReference(text) !== "", { error: ENV_REFERENCE_ALLOWED });
  const nameAllowed = "header names of letters, digits and !#$%&'*+.^_`|~-";
  return namedMap("a mapping of header names to string values", z.string().regex(HEADER_NAME), nameAllowed, value).superRefine(
    (headers, ctx) => {
      // Header names are case-insensitive: two spellings of one would leave which one is sent to chance.
      const seen = new Set<string>();
      for (const name of Object.keys(headers)) {
        if (seen.has(name.toLowerCase())) refuseValue(ctx, [], name, "each header name once, in any letter case");
        seen.add(name.toLowerCase());
      }
    },
    { when: clean },
  );
}

/** An absolute http:// or https:// URL with a host. */
export function httpUrl() {
  return z.string({ error: URL_ALLOWED }).refine(isHttpUrl, { error: URL_ALLOWED });
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
  } catch {
    return false;
  }
}

/**
 * For a refinement across fields: run only once every field is valid, so it reasons about a
 * value of the declared shape and the user hears of a field's own problem first.
 */
export function clean(payload: z.core.ParsePayload): boolean {
  return payload.issues.length === 0;
}
