import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments, stringify } from "yaml";
import { CRD_PATH, type SchemaNode } from "../shared/manifest/crd.js";
import { parseManifest } from "../shared/manifest/parse-manifest.js";

/**
 * The ShardedJob CRD's own schema, as the committed file holds it, checked as the API server
 * checks a ShardedJob: every manifest the repository shows is accepted, and what the parser
 * refuses is refused too where a structural schema can say it. Ajv validates; crdValidator()
 * gives it what the API server does beyond plain JSON Schema.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const crd = parse(readFileSync(join(ROOT, CRD_PATH), "utf8"), { version: "1.1" }) as { spec: { versions: { schema: { openAPIV3Schema: SchemaNode } }[] } };
const validate = crdValidator(crd.spec.versions[0]!.schema.openAPIV3Schema);

/**
 * The CRD's schema as draft-07 for Ajv, doing what the API server does with it:
 * - an unknown field is refused (kubectl's default strict field validation; the API server would
 *   otherwise prune it) except under x-kubernetes-preserve-unknown-fields;
 * - x-kubernetes-int-or-string takes an integer or a string;
 * - x-kubernetes-list-type: set refuses a duplicate;
 * - OpenAPI 3.0's boolean exclusiveMinimum is draft-07's number.
 */
function toDraft7(node: SchemaNode): SchemaNode {
  const out: SchemaNode = {};
  for (const [keyword, value] of Object.entries(node)) {
    if (keyword.startsWith("x-kubernetes-") || keyword === "format") continue;
    if (keyword === "properties") out.properties = Object.fromEntries(Object.entries(value as Record<string, SchemaNode>).map(([k, v]) => [k, toDraft7(v)]));
    else if (keyword === "items" || keyword === "additionalProperties") out[keyword] = toDraft7(value as SchemaNode);
    else if (keyword === "anyOf") out.anyOf = (value as SchemaNode[]).map(toDraft7);
    else out[keyword] = value;
  }
  if (node["x-kubernetes-int-or-string"] === true) out.anyOf = [{ type: "integer" }, { type: "string" }];
  if (node["x-kubernetes-list-type"] === "set") out.uniqueItems = true;
  if (node.properties !== undefined && node["x-kubernetes-preserve-unknown-fields"] !== true) out.additionalProperties = false;
  if (node.exclusiveMinimum === true) {
    out.exclusiveMinimum = node.minimum;
    delete out.minimum;
  }
  return out;
}

/** What the API server prunes before it validates: a null field (none of the CRD's is nullable). */
function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value).filter(([, item]) => item !== null).map(([key, item]) => [key, withoutNulls(item)]));
}

function crdValidator(schema: SchemaNode): (object: unknown) => string[] {
  const draft = toDraft7(schema);
  // metadata is the API server's ObjectMeta (labels, namespace, annotations...): the schema may
  // only narrow its name.
  delete ((draft.properties as Record<string, SchemaNode>).metadata as SchemaNode).additionalProperties;
  const check = new Ajv({ allErrors: true, strict: true }).compile(draft);
  return (object) => (check(withoutNulls(object)) ? [] : (check.errors ?? []).map((error) => `${error.instancePath || "/"} ${error.message ?? ""}`));
}

/** Every ShardedJob in examples/ (as kubectl reads YAML: 1.1) and in the README's and docs' yaml blocks. */
function repositoryExamples(): [string, Record<string, unknown>][] {
  const found: [string, Record<string, unknown>][] = [];
  const add = (where: string, text: string) => {
    for (const document of parseAllDocuments(text, { version: "1.1" })) {
      const object = document.toJS() as Record<string, unknown> | null;
      if (object?.kind === "ShardedJob") found.push([`${where}: ${(object.metadata as { name?: string } | undefined)?.name}`, object]);
    }
  };
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (/\.ya?ml$/.test(entry)) add(relative(ROOT, path), readFileSync(path, "utf8"));
    }
  };
  walk(join(ROOT, "examples"));
  const markdown = ["README.md", ...readdirSync(join(ROOT, "docs")).filter((name) => name.endsWith(".md")).map((name) => `docs/${name}`)];
  for (const file of markdown) {
    for (const block of readFileSync(join(ROOT, file), "utf8").matchAll(/```ya?ml\n([\s\S]*?)```/g)) add(file, block[1]!);
  }
  return found;
}

