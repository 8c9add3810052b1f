import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { CRD_PATH, crdYamlText } from "./crd.js";

/**
 * `npm run schema` (after the JSON Schema): writes the ShardedJob CRD from the manifest schema,
 * run from the repository root. crd.test.ts fails while the committed file differs, so the CRD
 * a cluster installs never lags behind what the controller accepts.
 */
mkdirSync(dirname(CRD_PATH), { recursive: true });
writeFileSync(CRD_PATH, crdYamlText());
console.log(`wrote ${CRD_PATH}`);
