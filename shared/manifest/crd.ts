import { stringify } from "yaml";
import { z } from "zod";
import { manifestSchema, MANIFEST_API_VERSION, MANIFEST_KIND } from "./manifest-schema.js";

/**
 * The ShardedJob CustomResourceDefinition, made from the same zod schema the controller validates
 * manifests with, so that what `kubectl apply` lets into the API server and what the controller
 * accepts cannot drift apart. Kubernetes takes only a structural schema (an OpenAPI 3.0 subset
 * with a type on every node); structuralSchema() turns the manifest's schema into one, and the
 * rules across fields that only the parser checks are listed in docs/kubernetes.md.
 */

/** Where the generated CRD is kept, relative to the repository root (the `crd` kustomize base). */
export const CRD_PATH = "deploy/kustomize/crd/shardedjobs.yaml";

export const CRD_GROUP = MANIFEST_API_VERSION.split("/")[0]!;
export const CRD_VERSION = MANIFEST_API_VERSION.split("/")[1]!;
export const CRD_PLURAL = "shardedjobs";
export const CRD_NAME = `${CRD_PLURAL}.${CRD_GROUP}`;

/** An OpenAPI 3.0 schema node, as a CRD's openAPIV3Schema holds it. */
export type SchemaNode = { [keyword: string]: unknown };

/** The condition types the controller writes in status.conditions, which Argo CD and Flux read. */
export const CONDITION_TYPES = ["Ready", "Progressing", "Degraded"] as const;

/**
 * The manifest's metadata.name rule: job names are DNS labels (they become parts of Kubernetes
 * Job names and label values), narrower than the DNS subdomain the API server would allow. A
 * structural schema may restrict metadata.name and nothing else of metadata.
 */
const metadataSchema: SchemaNode = {
  type: "object",
  properties: {
    name: {
      type: "string",
      maxLength: 63,
      pattern: "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
      description: "The job's name: a DNS-1123 label of at most 63 characters.",
    },
  },
};

const condition: SchemaNode = {
  type: "object",
  required: ["type", "status"],
  properties: {
    type: { type: "string", description: `One of ${CONDITION_TYPES.join(", ")}.` },
    status: { type: "string", enum: ["True", "False", "Unknown"] },
    reason: { type: "string", description: "A CamelCase word saying why, for tools." },
    message: { type: "string", description: "What happened, for people." },
    lastTransitionTime: { type: "string", format: "date-time", description: "When status last changed." },
    observedGeneration: { type: "integer", format: "int64", description: "The metadata.generation the condition was set for." },
  },
};

/** What the controller writes back through the status subresource (only the leader writes it). */
const statusSchema: SchemaNode = {
  type: "object",
  description: "What the controller last saw of the job; written by the leading controller through the status subresource.",
  properties: {
    observedGeneration: { type: "integer", format: "int64", description: "The metadata.generation the controller last applied to its store." },
    conditions: {
      type: "array",
      description: "Ready (the job is applied and its shards owned), Progressing (a rollout is under way), Degraded (reason and message say why).",
      items: condition,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
    },
    owners: {
      type: "object",
      description: "Agent id to the number of the job's shards it owns.",
      additionalProperties: { type: "integer", format: "int32" },
    },
    shards: { type: "integer", format: "int32", description: "The job's shards, as spec.shards." },
    readyShards: { type: "integer", format: "int32", description: "Shards an agent owns and may run." },
    lastFire: { type: "string", format: "date-time", description: "The last scheduled or triggered fire." },
    nextFire: { type: "string", format: "date-time", description: "The next scheduled fire; absent for a suspended or manual-only job." },
    lastOutcome: { type: "string", description: "How the last finished fire ended: Succeeded, Failed, TimedOut, Cancelled, Lost or Misfired." },
    currentRevision: { type: "integer", format: "int64", description: "The job revision new fires run (the target while a rollout is under way)." },
    stableRevision: { type: "integer", format: "int64", description: "The revision a rollout started from; equal to currentRevision when none is under way." },
  },
};

const printerColumns = [
  { name: "Schedule", type: "string", jsonPath: ".spec.schedule" },
  { name: "Shards", type: "integer", jsonPath: ".spec.shards" },
  { name: "Ready", type: "integer", jsonPath: ".status.readyShards", description: "Shards an agent owns and may run." },
  { name: "Last Fire", type: "date", jsonPath: ".status.lastFire" },
  { name: "Last Outcome", type: "string", jsonPath: ".status.lastOutcome" },
  { name: "Next Fire", type: "date", jsonPath: ".status.nextFire" },
  { name: "Revision", type: "integer", jsonPath: ".status.currentRevision" },
  { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
];

/** The CRD as an object, ready to be written as YAML or sent to an API server. */
export function shardedJobCrd(): SchemaNode {
  const manifest = z.toJSONSchema(manifestSchema, { io: "input", target: "openapi-3.0" }) as SchemaNode;
  const spec = structuralSchema((manifest.properties as Record<string, SchemaNode>).spec!);
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: CRD_NAME,
      labels: { "app.kubernetes.io/name": "shardline", "app.kubernetes.io/part-of": "shardline" },
    },
    spec: {
      group: CRD_GROUP,
      scope: "Namespaced",
      names: {
        kind: MANIFEST_KIND,
        listKind: `${MANIFEST_KIND}List`,
        plural: CRD_PLURAL,
        singular: MANIFEST_KIND.toLowerCase(),
        shortNames: ["sj"],
        categories: ["shardline"],
      },
      versions: [
        {
          name: CRD_VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: printerColumns,
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: manifest.description,
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: metadataSchema,
                spec,
                status: statusSchema,
              },
            },
          },
        },
      ],
    },
  };
}

