import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { z } from "zod";
import { JSON_SCHEMA_PATH, manifestJsonSchemaText } from "./json-schema.js";
import { parseManifest } from "./parse-manifest.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const EXAMPLE = `${ROOT}examples/billing-rollup.yaml`;
const committed = readFileSync(`${ROOT}${JSON_SCHEMA_PATH}`, "utf8");
/** The committed JSON Schema read back as a validator, to check what an editor would say. */
const editorView = z.fromJSONSchema(JSON.parse(committed) as z.core.JSONSchema.JSONSchema);

/** Manifests using every field the parser accepts. */
const complete: Record<string, unknown>[] = [
  {
    apiVersion: "shardline.dev/v1",
    kind: "ShardedJob",
    metadata: { name: "rollup", labels: { team: "finance", "example.com/tier": "" } },
    spec: {
      schedule: "0 9 * * 1-5",
      timeZone: "Europe/Berlin",
      shards: 4,
      shardParameters: { 0: "beijing", 3: 2024 },
      parameter: "month=current",
      handler: "billing-rollup",
      strategy: "sticky",
      failover: "fast",
      misfire: "catch-up",
      maxCatchUp: 5,
      overlap: "replace",
      timeoutSeconds: 300,
      retries: { limit: 3, backoffSeconds: 10 },
      placement: { selector: { zone: "eu-1" }, spreadBy: ["topology.kubernetes.io/zone", "node"] },
      suspend: false,
      priority: -5,
      onFailure: { webhook: { url: "https://alerts.internal/x", headers: { Authorization: "${env:TOKEN}" } } },
      onFireComplete: { handler: "rollup-done" },
      description: "Monthly rollup",
    },
  },
  {
    apiVersion: "shardline.dev/v1",
    kind: "ShardedJob",
    metadata: { name: "script" },
    spec: { handler: "", script: { command: "python3", args: ["rollup.py"], env: { REGION: "eu-1" }, killGraceSeconds: 5 }, daemon: true },
  },
  {
    apiVersion: "shardline.dev/v1",
    kind: "ShardedJob",
    metadata: { name: "http" },
    spec: { strategy: "custom:geo", http: { method: "PUT", url: "http://127.0.0.1:8080/x", headers: { "X-Team": "a" }, body: "{}", connectTimeoutSeconds: 2, readTimeoutSeconds: 3 } },
  },
  {
    apiVersion: "shardline.dev/v1",
    kind: "ShardedJob",
    metadata: { name: "kubernetes" },
    spec: {
      kubernetes: {
        template: {
          metadata: { labels: { team: "a" }, annotations: { note: "x" } },
          spec: {
            serviceAccountName: "rollup",
            initContainers: [{ name: "fetch", image: "alpine:3.20" }],
            containers: [{ name: "rollup", image: "busybox:1.36", resources: { limits: { memory: "256Mi" } } }],
            restartPolicy: "OnFailure",
          },
        },
        backoffLimit: 1,
        ttlSecondsAfterFinished: 60,
        logContainer: "rollup",
        startTimeoutSeconds: 0,
      },
    },
  },
];

describe("shardedjob.schema.json", () => {
  it("is what the manifest schema generates (after a change, run npm run schema)", () => {
    expect(committed, `${JSON_SCHEMA_PATH} is out of date: run npm run schema`).toBe(manifestJsonSchemaText());
  });

  it.each(complete.map((manifest) => [(manifest.metadata as { name: string }).name, manifest] as const))(
    "accepts what the parser accepts: the %s manifest",
    (_name, manifest) => {
      parseManifest(stringify(manifest));
      expect(editorView.safeParse(manifest).success).toBe(true);
    },
  );

  it("tells an editor of an unknown field and a wrong type, as the parser would", () => {
    const [manifest] = complete as [{ spec: Record<string, unknown> }];
    expect(editorView.safeParse({ ...manifest, spec: { ...manifest.spec, shardz: 8 } }).success).toBe(false);
    expect(editorView.safeParse({ ...manifest, spec: { ...manifest.spec, shards: "8" } }).success).toBe(false);
    expect(editorView.safeParse({ ...manifest, spec: { ...manifest.spec, strategy: "custom:Geo" } }).success).toBe(false);
  });

  it("is named by examples/billing-rollup.yaml's modeline, which the parser takes as a comment", () => {
    const text = readFileSync(EXAMPLE, "utf8");
    const modeline = /^# yaml-language-server: \$schema=(\S+)$/m.exec(text)?.[1];
    expect(modeline).toBe("../shared/manifest/shardedjob.schema.json");
    expect(fileURLToPath(new URL(modeline!, `file://${EXAMPLE}`))).toBe(`${ROOT}${JSON_SCHEMA_PATH}`);
    expect(parseManifest(text).spec.name).toBe("billing-rollup");
    expect(editorView.safeParse(parse(text)).success).toBe(true);
  });
});
