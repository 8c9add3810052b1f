/** Job manifests: the normalised job type and the parser that validates a user's YAML or JSON. */
export * from "./job-spec.js";
export { manifestShaped, type ExecutorFields, type ManifestShapedSpec } from "./executor-fields.js";
export {
  MANIFEST_API_VERSION,
  MANIFEST_KIND,
  parseManifest,
  specEquals,
  specHash,
  canonicalJson,
  type ParsedManifest,
} from "./parse-manifest.js";
