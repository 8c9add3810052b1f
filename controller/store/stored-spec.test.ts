import { describe, expect, it } from "vitest";
import { manifestShaped, parseManifest, specEquals } from "../../shared/manifest/index.js";
import { readStoredSpec } from "./stored-spec.js";

/** A manifest of job "rollup" with this spec. */
const manifest = (spec: string) => `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: rollup}\nspec: ${spec}\n`;

/** The rest of each stored spec below, as the schema fills it in. */
const REST =
  '"strategy":"sticky","failover":"fenced","misfire":"fire-once","maxCatchUp":10,"overlap":"forbid","timeoutSeconds":0,' +
  '"retries":{"limit":0,"backoffSeconds":10},"placement":{"selector":{}},"suspend":false,"priority":0,"daemon":false,"description":""';

/**
 * spec_json (SQLite) and jobs/NAME's spec (etcd) exactly as a version before JobSpec.runs stored
 * them, beside the manifest each was applied from.
 */
const STORED_BEFORE_RUNS: [kind: string, spec: string, stored: string][] = [
  [
    "handler",
    '{handler: rollup, schedule: "0 9 * * *"}',
    `{"name":"rollup","labels":{},"schedule":"0 9 * * *","timeZone":"UTC","shards":1,"shardParameters":{},"parameter":"","handler":"rollup",${REST}}`,
  ],
  [
    "script",
    "{script: {command: /usr/local/bin/rollup}}",
    '{"name":"rollup","labels":{},"timeZone":"UTC","shards":1,"shardParameters":{},"parameter":"","handler":"",' +
      `"script":{"command":"/usr/local/bin/rollup","args":[],"env":{},"killGraceSeconds":10},${REST}}`,
  ],
  [
    "http",
    '{http: {url: "https://billing.internal/rollup"}}',
    '{"name":"rollup","labels":{},"timeZone":"UTC","shards":1,"shardParameters":{},"parameter":"","handler":"",' +
      '"http":{"method":"POST","url":"https://billing.internal/rollup","headers":{},"body":"","connectTimeoutSeconds":10,"readTimeoutSeconds":60},' +
      `${REST}}`,
  ],
  [
    "kubernetes",
    '{kubernetes: {template: {spec: {containers: [{name: main, image: "busybox:1.36"}]}}}}',
    '{"name":"rollup","labels":{},"timeZone":"UTC","shards":1,"shardParameters":{},"parameter":"","handler":"",' +
      '"kubernetes":{"template":{"metadata":{"labels":{},"annotations":{}},"spec":{"containers":[{"name":"main","image":"busybox:1.36"}],"restartPolicy":"Never"}},' +
      `"backoffLimit":0,"ttlSecondsAfterFinished":3600,"startTimeoutSeconds":600,"logContainer":"main"},${REST}}`,
  ],
];

describe("readStoredSpec", () => {
  it.each(STORED_BEFORE_RUNS)("reads a %s job stored before JobSpec.runs as its manifest parses today", (kind, spec, stored) => {
    const read = readStoredSpec(JSON.parse(stored));
    expect(read.runs.kind).toBe(kind);
    expect(read).toEqual(parseManifest(manifest(spec)).spec);
  });

  it.each(STORED_BEFORE_RUNS)("keeps a %s job stored before JobSpec.runs unchanged: applying its manifest again is no change", (_kind, spec, stored) => {
    expect(specEquals(readStoredSpec(JSON.parse(stored)), parseManifest(manifest(spec)).spec)).toBe(true);
  });

  it.each(STORED_BEFORE_RUNS)("shows a %s job stored before JobSpec.runs in the API exactly as before", (_kind, _spec, stored) => {
    expect(JSON.stringify(manifestShaped(readStoredSpec(JSON.parse(stored))))).toBe(stored);
  });

  it("puts runs where handler was, so the spec lists its fields in the manifest's order", () => {
    const [, , stored] = STORED_BEFORE_RUNS[1]!;
    const keys = Object.keys(readStoredSpec(JSON.parse(stored)));
    expect(keys.slice(keys.indexOf("parameter"), keys.indexOf("parameter") + 3)).toEqual(["parameter", "runs", "strategy"]);
  });

  it("reads a spec stored before spec.daemon and spec.priority too", () => {
    const stored = JSON.parse(STORED_BEFORE_RUNS[0]![2]) as Record<string, unknown>;
    delete stored.daemon;
    delete stored.priority;
    const read = readStoredSpec(stored);
    expect(read.runs).toEqual({ kind: "handler", handler: "rollup" });
    expect(specEquals(read, parseManifest(manifest(STORED_BEFORE_RUNS[0]![1])).spec)).toBe(true);
  });

  it("takes a spec stored with runs as it is", () => {
    const spec = parseManifest(manifest("{http: {url: https://billing.internal/rollup}}")).spec;
    const stored: unknown = JSON.parse(JSON.stringify(spec));
    expect(readStoredSpec(stored)).toBe(stored);
    expect(readStoredSpec(stored)).toEqual(spec);
  });
});