/** The CRD as the committed YAML file holds it. */
export function crdYamlText(): string {
  const header =
    "# Generated by `npm run schema` from shared/manifest/manifest-schema.ts (shared/manifest/crd.ts): do not edit.\n" +
    "# shared/manifest/crd.test.ts fails while this file differs from what the schema generates.\n";
  // YAML 1.1, as kubectl reads it: a plain `off` (spec.failover's enum) would be read as false.
  return header + stringify(shardedJobCrd(), { lineWidth: 0, version: "1.1" });
}

/**
 * Turns an OpenAPI 3.0 schema made by z.toJSONSchema into a structural one, as a v1 CRD requires:
 *
 * - `additionalProperties: false` goes: Kubernetes forbids it, and prunes unknown fields instead
 *   (kubectl's default strict field validation refuses them, naming the field).
 * - `additionalProperties: {}` beside `properties` (a pod spec Shardline passes through) becomes
 *   `x-kubernetes-preserve-unknown-fields`, which keeps the fields it does not list.
 * - `nullable` goes: the API server prunes a null field that is not nullable, and the parser reads
 *   a field written empty as not given, so both end with the field absent.
 * - `anyOf` over one type keeps its alternatives as value checks under that type; string or
 *   number becomes `x-kubernetes-int-or-string` (a fraction must then be quoted).
 * - `uniqueItems` (forbidden: its check is quadratic) becomes `x-kubernetes-list-type: set` on a
 *   list of scalars, which Kubernetes checks for duplicates.
 */
export function structuralSchema(node: SchemaNode): SchemaNode {
  const { additionalProperties, nullable: _nullable, uniqueItems, anyOf, properties, items, title: _title, ...rest } = node;
  const out: SchemaNode = { ...rest };
  if (Array.isArray(anyOf)) Object.assign(out, structuralUnion(anyOf as SchemaNode[]));
  if (properties !== undefined) {
    out.properties = Object.fromEntries(Object.entries(properties as Record<string, SchemaNode>).map(([key, value]) => [key, structuralSchema(value)]));
  }
  if (items !== undefined) out.items = structuralSchema(items as SchemaNode);
  if (typeof additionalProperties === "object" && additionalProperties !== null) {
    if (Object.keys(additionalProperties).length === 0) out["x-kubernetes-preserve-unknown-fields"] = true;
    else out.additionalProperties = structuralSchema(additionalProperties as SchemaNode);
  }
  if (uniqueItems === true) out["x-kubernetes-list-type"] = "set";
  return out;
}

function structuralUnion(alternatives: SchemaNode[]): SchemaNode {
  const types = new Set(alternatives.map((alternative) => alternative.type));
  if (types.size === 2 && types.has("string") && (types.has("number") || types.has("integer"))) {
    if (alternatives.some((alternative) => Object.keys(alternative).length > 1)) throw new Error("a string-or-number union with checks of its own has no structural form");
    return { "x-kubernetes-int-or-string": true };
  }
  const [type] = types;
  if (types.size !== 1 || typeof type !== "string") throw new Error(`a union of ${[...types].join(", ")} has no structural form`);
  // The type moves out of the alternatives: a structural schema states it once, outside anyOf.
  return { type, anyOf: alternatives.map(({ type: _type, ...checks }) => checks) };
}

/**
 * What makes `schema` not structural, as dotted paths with the reason; empty for a schema a v1
 * CRD accepts. The checks are the API server's for the keywords z.toJSONSchema produces.
 */
export function structuralProblems(schema: SchemaNode, path = ""): string[] {
  const problems: string[] = [];
  const at = path === "" ? "(root)" : path;
  const unknownAllowed = schema["x-kubernetes-preserve-unknown-fields"] === true || schema["x-kubernetes-int-or-string"] === true;
  if (typeof schema.type !== "string" && !unknownAllowed) problems.push(`${at}: no type`);
  for (const keyword of ["$schema", "$ref", "definitions", "const", "propertyNames", "nullable", "title"]) {
    if (keyword in schema) problems.push(`${at}: ${keyword} is not allowed`);
  }
  if (schema.additionalProperties === false) problems.push(`${at}: additionalProperties false is not allowed`);
  if (schema.additionalProperties !== undefined && schema.properties !== undefined) problems.push(`${at}: additionalProperties beside properties`);
  if (schema.uniqueItems === true) problems.push(`${at}: uniqueItems true is not allowed`);
  if ("exclusiveMinimum" in schema && typeof schema.exclusiveMinimum !== "boolean") problems.push(`${at}: exclusiveMinimum must be a boolean`);
  for (const junctor of ["anyOf", "allOf", "oneOf"]) {
    for (const [index, alternative] of ((schema[junctor] as SchemaNode[] | undefined) ?? []).entries()) {
      for (const keyword of ["type", "default", "description", "additionalProperties", "nullable", "properties", "items"]) {
        if (keyword in alternative) problems.push(`${at}.${junctor}[${index}]: ${keyword} inside ${junctor}`);
      }
    }
  }
  for (const [key, child] of Object.entries((schema.properties as Record<string, SchemaNode> | undefined) ?? {})) problems.push(...structuralProblems(child, `${path}.${key}`.replace(/^\./, "")));
  if (schema.items !== undefined) problems.push(...structuralProblems(schema.items as SchemaNode, `${path}[]`));
  if (typeof schema.additionalProperties === "object") problems.push(...structuralProblems(schema.additionalProperties as SchemaNode, `${path}{}`));
  return problems;
}
