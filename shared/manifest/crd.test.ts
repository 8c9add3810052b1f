import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { z } from "zod";
import { CRD_PATH, crdYamlText, shardedJobCrd, structuralProblems, structuralSchema, type SchemaNode } from "./crd.js";
import { manifestSchema } from "./manifest-schema.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const committed = readFileSync(`${ROOT}${CRD_PATH}`, "utf8");

type Version = { name: string; served: boolean; storage: boolean; subresources: SchemaNode; additionalPrinterColumns: { name: string; type: string; jsonPath: string }[]; schema: { openAPIV3Schema: SchemaNode } };
const crd = parse(committed) as { metadata: { name: string }; spec: { group: string; scope: string; names: SchemaNode; versions: Version[] } };
const [version] = crd.spec.versions as [Version];
const root = version.schema.openAPIV3Schema;

/** The schema node at a printer column's JSON path, e.g. .status.readyShards. */
function nodeAt(jsonPath: string): SchemaNode | undefined {
  let node: SchemaNode | undefined = root;
  for (const key of jsonPath.split(".").slice(1)) node = (node?.properties as Record<string, SchemaNode> | undefined)?.[key];
  return node;
}

describe(CRD_PATH, () => {
  it("is what the manifest schema generates (after a change, run npm run schema)", () => {
    expect(committed, `${CRD_PATH} is out of date: run npm run schema`).toBe(crdYamlText());
  });

  it("defines namespaced shardedjobs.shardline.dev v1, served and stored, with the status subresource, short name and category", () => {
    expect(crd.metadata.name).toBe("shardedjobs.shardline.dev");
    expect(crd.spec).toMatchObject({ group: "shardline.dev", scope: "Namespaced", names: { kind: "ShardedJob", plural: "shardedjobs", shortNames: ["sj"], categories: ["shardline"] } });
    expect(crd.spec.versions).toHaveLength(1);
    expect(version).toMatchObject({ name: "v1", served: true, storage: true, subresources: { status: {} } });
  });

  it("has a structural schema, which the manifest schema's own OpenAPI form is not", () => {
    expect(structuralProblems(root)).toEqual([]);
    const raw = z.toJSONSchema(manifestSchema, { io: "input", target: "openapi-3.0" }) as SchemaNode;
    const rawSpec = (raw.properties as Record<string, SchemaNode>).spec!;
    expect(structuralProblems(rawSpec)).toEqual(
      expect.arrayContaining(["(root): additionalProperties false is not allowed", "strategy: no type", "placement.spreadBy: uniqueItems true is not allowed"]),
    );
    expect(structuralProblems(structuralSchema(rawSpec))).toEqual([]);
  });

  it("takes spec's fields, types, bounds and defaults from the manifest schema", () => {
    const spec = (root.properties as Record<string, SchemaNode>).spec!;
    const raw = z.toJSONSchema(manifestSchema, { io: "input", target: "openapi-3.0" }) as SchemaNode;
    const rawSpec = (raw.properties as Record<string, SchemaNode>).spec!;
    expect(Object.keys(spec.properties as object)).toEqual(Object.keys(rawSpec.properties as object));
    expect((spec.properties as Record<string, SchemaNode>).shards).toMatchObject({ type: "integer", minimum: 1, maximum: 10_000, default: 1 });
    expect((spec.properties as Record<string, SchemaNode>).failover).toMatchObject({ type: "string", enum: ["fenced", "fast", "off"], default: "fenced" });
  });

  it("prints the columns kubectl get shows, each from a field the schema has, of the column's type", () => {
    const columns = version.additionalPrinterColumns;
    expect(columns.map((column) => column.name)).toEqual(["Schedule", "Shards", "Ready", "Last Fire", "Last Outcome", "Next Fire", "Revision", "Age"]);
    for (const column of columns) {
      if (column.jsonPath === ".metadata.creationTimestamp") continue;
      const node = nodeAt(column.jsonPath);
      expect(node, column.jsonPath).toBeDefined();
      const expected = column.type === "date" ? { type: "string", format: "date-time" } : { type: column.type };
      expect(node, column.jsonPath).toMatchObject(expected);
    }
  });

  it("lets the controller write the conditions Argo CD and Flux read, one per type", () => {
    const conditions = nodeAt(".status.conditions")!;
    expect(conditions).toMatchObject({ type: "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] });
    expect(Object.keys((conditions.items as SchemaNode).properties as object)).toEqual(["type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"]);
  });

  it("is the same object shardedJobCrd() returns, read as YAML 1.1 as kubectl reads it", () => {
    expect(crd).toEqual(shardedJobCrd());
    // A plain `off` (spec.failover's enum) is false in YAML 1.1.
    expect(parse(committed, { version: "1.1" })).toEqual(shardedJobCrd());
  });
});
