import { unknownExecutor, type ExecutorKind, type ExecutorSpec, type JobSpec } from "./job-spec.js";

/** What a job of kind K runs: the value of its manifest field. */
type Payload<K extends ExecutorKind> = Extract<ExecutorSpec, { kind: K }> extends Record<K, infer T> ? T : never;

/**
 * What a job runs, as the manifest writes it: one field per kind, exactly one given, and handler
 * "" when another is. Specs stored before JobSpec.runs existed hold these fields, and the admin
 * API's spec_json shows them, so both directions live here.
 */
export type ExecutorFields = { handler: string } & { [K in Exclude<ExecutorKind, "handler">]?: Payload<K> };

/** The manifest fields that say what a job runs, in the order a spec lists them; each names its kind. */
export const EXECUTOR_FIELDS = ["handler", "script", "http", "kubernetes"] as const satisfies readonly ExecutorKind[];

/** The same fields in the order the code that read them one by one checked them: handler last, as it is "" beside another. */
const PRECEDENCE = ["script", "http", "kubernetes", "handler"] as const satisfies readonly ExecutorKind[];

type Expect<T extends true> = T;
/** Fail to compile when an ExecutorSpec kind is missing from a list above. */
type _EveryKindHasAField = Expect<[ExecutorKind] extends [(typeof EXECUTOR_FIELDS)[number]] ? true : false>;
type _EveryKindHasAPlace = Expect<[ExecutorKind] extends [(typeof PRECEDENCE)[number]] ? true : false>;

/**
 * What a job runs, from the manifest's fields. A valid manifest gives exactly one; should more be
 * given (a hand-edited stored spec), the first in PRECEDENCE wins, as before JobSpec.runs. None
 * given reads as the handler "".
 */
export function executorFromFields(fields: Partial<ExecutorFields>): ExecutorSpec {
  const kind = PRECEDENCE.find((field) => fields[field] !== undefined) ?? "handler";
  // The kind and its own field's value: the one shape of ExecutorSpec for that kind.
  return { kind, [kind]: fields[kind] ?? "" } as ExecutorSpec;
}

/** The manifest's fields for what a job runs: handler "" unless it runs a handler. */
export function executorFields(runs: ExecutorSpec): ExecutorFields {
  switch (runs.kind) {
    case "handler":
      return { handler: runs.handler };
    case "script":
      return { handler: "", script: runs.script };
    case "http":
      return { handler: "", http: runs.http };
    case "kubernetes":
      return { handler: "", kubernetes: runs.kubernetes };
    default:
      return unknownExecutor(runs);
  }
}

/** A job with its manifest fields in place of `runs`. */
export type ManifestShapedSpec = Omit<JobSpec, "runs"> & ExecutorFields;

/**
 * The job in the manifest's shape, `runs` replaced by spec.handler and the field of its kind in
 * the same place: what the admin API's spec_json shows (its shape follows the manifest's).
 */
export function manifestShaped(spec: JobSpec): ManifestShapedSpec {
  return Object.fromEntries(
    Object.entries(spec).flatMap(([key, value]) => (key === "runs" ? Object.entries(executorFields(spec.runs)) : [[key, value]])),
  ) as ManifestShapedSpec;
}

/** The job with `runs` in place of the manifest fields, at handler's place: the inverse of manifestShaped. */
export function withExecutor<T extends Partial<ExecutorFields>>(fields: T): Omit<T, keyof ExecutorFields> & { runs: ExecutorSpec } {
  const runs = executorFromFields(fields);
  const entries = Object.entries(fields).flatMap(([key, value]): [string, unknown][] =>
    key === "handler" ? [["runs", runs]] : (EXECUTOR_FIELDS as readonly string[]).includes(key) ? [] : [[key, value]],
  );
  if (!("handler" in fields)) entries.push(["runs", runs]);
  return Object.fromEntries(entries) as Omit<T, keyof ExecutorFields> & { runs: ExecutorSpec };
}