type Doc = Record<string, unknown>;
const minimal = (): { apiVersion: string; kind: string; metadata: Doc; spec: Doc } => ({ apiVersion: "shardline.dev/v1", kind: "ShardedJob", metadata: { name: "nightly" }, spec: { handler: "nightly-report" } });
const withSpec = (fields: Doc) => ({ ...minimal(), spec: { ...minimal().spec, ...fields } });
const withMetadata = (fields: Doc) => ({ ...minimal(), metadata: { ...minimal().metadata, ...fields } });
const pod = () => ({ spec: { containers: [{ name: "main", image: "busybox:1.36" }] } });
const kubernetesJob = (fields: Doc) => withSpec({ handler: undefined, kubernetes: { template: pod(), ...fields } });
const long = (n: number) => "a".repeat(n);

/** Manifests with every field the parser accepts, beside the repository's examples. */
const complete: [string, Doc][] = [
  [
    "every spec field of a handler job",
    withSpec({
      schedule: "0 9 * * 1-5",
      timeZone: "Europe/Berlin",
      shards: 4,
      shardParameters: { 0: "beijing", 3: 2024 },
      parameter: "month=current",
      strategy: "custom:geo-aware",
      failover: "off",
      misfire: "catch-up",
      maxCatchUp: 5,
      overlap: "replace",
      timeoutSeconds: 300,
      disconnectGraceSeconds: 0,
      retries: { limit: 3, backoffSeconds: 10 },
      placement: { selector: { zone: "eu-1", "example.com/tier": "" } },
      suspend: false,
      priority: -5,
      onFailure: { webhook: { url: "https://alerts.internal/x", headers: { Authorization: "${env:TOKEN}" } } },
      onFireComplete: { handler: "rollup-done" },
      description: "Monthly rollup",
      rollout: {
        steps: [
          { wave: { clusters: ["canary"], matchExpressions: [{ key: "zone", operator: "NotIn", values: ["z9"] }, { key: "gpu", operator: "DoesNotExist" }] } },
          { analysis: { maxFailureRate: 0.1, noWorseThanStable: true, maxP95DurationSeconds: 1.5 } },
          { weight: 50 },
          { pause: { duration: "30m" } },
          { pause: { duration: 90 } },
          { pause: { fires: 3 } },
          { pause: {} },
        ],
      },
    }),
  ],
  ["spreading by zone and node", withSpec({ placement: { spreadBy: ["topology.kubernetes.io/zone", "node"] } })],
  ["a script daemon", withSpec({ handler: "", daemon: true, script: { command: "python3", args: ["rollup.py"], env: { REGION: "eu-1" }, killGraceSeconds: 5 } })],
  ["an http call", withSpec({ handler: undefined, http: { method: "PUT", url: "http://127.0.0.1:8080/x", headers: { "X-Team": "a" }, body: "{}", connectTimeoutSeconds: 2, readTimeoutSeconds: 3 } })],
  [
    "a Kubernetes Job with a full pod spec",
    kubernetesJob({
      template: {
        metadata: { labels: { team: "a" }, annotations: { "example.com/owner": "billing" } },
        spec: {
          serviceAccountName: "rollup",
          initContainers: [{ name: "fetch", image: "alpine:3.20" }],
          containers: [{ name: "rollup", image: "busybox:1.36", resources: { limits: { memory: "256Mi" } }, args: ["--shard", "$(SHARDLINE_SHARD)"] }],
          restartPolicy: "OnFailure",
          nodeSelector: { "kubernetes.io/arch": "amd64" },
        },
      },
      backoffLimit: 1,
      ttlSecondsAfterFinished: 60,
      logContainer: "rollup",
      startTimeoutSeconds: 0,
    }),
  ],
  ["empty fields, which both read as not given", withSpec({ description: null, retries: null, kubernetes: undefined })],
  ["a namespace, which the API server sets on every object", withMetadata({ namespace: "team-a" })],
];

