import { writeFileSync } from "node:fs";
import { JSON_SCHEMA_PATH, manifestJsonSchemaText } from "./json-schema.js";

/**
 * `npm run schema`: writes shardedjob.schema.json from the manifest schema, run from the
 * repository root after a change to manifest-schema.ts or a schema it uses. json-schema.test.ts
 * fails while the committed file differs, so editors never see a stale schema.
 */
writeFileSync(JSON_SCHEMA_PATH, manifestJsonSchemaText());
console.log(`wrote ${JSON_SCHEMA_PATH}`);
