import { z } from "zod";
import { manifestSchema } from "./manifest-schema.js";

/** Where the generated JSON Schema is kept, relative to the repository root. */
export const JSON_SCHEMA_PATH = "shared/manifest/shardedjob.schema.json";

/**
 * The ShardedJob manifest's JSON Schema, as shardedjob.schema.json holds it: what a user may
 * write (defaults are optional), without the rules across fields that only the parser checks.
 * Draft-07, the draft editors' YAML and JSON support reads best.
 */
export function manifestJsonSchemaText(): string {
  const schema = z.toJSONSchema(manifestSchema, { io: "input", target: "draft-7" });
  return `${JSON.stringify(schema, null, 2)}\n`;
}
