import { ShardlineError } from "../errors.js";

/** `${env:NAME}`: a header value taken from the environment of the process that sends it. */
const REFERENCE = /^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$/;

/** What a manifest may write for an environment reference. */
export const ENV_REFERENCE_ALLOWED = "${env:NAME}, NAME a variable name of letters, digits and '_' not starting with a digit";

/**
 * The variable a value names when it is a reference (`${env:API_TOKEN}` -> API_TOKEN), "" when
 * it starts like one but is malformed, undefined when it is a plain value.
 */
export function envReference(value: string): string | undefined {
  if (!value.startsWith("${env:")) return undefined;
  return REFERENCE.exec(value)?.[1] ?? "";
}

/**
 * Headers with each `${env:NAME}` replaced by NAME's value in `env`: secrets stay out of the
 * manifest, which every viewer can read, and come from the sender's environment (a Kubernetes
 * Secret as an environment variable). Throws a ShardlineError naming the header (`path.NAME`)
 * and the variable, never a value, when a variable is not set.
 */
export function resolveHeaders(headers: Readonly<Record<string, string>>, env: Readonly<Record<string, string | undefined>>, path: string): Record<string, string> {
  const resolved: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const variable = envReference(value);
    if (variable === undefined) {
      resolved[name] = value;
      continue;
    }
    const found = variable === "" ? undefined : env[variable];
    if (found === undefined || /[\r\n\0]/.test(found)) {
      throw new ShardlineError(
        "failed-precondition",
        `${path}.${name}: ${value} names no environment variable of this process that can be a header value (set ${variable || "it"}, without line breaks)`,
        { field: `${path}.${name}` },
      );
    }
    resolved[name] = found;
  }
  return resolved;
}