// [what is wrong, manifest]: the parser refuses each, and so does the CRD's schema (types,
// enums, patterns, bounds, required fields, unknown fields).
const refusedByBoth: [string, Doc][] = [
  ["no spec", { ...minimal(), spec: undefined }],
  ["spec as a list", { ...minimal(), spec: ["handler"] }],
  ["an uppercase name", withMetadata({ name: "Nightly" })],
  ["a name of 64 characters", withMetadata({ name: long(64) })],
  ["a name ending in '-'", withMetadata({ name: "nightly-" })],
  ["a misspelt spec field", withSpec({ shardz: 8 })],
  ["kubernetes as a string", withSpec({ handler: undefined, kubernetes: "busybox" })],
  ["an unknown kubernetes field", kubernetesJob({ image: "busybox" })],
  ["a kubernetes Job without a template", withSpec({ handler: undefined, kubernetes: {} })],
  ["a whole Job as the template", kubernetesJob({ template: { apiVersion: "batch/v1", spec: {} } })],
  ["a template naming its pods", kubernetesJob({ template: { ...pod(), metadata: { name: "x" } } })],
  ["a bad template label value", kubernetesJob({ template: { ...pod(), metadata: { labels: { team: "a b" } } } })],
  ["a numeric annotation", kubernetesJob({ template: { ...pod(), metadata: { annotations: { replicas: 3 } } } })],
  ["a template without a pod spec", kubernetesJob({ template: { metadata: {} } })],
  ["a pod without containers", kubernetesJob({ template: { spec: { containers: [] } } })],
  ["a container without a name", kubernetesJob({ template: { spec: { containers: [{ image: "x" }] } } })],
  ["a container with an uppercase name", kubernetesJob({ template: { spec: { containers: [{ name: "Main", image: "x" }] } } })],
  ["a container without an image", kubernetesJob({ template: { spec: { containers: [{ name: "main" }] } } })],
  ["an image with a space", kubernetesJob({ template: { spec: { containers: [{ name: "main", image: "busybox latest" }] } } })],
  ["a container as a string", kubernetesJob({ template: { spec: { containers: ["busybox"] } } })],
  ["pods restarting Always", kubernetesJob({ template: { spec: { ...pod().spec, restartPolicy: "Always" } } })],
  ["a backoff limit over 100", kubernetesJob({ backoffLimit: 101 })],
  ["a negative TTL", kubernetesJob({ ttlSecondsAfterFinished: -1 })],
  ["a start timeout over a day", kubernetesJob({ startTimeoutSeconds: 86_401 })],
  ["script as a string", withSpec({ handler: undefined, script: "echo hi" })],
  ["a script without a command", withSpec({ handler: undefined, script: { args: ["x"] } })],
  ["a script command as a list", withSpec({ handler: undefined, script: { command: ["echo", "hi"] } })],
  ["an unknown script field", withSpec({ handler: undefined, script: { command: "x", shell: true } })],
  ["script args as a string", withSpec({ handler: undefined, script: { command: "x", args: "-v" } })],
  ["a numeric script arg", withSpec({ handler: undefined, script: { command: "x", args: ["--limit", 10] } })],
  ["a kill grace over an hour", withSpec({ handler: undefined, script: { command: "x", killGraceSeconds: 3601 } })],
  ["an unknown http method", withSpec({ handler: undefined, http: { url: "http://x", method: "post" } })],
  ["an http call without a URL", withSpec({ handler: undefined, http: { method: "GET" } })],
  ["a read timeout of 0", withSpec({ handler: undefined, http: { url: "http://x", readTimeoutSeconds: 0 } })],
  ["a handler name starting with '-'", withSpec({ handler: "-report" })],
  ["a handler name of 129 characters", withSpec({ handler: long(129) })],
  ["0 shards", withSpec({ shards: 0 })],
  ["10,001 shards", withSpec({ shards: 10_001 })],
  ["shards as a string", withSpec({ shards: "8" })],
  ["a fractional shard count", withSpec({ shards: 2.5 })],
  ["a numeric schedule", withSpec({ schedule: 5 })],
  ["an unknown strategy", withSpec({ strategy: "random" })],
  ["a custom strategy with an uppercase name", withSpec({ strategy: "custom:Geo" })],
  ["a numeric strategy", withSpec({ strategy: 3 })],
  ["daemon as a string", withSpec({ daemon: "true" })],
  ["onFailure as a string", withSpec({ onFailure: "log" })],
  ["onFireComplete without a handler", withSpec({ onFireComplete: {} })],
  ["onFireComplete with a bad handler name", withSpec({ onFireComplete: { handler: "-done" } })],
  ["an unknown onFailure field", withSpec({ onFailure: { email: "ops@example.com" } })],
  ["a webhook without a URL", withSpec({ onFailure: { webhook: { headers: {} } } })],
  ["an unknown webhook field", withSpec({ onFailure: { webhook: { url: "http://x", retries: 3 } } })],
  ["a numeric webhook header value", withSpec({ onFailure: { webhook: { url: "http://x", headers: { "X-Team": 1 } } } })],
  ["an unknown failover", withSpec({ failover: "slow" })],
  ["failover off as YAML 1.1 reads it unquoted", withSpec({ failover: false })],
  ["an unknown misfire policy", withSpec({ misfire: "retry" })],
  ["an unknown overlap policy", withSpec({ overlap: "queue" })],
  ["a maxCatchUp of 0", withSpec({ maxCatchUp: 0 })],
  ["a priority beyond 1000", withSpec({ priority: 1001 })],
  ["a fractional priority", withSpec({ priority: 1.5 })],
  ["a negative timeout", withSpec({ timeoutSeconds: -1 })],
  ["a timeout over a week", withSpec({ timeoutSeconds: 604_801 })],
  ["101 retries", withSpec({ retries: { limit: 101 } })],
  ["a backoff over a day", withSpec({ retries: { backoffSeconds: 86_401 } })],
  ["an unknown retries field", withSpec({ retries: { tries: 3 } })],
  ["retries as a number", withSpec({ retries: 3 })],
  ["an unknown placement field", withSpec({ placement: { zone: "eu-1" } })],
  ["a numeric selector value", withSpec({ placement: { selector: { rack: 7 } } })],
  ["a selector value with a space", withSpec({ placement: { selector: { rack: "r 1" } } })],
  ["spreadBy as a string", withSpec({ placement: { spreadBy: "zone" } })],
  ["a spreadBy key twice", withSpec({ placement: { spreadBy: ["zone", "zone"] } })],
  ["four spreadBy levels", withSpec({ placement: { spreadBy: ["a", "b", "c", "d"] } })],
  ["suspend as the string yes", withSpec({ suspend: "yes" })],
  ["a rollout without steps", withSpec({ rollout: { steps: [] } })],
  ["33 rollout steps", withSpec({ rollout: { steps: Array.from({ length: 33 }, () => ({ weight: 100 })) } })],
  ["an unknown rollout step", withSpec({ rollout: { steps: [{ canary: 10 }] } })],
  ["a weight of 0", withSpec({ rollout: { steps: [{ weight: 0 }] } })],
  ["an unknown operator", withSpec({ rollout: { steps: [{ wave: { matchExpressions: [{ key: "zone", operator: "Is" }] } }] } })],
  ["a failure rate of 5", withSpec({ rollout: { steps: [{ analysis: { maxFailureRate: 5 } }] } })],
  ["a p95 duration of 0", withSpec({ rollout: { steps: [{ analysis: { maxP95DurationSeconds: 0 } }] } })],
  ["a pause of a fraction of a second", withSpec({ rollout: { steps: [{ pause: { duration: 1.5 } }] } })],
];

