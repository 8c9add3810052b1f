import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { ShardlineError } from "../errors.js";
import { parseManifest, specEquals, type JobSpec } from "./index.js";

const EXAMPLE = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: billing-rollup, labels: {team: finance}}
spec:
  schedule: "*/5 * * * * *"
  timeZone: Asia/Shanghai
  shards: 8
  shardParameters: {"0": beijing, "1": shanghai}
  parameter: "month=current"
  handler: billing-rollup
  strategy: sticky
  failover: fenced
  misfire: fire-once
  overlap: forbid
  timeoutSeconds: 300
  retries: {limit: 3, backoffSeconds: 10}
  placement: {selector: {zone: eu-1}}
  suspend: false
`;

type Doc = Record<string, unknown>;

/** The smallest valid manifest, as a plain object a test can change before serialising. */
function minimal(): { apiVersion: string; kind: string; metadata: Doc; spec: Doc } {
  return {
    apiVersion: "shardline.dev/v1",
    kind: "ShardedJob",
    metadata: { name: "nightly" },
    spec: { handler: "nightly-report" },
  };
}

function withSpec(fields: Doc): string {
  const doc = minimal();
  return stringify({ ...doc, spec: { ...doc.spec, ...fields } });
}

function withMetadata(fields: Doc): string {
  const doc = minimal();
  return stringify({ ...doc, metadata: { ...doc.metadata, ...fields } });
}

function errorFrom(text: string): ShardlineError {
  try {
    parseManifest(text);
  } catch (err) {
    if (err instanceof ShardlineError) return err;
    throw err;
  }
  throw new Error("expected parseManifest to throw");
}

describe("parseManifest", () => {
  it("reads the DESIGN.md example into a complete job", () => {
    const { spec, manifest } = parseManifest(EXAMPLE);
    expect(spec).toEqual<JobSpec>({
      name: "billing-rollup",
      labels: { team: "finance" },
      description: "",
      schedule: "*/5 * * * * *",
      timeZone: "Asia/Shanghai",
      shards: 8,
      shardParameters: { 0: "beijing", 1: "shanghai" },
      parameter: "month=current",
      handler: "billing-rollup",
      strategy: "sticky",
      failover: "fenced",
      misfire: "fire-once",
      maxCatchUp: 10,
      overlap: "forbid",
      timeoutSeconds: 300,
      retries: { limit: 3, backoffSeconds: 10 },
      placement: { selector: { zone: "eu-1" } },
      suspend: false,
    });
    expect(manifest).toBe(EXAMPLE.trim());
  });

  it("fills every default job-spec.ts documents", () => {
    const { spec } = parseManifest(stringify(minimal()));
    expect(spec).toEqual<JobSpec>({
      name: "nightly",
      labels: {},
      description: "",
      timeZone: "UTC",
      shards: 1,
      shardParameters: {},
      parameter: "",
      handler: "nightly-report",
      strategy: "sticky",
      failover: "fenced",
      misfire: "fire-once",
      maxCatchUp: 10,
      overlap: "forbid",
      timeoutSeconds: 0,
      retries: { limit: 0, backoffSeconds: 10 },
      placement: { selector: {} },
      suspend: false,
    });
    expect("schedule" in spec).toBe(false);
  });

  it("reads JSON as well as YAML", () => {
    const json = JSON.stringify({ ...minimal(), spec: { handler: "h", shards: 3, schedule: "0 9 * * 1-5" } });
    const { spec, manifest } = parseManifest(`  ${json}\n`);
    expect(spec.shards).toBe(3);
    expect(spec.schedule).toBe("0 9 * * 1-5");
    expect(manifest).toBe(json);
  });

  it("takes an empty field as not given", () => {
    const { spec } = parseManifest(`${stringify(minimal())}\n`.replace("spec:\n", "spec:\n  description:\n  retries:\n"));
    expect(spec.description).toBe("");
    expect(spec.retries).toEqual({ limit: 0, backoffSeconds: 10 });
  });

  it("takes numeric shard parameters as their decimal text", () => {
    const { spec } = parseManifest(withSpec({ shards: 4, shardParameters: { 0: 2024, 3: 1.5, 1: "x" } }));
    expect(spec.shardParameters).toEqual({ 0: "2024", 1: "x", 3: "1.5" });
  });

  it("accepts label keys with a DNS prefix and empty label values", () => {
    const { spec } = parseManifest(withMetadata({ labels: { "shardline.dev/tier": "gold", "app.kubernetes.io_x": "", A_b: "c.d" } }));
    expect(spec.labels).toEqual({ "shardline.dev/tier": "gold", "app.kubernetes.io_x": "", A_b: "c.d" });
  });

  it("accepts every documented bound", () => {
    const { spec } = parseManifest(
      withSpec({
        shards: 10_000,
        maxCatchUp: 1000,
        timeoutSeconds: 604_800,
        retries: { limit: 100, backoffSeconds: 86_400 },
        strategy: "round-robin",
        failover: "off",
        misfire: "catch-up",
        overlap: "replace",
        suspend: true,
        shardParameters: { 9999: "last" },
      }),
    );
    expect(spec).toMatchObject({ shards: 10_000, maxCatchUp: 1000, timeoutSeconds: 604_800, suspend: true });
    expect(spec.shardParameters[9999]).toBe("last");
  });

  it("names the field, the value and what is allowed", () => {
    const error = errorFrom(withSpec({ shards: 0 }));
    expect(error.code).toBe("invalid-argument");
    expect(error.message).toBe("spec.shards: 0 is not allowed; expected an integer from 1 to 10000");
    expect(error.details).toEqual({ field: "spec.shards", value: "0", allowed: "an integer from 1 to 10000" });
  });

  it("lists the known fields when a field is misspelt", () => {
    const error = errorFrom(withSpec({ shardz: 8 }));
    expect(error.details.field).toBe("spec.shardz");
    expect(error.message).toContain("spec has only schedule, timeZone, shards");
  });

  it("points users of a later executor at spec.handler", () => {
    const error = errorFrom(withSpec({ script: { command: ["echo"] } }));
    expect(error.details.field).toBe("spec.script");
    expect(error.message).toContain("spec.handler");
    expect(error.message).toContain("not supported yet");
  });

  const long = (n: number) => "a".repeat(n);
  const bomb = [
    "a: &a [x, x, x, x, x, x, x, x]",
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a]",
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]",
    "d: [*c, *c, *c, *c, *c, *c, *c, *c]",
  ].join("\n");

  // [what is wrong, manifest, field the error names, words from what is allowed]
  const invalid: [string, string, string, string][] = [
    ["nothing at all", "", "manifest", "one YAML or JSON document"],
    ["two documents", `${stringify(minimal())}---\n${stringify(minimal())}`, "manifest", "one YAML or JSON document"],
    ["broken YAML", "apiVersion: [shardline.dev/v1\nkind: ShardedJob", "manifest", "one YAML or JSON document"],
    ["a duplicated key", `${stringify(minimal())}kind: ShardedJob\n`, "manifest", "one YAML or JSON document"],
    ["an unknown tag", `${stringify(minimal())}x: !secret y\n`, "manifest", "one YAML or JSON document"],
    ["an alias bomb", bomb, "manifest", "one YAML or JSON document"],
    ["a list at the top", "- a\n- b\n", "manifest", "a mapping with the fields apiVersion, kind, metadata, spec"],
    ["an unknown top-level field", `${stringify(minimal())}status: {}\n`, "status", "apiVersion, kind, metadata, spec"],
    ["another apiVersion", stringify({ ...minimal(), apiVersion: "batch/v1" }), "apiVersion", '"shardline.dev/v1"'],
    ["another kind", stringify({ ...minimal(), kind: "CronJob" }), "kind", '"ShardedJob"'],
    ["no metadata", stringify({ ...minimal(), metadata: undefined }), "metadata", "a mapping with the fields name, labels"],
    ["no name", withMetadata({ name: undefined }), "metadata.name", "DNS-1123 label"],
    ["an uppercase name", withMetadata({ name: "Nightly" }), "metadata.name", "DNS-1123 label"],
    ["a name of 64 characters", withMetadata({ name: long(64) }), "metadata.name", "1 to 63"],
    ["a name ending in '-'", withMetadata({ name: "nightly-" }), "metadata.name", "DNS-1123 label"],
    ["a numeric name", withMetadata({ name: 7 }), "metadata.name", "DNS-1123 label"],
    ["an unknown metadata field", withMetadata({ namespace: "default" }), "metadata.namespace", "name, labels"],
    ["labels as a list", withMetadata({ labels: ["team"] }), "metadata.labels", "a mapping of label keys"],
    ["a bad label key", withMetadata({ labels: { "-team": "x" } }), "metadata.labels", "label keys of 1 to 63"],
    ["a bad label key prefix", withMetadata({ labels: { "Example.com/team": "x" } }), "metadata.labels", "DNS subdomain prefix"],
    ["a label value of 64 characters", withMetadata({ labels: { team: long(64) } }), "metadata.labels.team", "at most 63"],
    ["a numeric label value", withMetadata({ labels: { team: 1 } }), "metadata.labels.team", "a string"],
    ["spec as a list", stringify({ ...minimal(), spec: ["handler"] }), "spec", "a mapping with the fields schedule"],
    ["a misspelt spec field", withSpec({ shardz: 8 }), "spec.shardz", "spec has only"],
    ["an http executor", withSpec({ http: { url: "http://x" } }), "spec.http", "expected spec.handler"],
    ["a kubernetes executor", withSpec({ handler: undefined, kubernetes: {} }), "spec.kubernetes", "not supported yet"],
    ["no handler", withSpec({ handler: undefined }), "spec.handler", "a handler name of 1 to 128"],
    ["a handler with a space", withSpec({ handler: "billing rollup" }), "spec.handler", "letters, digits"],
    ["a handler of 129 characters", withSpec({ handler: long(129) }), "spec.handler", "1 to 128"],
    ["a numeric handler", withSpec({ handler: 42 }), "spec.handler", "a handler name"],
    ["a schedule of 4 fields", withSpec({ schedule: "* * * *" }), "spec.schedule", "5 fields"],
    ["a minute of 61", withSpec({ schedule: "61 * * * *" }), "spec.schedule", "got value 61"],
    ["February 30", withSpec({ schedule: "0 0 30 2 *" }), "spec.schedule", "day of month"],
    ["a hashed schedule", withSpec({ schedule: "H 0 * * *" }), "spec.schedule", "without the hashed form H"],
    ["a numeric schedule", withSpec({ schedule: 5 }), "spec.schedule", "a string"],
    ["an unknown zone", withSpec({ schedule: "0 9 * * *", timeZone: "Mars/Olympus_Mons" }), "spec.timeZone", "an IANA time zone"],
    ["an unknown zone without a schedule", withSpec({ timeZone: "Nowhere" }), "spec.timeZone", "an IANA time zone"],
    ["shards as a string", withSpec({ shards: "8" }), "spec.shards", "an integer from 1 to 10000"],
    ["zero shards", withSpec({ shards: 0 }), "spec.shards", "an integer from 1 to 10000"],
    ["10001 shards", withSpec({ shards: 10_001 }), "spec.shards", "an integer from 1 to 10000"],
    ["a fractional shard count", withSpec({ shards: 2.5 }), "spec.shards", "an integer"],
    ["a shard parameter past the last shard", withSpec({ shards: 8, shardParameters: { 9: "x" } }), "spec.shardParameters.9", "from 0 to 7"],
    ["a shard parameter for shard 1 of 1", withSpec({ shardParameters: { 1: "x" } }), "spec.shardParameters.1", "from 0 to 0"],
    ["a non-numeric shard key", withSpec({ shards: 2, shardParameters: { first: "x" } }), "spec.shardParameters.first", "a shard number"],
    ["a padded shard key", withSpec({ shards: 2, shardParameters: { "01": "x" } }), "spec.shardParameters.01", "a shard number"],
    ["a boolean shard parameter", withSpec({ shards: 2, shardParameters: { 0: true } }), "spec.shardParameters.0", "a string"],
    ["shard parameters as a list", withSpec({ shardParameters: ["x"] }), "spec.shardParameters", "a mapping from shard number"],
    ["a numeric parameter", withSpec({ parameter: 3 }), "spec.parameter", "a string"],
    ["a numeric description", withSpec({ description: 3 }), "spec.description", "a string"],
    ["an unknown strategy", withSpec({ strategy: "random" }), "spec.strategy", "one of sticky, balanced, odd-even, round-robin"],
    ["an unknown failover", withSpec({ failover: "slow" }), "spec.failover", "one of fenced, fast, off"],
    ["an unknown misfire policy", withSpec({ misfire: "retry" }), "spec.misfire", "one of fire-once, skip, catch-up"],
    ["an unknown overlap policy", withSpec({ overlap: "queue" }), "spec.overlap", "one of forbid, allow, replace"],
    ["a maxCatchUp of 0", withSpec({ maxCatchUp: 0 }), "spec.maxCatchUp", "an integer from 1 to 1000"],
    ["a maxCatchUp of 1001", withSpec({ maxCatchUp: 1001 }), "spec.maxCatchUp", "an integer from 1 to 1000"],
    ["a negative timeout", withSpec({ timeoutSeconds: -1 }), "spec.timeoutSeconds", "an integer from 0 to 604800"],
    ["a timeout over a week", withSpec({ timeoutSeconds: 604_801 }), "spec.timeoutSeconds", "an integer from 0 to 604800"],
    ["101 retries", withSpec({ retries: { limit: 101 } }), "spec.retries.limit", "an integer from 0 to 100"],
    ["a backoff over a day", withSpec({ retries: { backoffSeconds: 86_401 } }), "spec.retries.backoffSeconds", "an integer from 0 to 86400"],
    ["an unknown retries field", withSpec({ retries: { tries: 3 } }), "spec.retries.tries", "limit, backoffSeconds"],
    ["retries as a number", withSpec({ retries: 3 }), "spec.retries", "a mapping with the fields limit, backoffSeconds"],
    ["an unknown placement field", withSpec({ placement: { zone: "eu-1" } }), "spec.placement.zone", "selector"],
    ["a numeric selector value", withSpec({ placement: { selector: { rack: 7 } } }), "spec.placement.selector.rack", "a string"],
    ["suspend as the string yes", withSpec({ suspend: "yes" }), "spec.suspend", "true or false"],
  ];

  const cases = invalid.map(([what, text, field, allowed]) => ({ what, text, field, allowed }));
  it.each(cases)("rejects $what, naming $field", ({ text, field, allowed }) => {
    const error = errorFrom(text);
    expect(error.code).toBe("invalid-argument");
    expect(error.details.field).toBe(field);
    expect(error.message.startsWith(`${field}: `)).toBe(true);
    expect(error.message).toContain(allowed);
  });

  it("reads YAML 1.2, where yes is a string and not a boolean", () => {
    expect(errorFrom(`${stringify(minimal())}`.replace("spec:\n", "spec:\n  suspend: yes\n")).details.field).toBe("spec.suspend");
  });
});

describe("specEquals", () => {
  const parse = (text: string) => parseManifest(text).spec;

  it("holds for the same manifest applied twice", () => {
    expect(specEquals(parse(EXAMPLE), parse(EXAMPLE))).toBe(true);
  });

  it("ignores the order of labels, shard parameters and selectors", () => {
    const reordered = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata:
  labels: {tier: gold, team: finance}
  name: billing-rollup
spec:
  handler: h
  shards: 4
  shardParameters: {"3": c, "0": a}
  placement: {selector: {zone: eu-1, rack: r1}}
`;
    const original = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: billing-rollup, labels: {team: finance, tier: gold}}
spec: {handler: h, shards: 4, shardParameters: {"0": a, "3": c}, placement: {selector: {rack: r1, zone: eu-1}}}
`;
    expect(specEquals(parse(reordered), parse(original))).toBe(true);
  });

  it("holds between a default left out and the same default written out", () => {
    expect(specEquals(parse(withSpec({})), parse(withSpec({ shards: 1, strategy: "sticky", retries: { backoffSeconds: 10 } })))).toBe(true);
  });

  it.each<[string, Doc]>([
    ["a schedule added", { schedule: "0 9 * * *" }],
    ["a retry limit", { retries: { limit: 1 } }],
    ["a shard parameter", { shardParameters: { 0: "x" } }],
    ["a selector", { placement: { selector: { zone: "eu-1" } } }],
    ["suspend", { suspend: true }],
    ["a time zone", { timeZone: "Europe/Berlin" }],
  ])("fails when %s differs", (_what, fields) => {
    expect(specEquals(parse(withSpec({})), parse(withSpec(fields)))).toBe(false);
  });

  it("fails when a label value differs", () => {
    expect(specEquals(parse(withMetadata({ labels: { team: "a" } })), parse(withMetadata({ labels: { team: "b" } })))).toBe(false);
  });
});
