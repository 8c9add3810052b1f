import { describe, expect, it } from "vitest";
import { ShardlineError } from "../errors.js";
import { executorFields, executorFromFields, manifestShaped } from "./executor-fields.js";
import { parseManifest } from "./parse-manifest.js";
import { unknownExecutor, type ExecutorSpec } from "./job-spec.js";

const manifest = (spec: string) => `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: rollup}\nspec: ${spec}\n`;

const EACH_KIND: ExecutorSpec[] = [
  { kind: "handler", handler: "rollup" },
  { kind: "script", script: { command: "rollup", args: ["--month", "10"], env: {}, killGraceSeconds: 10 } },
  { kind: "http", http: { method: "POST", url: "https://billing.internal/rollup", headers: {}, body: "", connectTimeoutSeconds: 10, readTimeoutSeconds: 60 } },
  { kind: "kubernetes", kubernetes: { template: { metadata: { labels: {}, annotations: {} }, spec: { restartPolicy: "Never", containers: [{ name: "main", image: "x" }] } }, backoffLimit: 0, ttlSecondsAfterFinished: 3600, logContainer: "main" } },
];

describe("what a job runs", () => {
  it.each(EACH_KIND)("goes to the manifest's fields and back: $kind", (runs) => {
    const fields = executorFields(runs);
    expect(fields.handler).toBe(runs.kind === "handler" ? "rollup" : "");
    expect(Object.keys(fields)).toEqual(runs.kind === "handler" ? ["handler"] : ["handler", runs.kind]);
    expect(executorFromFields(fields)).toEqual(runs);
  });

  it("is the field a manifest gives, in the place spec.handler had", () => {
    const { spec } = parseManifest(manifest("{http: {url: https://billing.internal/rollup}, parameter: x}"));
    expect(spec.runs.kind).toBe("http");
    expect(Object.keys(spec)).not.toContain("handler");
    const shaped = manifestShaped(spec);
    expect(Object.keys(shaped).slice(Object.keys(shaped).indexOf("parameter"))).toEqual(expect.arrayContaining(["parameter", "handler", "http"]));
    expect(Object.keys(shaped).indexOf("handler")).toBe(Object.keys(shaped).indexOf("parameter") + 1);
    expect(shaped).not.toHaveProperty("runs");
    expect(shaped).toMatchObject({ handler: "", http: { url: "https://billing.internal/rollup" } });
  });

  it("refuses, as internal, a kind this version does not know (a spec a newer one stored)", () => {
    const fromTheFuture = { kind: "wasm", wasm: { module: "x" } } as unknown as never;
    expect(() => unknownExecutor(fromTheFuture)).toThrow(ShardlineError);
    expect(() => unknownExecutor(fromTheFuture)).toThrow('a job runs an executor of kind "wasm", which this version of Shardline does not know');
  });

  it("makes a switch that misses a kind fail to compile", () => {
    // tsc checks this file: the directive fails the build if the line below ever compiles.
    const withoutKubernetes = (runs: ExecutorSpec): string => {
      switch (runs.kind) {
        case "handler":
        case "script":
        case "http":
          return runs.kind;
        default:
          // @ts-expect-error runs is still { kind: "kubernetes" } here, not never
          return unknownExecutor(runs);
      }
    };
    expect(withoutKubernetes({ kind: "handler", handler: "rollup" })).toBe("handler");
  });
});