// [what is wrong, manifest, the rule]: refused by the parser alone. docs/kubernetes.md lists
// these rules; the controller reports such a ShardedJob in its status instead of running it.
const refusedByParserOnly: [string, Doc, string][] = [
  ["a handler and an http call", withSpec({ http: { url: "http://x" } }), "exactly one of handler, script, http, kubernetes"],
  ["no executor at all", withSpec({ handler: undefined }), "exactly one of handler, script, http, kubernetes"],
  ["a daemon with a schedule", withSpec({ daemon: true, schedule: "0 9 * * *" }), "daemon excludes schedule, rollout and onFireComplete"],
  ["a rollout on a daemon job", withSpec({ daemon: true, rollout: { steps: [{ weight: 10 }] } }), "daemon excludes schedule, rollout and onFireComplete"],
  ["a schedule that is not cron", withSpec({ schedule: "every day" }), "the cron expression and time zone"],
  ["an unknown time zone", withSpec({ timeZone: "Mars/Olympus" }), "the cron expression and time zone"],
  ["a shard parameter beyond spec.shards", withSpec({ shards: 2, shardParameters: { 5: "x" } }), "shard parameter keys are shard numbers below spec.shards"],
  ["spreadBy with balanced", withSpec({ strategy: "balanced", placement: { spreadBy: ["zone"] } }), "spreadBy only with strategy sticky"],
  ["a spreadBy key with a space", withSpec({ placement: { spreadBy: ["my zone"] } }), "map keys and list items of label-key form"],
  ["a bad label key", withMetadata({ labels: { "-team": "x" } }), "metadata.labels as the parser reads them (the API server checks its own rules)"],
  ["a bad selector key", withSpec({ placement: { selector: { "-rack": "r1" } } }), "map keys and list items of label-key form"],
  ["a script env name with a dash", withSpec({ handler: undefined, script: { command: "x", env: { "MY-VAR": "1" } } }), "map keys and list items of label-key form"],
  ["an empty script command", withSpec({ handler: undefined, script: { command: "" } }), "text rules: URLs, NUL, header values"],
  ["a relative webhook URL", withSpec({ onFailure: { webhook: { url: "/hook" } } }), "text rules: URLs, NUL, header values"],
  ["a webhook header value with a line break", withSpec({ onFailure: { webhook: { url: "http://x", headers: { A: "a\nB: b" } } } }), "text rules: URLs, NUL, header values"],
  ["a template label under shardline.dev/", kubernetesJob({ template: { ...pod(), metadata: { labels: { "shardline.dev/job": "x" } } } }), "the pod template's own rules"],
  ["an init container named like a container", kubernetesJob({ template: { spec: { initContainers: [{ name: "main", image: "x" }], containers: [{ name: "main", image: "x" }] } } }), "the pod template's own rules"],
  ["a log container that is not in the pod", kubernetesJob({ logContainer: "sidecar" }), "the pod template's own rules"],
  ["a pod template over 32 KiB", kubernetesJob({ template: { spec: { containers: [{ name: "main", image: "x", args: [long(40_000)] }] } } }), "the pod template's own rules"],
  ["a rollout step of two kinds", withSpec({ rollout: { steps: [{ weight: 10, pause: {} }] } }), "rollout steps: one kind each, cumulative weights, durations"],
  ["weights going down", withSpec({ rollout: { steps: [{ weight: 50 }, { weight: 20 }] } }), "rollout steps: one kind each, cumulative weights, durations"],
  ["a pause of 5 minutes written 5min", withSpec({ rollout: { steps: [{ pause: { duration: "5min" } }] } }), "rollout steps: one kind each, cumulative weights, durations"],
  ["In without values", withSpec({ rollout: { steps: [{ wave: { matchExpressions: [{ key: "zone", operator: "In" }] } }] } }), "rollout steps: one kind each, cumulative weights, durations"],
];

