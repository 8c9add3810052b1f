import { parseAllDocuments } from "yaml";
import { ShardlineError } from "../errors.js";

/** A manifest is small; a handful of aliases is plenty, and a low cap stops expansion bombs. */
const MAX_ALIAS_COUNT = 10;
const ONE_DOCUMENT = "one YAML or JSON document describing a ShardedJob";

/**
 * The one YAML 1.2 (or JSON) document in `text`, as plain data for the manifest schema. Throws
 * `ShardlineError` on the field `manifest` for no document, several, a syntax error, a
 * duplicated key, an unknown tag or an alias bomb.
 */
export function readDocument(text: string): unknown {
  const documents = parseAllDocuments(text, { uniqueKeys: true });
  if ("empty" in documents || documents.length === 0) throw ShardlineError.invalid("manifest", text, ONE_DOCUMENT);
  if (documents.length > 1) throw ShardlineError.invalid("manifest", `${documents.length} documents`, ONE_DOCUMENT);
  const [document] = documents;
  // Warnings (e.g. an unknown !tag) would silently change a value's type; treat them as errors.
  const problem = document?.errors[0] ?? document?.warnings[0];
  if (problem !== undefined || document === undefined) {
    throw ShardlineError.invalid("manifest", firstLine(problem?.message ?? ""), ONE_DOCUMENT);
  }
  try {
    return document.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    // What fails here is an alias bomb: the yaml library's message says so, not what the limit is.
    const aliases = `${ONE_DOCUMENT}, using an anchor through aliases (*name) at most ${MAX_ALIAS_COUNT} times, fewer when it holds aliases itself (a fixed limit, no flag raises it)`;
    throw ShardlineError.invalid("manifest", firstLine(err instanceof Error ? err.message : String(err)), aliases);
  }
}

function firstLine(message: string): string {
  return message.split("\n", 1)[0]?.replace(/:$/, "") ?? message;
}