function parserRefuses(manifest: Doc): boolean {
  try {
    parseManifest(stringify(manifest));
    return false;
  } catch {
    return true;
  }
}

describe("the ShardedJob CRD's schema", () => {
  const examples = repositoryExamples();

  it("finds the repository's example manifests", () => {
    const files = new Set(examples.map(([where]) => where.split(":")[0]));
    expect([...files]).toEqual(expect.arrayContaining(["examples/billing-rollup.yaml", "examples/kubernetes-handlers/jobs.yaml", "README.md", "docs/kubernetes.md", "docs/rollouts.md"]));
  });

  it.each(examples)("accepts %s", (_where, manifest) => {
    expect(validate(manifest)).toEqual([]);
  });

  it.each(complete)("accepts %s, as the parser does", (_what, manifest) => {
    const { metadata } = manifest as { metadata: Doc };
    const { namespace: _namespace, ...parserMetadata } = metadata;
    expect(parserRefuses({ ...manifest, metadata: parserMetadata })).toBe(false);
    expect(validate(manifest)).toEqual([]);
  });

  it.each(refusedByBoth)("refuses %s, as the parser does", (_what, manifest) => {
    expect(parserRefuses(manifest)).toBe(true);
    expect(validate(manifest)).not.toEqual([]);
  });

  it.each(refusedByParserOnly)("leaves %s to the parser (%s)", (_what, manifest) => {
    expect(parserRefuses(manifest)).toBe(true);
    expect(validate(manifest)).toEqual([]);
  });
});
