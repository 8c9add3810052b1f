import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { ShardlineError } from "../errors.js";
import { manifestShaped, parseManifest, specEquals, type JobSpec } from "./index.js";

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
  it("reads the README's example into a complete job", () => {
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
      runs: { kind: "handler", handler: "billing-rollup" },
      strategy: "sticky",
      failover: "fenced",
      misfire: "fire-once",
      maxCatchUp: 10,
      overlap: "forbid",
      timeoutSeconds: 300,
      retries: { limit: 3, backoffSeconds: 10 },
      placement: { selector: { zone: "eu-1" } },
      suspend: false,
      priority: 0,
      daemon: false,
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
      runs: { kind: "handler", handler: "nightly-report" },
      strategy: "sticky",
      failover: "fenced",
      misfire: "fire-once",
      maxCatchUp: 10,
      overlap: "forbid",
      timeoutSeconds: 0,
      retries: { limit: 0, backoffSeconds: 10 },
      placement: { selector: {} },
      suspend: false,
      priority: 0,
      daemon: false,
    });
    expect("schedule" in spec).toBe(false);
    expect("onFailure" in spec).toBe(false);
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

  it("reads spec.kubernetes, filling its defaults, with handler left empty", () => {
    const template = { spec: { containers: [{ name: "rollup", image: "busybox:1.36", command: ["sh", "-c", "echo done"] }] } };
    const { spec } = parseManifest(withSpec({ handler: undefined, kubernetes: { template } }));
    expect(manifestShaped(spec).handler).toBe("");
    expect(spec.runs.kind).toBe("kubernetes");
    expect(manifestShaped(spec).kubernetes).toEqual({
      template: {
        metadata: { labels: {}, annotations: {} },
        spec: { containers: [{ name: "rollup", image: "busybox:1.36", command: ["sh", "-c", "echo done"] }], restartPolicy: "Never" },
      },
      backoffLimit: 0,
      ttlSecondsAfterFinished: 3600,
      logContainer: "rollup",
      startTimeoutSeconds: 600,
    });
    expect("script" in spec || "http" in spec).toBe(false);
  });

  it("reads a complete spec.kubernetes, passing the rest of the pod spec through to Kubernetes", () => {
    const kubernetes = {
      template: {
        metadata: { labels: { team: "finance" }, annotations: { "example.com/owner": "billing", note: "" } },
        spec: {
          serviceAccountName: "rollup",
          initContainers: [{ name: "fetch", image: "alpine:3.20" }],
          containers: [
            { name: "sidecar", image: "envoyproxy/envoy:v1.31" },
            { name: "rollup", image: "registry.example.com/rollup@sha256:abc", resources: { limits: { memory: "256Mi" } } },
          ],
          restartPolicy: "OnFailure",
          nodeSelector: { "kubernetes.io/arch": "amd64" },
        },
      },
      backoffLimit: 100,
      ttlSecondsAfterFinished: 0,
      logContainer: "rollup",
      startTimeoutSeconds: 0,
    };
    expect(parseManifest(withSpec({ handler: undefined, kubernetes })).spec.runs).toEqual({ kind: "kubernetes", kubernetes });
  });

  it("tells two kubernetes jobs apart by their pod template, not by its key order", () => {
    const a = parseManifest(withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: [{ name: "a", image: "x" }], hostNetwork: false } } } })).spec;
    const b = parseManifest(withSpec({ handler: undefined, kubernetes: { template: { spec: { hostNetwork: false, containers: [{ image: "x", name: "a" }] } } } })).spec;
    const c = parseManifest(withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: [{ name: "a", image: "y" }] } } } })).spec;
    expect(specEquals(a, b)).toBe(true);
    expect(specEquals(a, c)).toBe(false);
  });

  it("reads spec.script, filling its defaults, with handler left empty", () => {
    const { spec } = parseManifest(withSpec({ handler: undefined, script: { command: "/usr/local/bin/rollup" } }));
    expect(manifestShaped(spec).handler).toBe("");
    expect(spec.runs).toEqual({ kind: "script", script: { command: "/usr/local/bin/rollup", args: [], env: {}, killGraceSeconds: 10 } });
    expect("http" in spec).toBe(false);
  });

  it("reads a complete spec.script", () => {
    const script = { command: "python3", args: ["rollup.py", "--month", "10"], env: { REGION: "eu-1", _DEBUG: "" }, killGraceSeconds: 3600 };
    expect(parseManifest(withSpec({ handler: undefined, script })).spec.runs).toEqual({ kind: "script", script });
  });

  it("reads spec.http, filling its defaults, with handler left empty", () => {
    const { spec } = parseManifest(withSpec({ handler: undefined, http: { url: "https://billing.internal/rollup" } }));
    expect(manifestShaped(spec).handler).toBe("");
    expect(spec.runs).toEqual({
      kind: "http",
      http: {
        method: "POST",
        url: "https://billing.internal/rollup",
        headers: {},
        body: "",
        connectTimeoutSeconds: 10,
        readTimeoutSeconds: 60,
      },
    });
    expect("script" in spec).toBe(false);
  });

  it("reads a complete spec.http", () => {
    const http = {
      method: "PUT",
      url: "http://127.0.0.1:8080/hooks/rollup?month=current",
      headers: { Authorization: "Bearer abc", "X-Team": "finance" },
      body: '{"month": "current"}',
      connectTimeoutSeconds: 300,
      readTimeoutSeconds: 86_400,
    };
    expect(parseManifest(withSpec({ handler: undefined, http })).spec.runs).toEqual({ kind: "http", http });
  });

  it("reads spec.daemon for a job without a schedule", () => {
    expect(parseManifest(withSpec({ daemon: true, shards: 4 })).spec).toMatchObject({ daemon: true, shards: 4 });
    expect(parseManifest(withSpec({ daemon: false, schedule: "0 9 * * *" })).spec.daemon).toBe(false);
  });

  it("reads spec.onFailure.webhook, headers defaulting to none", () => {
    expect(parseManifest(withSpec({ onFailure: { webhook: { url: "https://alerts.internal/shardline" } } })).spec.onFailure).toEqual({
      webhook: { url: "https://alerts.internal/shardline", headers: {} },
    });
    const webhook = { url: "http://127.0.0.1:9000/hook?team=finance", headers: { Authorization: "Bearer abc", "X-Team": "finance" } };
    expect(parseManifest(withSpec({ onFailure: { webhook } })).spec.onFailure).toEqual({ webhook });
  });

  it("reads spec.rollout's steps as written, filling an analysis' minExecutions", () => {
    const steps = [
      { wave: { clusters: ["canary"] } },
      { analysis: { maxFailureRate: 0.1, noWorseThanStable: true } },
      { wave: { matchLabels: { cluster: "east" }, matchExpressions: [{ key: "zone", operator: "NotIn", values: ["z9"] }, { key: "gpu", operator: "DoesNotExist" }] } },
      { pause: { duration: "30m" } },
      { weight: 50 },
      { pause: { fires: 3 } },
      { pause: { duration: 90 } },
      { pause: {} },
    ];
    expect(parseManifest(withSpec({ rollout: { steps } })).spec.rollout).toEqual({
      steps: [steps[0], { analysis: { minExecutions: 5, maxFailureRate: 0.1, noWorseThanStable: true } }, ...steps.slice(2)],
    });
  });

  it("reads spec.onFireComplete.handler", () => {
    expect(parseManifest(withSpec({ onFireComplete: { handler: "rollup-done" } })).spec.onFireComplete).toEqual({ handler: "rollup-done" });
    expect("onFireComplete" in parseManifest(withSpec({})).spec).toBe(false);
  });

  it("takes an onFailure without a webhook as the default, logging", () => {
    expect("onFailure" in parseManifest(withSpec({ onFailure: {} })).spec).toBe(false);
    expect("onFailure" in parseManifest(withSpec({ onFailure: { webhook: null } })).spec).toBe(false);
  });

  it.each(["custom:geo", "custom:a", `custom:${"a".repeat(63)}`, "custom:zone-aware-2"])("accepts the custom strategy %s", (strategy) => {
    expect(parseManifest(withSpec({ strategy })).spec.strategy).toBe(strategy);
  });

  it("takes an empty handler beside a script as no handler", () => {
    expect(parseManifest(withSpec({ handler: "", script: { command: "true" } })).spec.runs).toMatchObject({ kind: "script", script: { command: "true" } });
  });

  const long = (n: number) => "a".repeat(n);
  const pod = () => ({ spec: { containers: [{ name: "main", image: "busybox:1.36" }] } });
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
    ["a handler and an http call", withSpec({ http: { url: "http://x" } }), "spec.http", "exactly one of spec.handler, spec.script, spec.http and spec.kubernetes; spec.handler is given too"],
    ["a script and an http call", withSpec({ handler: undefined, script: { command: "x" }, http: { url: "http://x" } }), "spec.http", "spec.script is given too"],
    ["a handler and a kubernetes Job", withSpec({ kubernetes: { template: pod() } }), "spec.kubernetes", "spec.handler is given too"],
    ["kubernetes as a string", withSpec({ handler: undefined, kubernetes: "busybox" }), "spec.kubernetes", "a mapping with the fields template, backoffLimit, ttlSecondsAfterFinished, logContainer"],
    ["an unknown kubernetes field", withSpec({ handler: undefined, kubernetes: { template: pod(), image: "busybox" } }), "spec.kubernetes.image", "template, backoffLimit"],
    ["a kubernetes Job without a template", withSpec({ handler: undefined, kubernetes: {} }), "spec.kubernetes.template", "a mapping with the fields metadata, spec"],
    ["a whole Job as the template", withSpec({ handler: undefined, kubernetes: { template: { apiVersion: "batch/v1", spec: {} } } }), "spec.kubernetes.template.apiVersion", "metadata, spec"],
    ["a template naming its pods", withSpec({ handler: undefined, kubernetes: { template: { ...pod(), metadata: { name: "x" } } } }), "spec.kubernetes.template.metadata.name", "labels, annotations"],
    ["a template label under shardline.dev/", withSpec({ handler: undefined, kubernetes: { template: { ...pod(), metadata: { labels: { "shardline.dev/job": "x" } } } } }), "spec.kubernetes.template.metadata.labels", "outside shardline.dev/"],
    ["a bad template label value", withSpec({ handler: undefined, kubernetes: { template: { ...pod(), metadata: { labels: { team: "a b" } } } } }), "spec.kubernetes.template.metadata.labels.team", "at most 63"],
    ["a numeric annotation", withSpec({ handler: undefined, kubernetes: { template: { ...pod(), metadata: { annotations: { replicas: 3 } } } } }), "spec.kubernetes.template.metadata.annotations.replicas", "quote numbers"],
    ["a template without a pod spec", withSpec({ handler: undefined, kubernetes: { template: { metadata: {} } } }), "spec.kubernetes.template.spec", "a Kubernetes PodSpec"],
    ["a pod without containers", withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: [] } } } }), "spec.kubernetes.template.spec.containers", "at least one container"],
    ["a container without a name", withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: [{ image: "x" }] } } } }), "spec.kubernetes.template.spec.containers.0.name", "DNS-1123 label"],
    ["a container with an uppercase name", withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: [{ name: "Main", image: "x" }] } } } }), "spec.kubernetes.template.spec.containers.0.name", "lowercase"],
    ["a container without an image", withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: [{ name: "main" }] } } } }), "spec.kubernetes.template.spec.containers.0.image", "a container image reference"],
    ["an image with a space", withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: [{ name: "main", image: "busybox latest" }] } } } }), "spec.kubernetes.template.spec.containers.0.image", "without spaces"],
    ["a container as a string", withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: ["busybox"] } } } }), "spec.kubernetes.template.spec.containers.0", "a Kubernetes Container"],
    ["an init container named like a container", withSpec({ handler: undefined, kubernetes: { template: { spec: { initContainers: [{ name: "main", image: "x" }], containers: [{ name: "main", image: "x" }] } } } }), "spec.kubernetes.template.spec.initContainers.0.name", "used once in the pod"],
    ["pods restarting Always", withSpec({ handler: undefined, kubernetes: { template: { spec: { ...pod().spec, restartPolicy: "Always" } } } }), "spec.kubernetes.template.spec.restartPolicy", "one of Never, OnFailure"],
    ["a log container that is not in the pod", withSpec({ handler: undefined, kubernetes: { template: pod(), logContainer: "sidecar" } }), "spec.kubernetes.logContainer", "one of the template's containers: main"],
    ["a backoff limit over 100", withSpec({ handler: undefined, kubernetes: { template: pod(), backoffLimit: 101 } }), "spec.kubernetes.backoffLimit", "an integer from 0 to 100"],
    ["a negative TTL", withSpec({ handler: undefined, kubernetes: { template: pod(), ttlSecondsAfterFinished: -1 } }), "spec.kubernetes.ttlSecondsAfterFinished", "an integer from 0 to 2592000"],
    ["a start timeout over a day", withSpec({ handler: undefined, kubernetes: { template: pod(), startTimeoutSeconds: 86_401 } }), "spec.kubernetes.startTimeoutSeconds", "an integer from 0 to 86400"],
    ["a pod template over 32 KiB", withSpec({ handler: undefined, kubernetes: { template: { spec: { containers: [{ name: "main", image: "x", args: [long(40_000)] }] } } } }), "spec.kubernetes.template", "at most 32768 bytes"],
    ["no handler", withSpec({ handler: undefined }), "spec.handler", "a handler name of 1 to 128"],
    ["no executor at all", withSpec({ handler: undefined }), "spec.handler", "exactly one of spec.handler (a handler name"],
    ["script as a string", withSpec({ handler: undefined, script: "echo hi" }), "spec.script", "a mapping with the fields command, args, env, killGraceSeconds"],
    ["a script without a command", withSpec({ handler: undefined, script: { args: ["x"] } }), "spec.script.command", "a non-empty string without NUL"],
    ["an empty script command", withSpec({ handler: undefined, script: { command: "" } }), "spec.script.command", "a program name"],
    ["a script command with NUL", withSpec({ handler: undefined, script: { command: "rm\0x" } }), "spec.script.command", "without NUL"],
    ["a script command as a list", withSpec({ handler: undefined, script: { command: ["echo", "hi"] } }), "spec.script.command", "a program name"],
    ["an unknown script field", withSpec({ handler: undefined, script: { command: "x", shell: true } }), "spec.script.shell", "command, args, env, killGraceSeconds"],
    ["script args as a string", withSpec({ handler: undefined, script: { command: "x", args: "-v" } }), "spec.script.args", "a list of strings"],
    ["a numeric script arg", withSpec({ handler: undefined, script: { command: "x", args: ["--limit", 10] } }), "spec.script.args.1", "quote numbers"],
    ["a script env name with a dash", withSpec({ handler: undefined, script: { command: "x", env: { "MY-VAR": "1" } } }), "spec.script.env", "variable names"],
    ["a script env name starting with a digit", withSpec({ handler: undefined, script: { command: "x", env: { "1X": "1" } } }), "spec.script.env", "not starting with a digit"],
    ["a numeric script env value", withSpec({ handler: undefined, script: { command: "x", env: { N: 1 } } }), "spec.script.env.N", "a string"],
    ["a kill grace over an hour", withSpec({ handler: undefined, script: { command: "x", killGraceSeconds: 3601 } }), "spec.script.killGraceSeconds", "an integer from 0 to 3600"],
    ["an http call without a URL", withSpec({ handler: undefined, http: { method: "GET" } }), "spec.http.url", "an absolute http:// or https:// URL"],
    ["a relative URL", withSpec({ handler: undefined, http: { url: "/hooks/rollup" } }), "spec.http.url", "an absolute http:// or https:// URL"],
    ["an ftp URL", withSpec({ handler: undefined, http: { url: "ftp://files.internal/x" } }), "spec.http.url", "http:// or https://"],
    ["an unknown method", withSpec({ handler: undefined, http: { url: "http://x", method: "FETCH" } }), "spec.http.method", "one of GET, POST, PUT, PATCH, DELETE"],
    ["a lowercase method", withSpec({ handler: undefined, http: { url: "http://x", method: "post" } }), "spec.http.method", "one of GET, POST"],
    ["a header name with a space", withSpec({ handler: undefined, http: { url: "http://x", headers: { "X Team": "a" } } }), "spec.http.headers", "header names"],
    ["a header value with a line break", withSpec({ handler: undefined, http: { url: "http://x", headers: { "X-Team": "a\r\nX-Admin: 1" } } }), "spec.http.headers.X-Team", "without line breaks"],
    ["a header given twice", withSpec({ handler: undefined, http: { url: "http://x", headers: { "X-Team": "a", "x-team": "b" } } }), "spec.http.headers", "each header name once"],
    ["a numeric body", withSpec({ handler: undefined, http: { url: "http://x", body: 5 } }), "spec.http.body", "a string"],
    ["a connect timeout of 0", withSpec({ handler: undefined, http: { url: "http://x", connectTimeoutSeconds: 0 } }), "spec.http.connectTimeoutSeconds", "an integer from 1 to 300"],
    ["a read timeout over a day", withSpec({ handler: undefined, http: { url: "http://x", readTimeoutSeconds: 86_401 } }), "spec.http.readTimeoutSeconds", "an integer from 1 to 86400"],
    ["an unknown http field", withSpec({ handler: undefined, http: { url: "http://x", retries: 3 } }), "spec.http.retries", "method, url, headers, body"],
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
    ["an unknown strategy", withSpec({ strategy: "random" }), "spec.strategy", "one of sticky, balanced, odd-even, round-robin, or custom:NAME"],
    ["a custom strategy without a name", withSpec({ strategy: "custom:" }), "spec.strategy", "custom:NAME where NAME is a DNS-1123 label"],
    ["an uppercase custom strategy", withSpec({ strategy: "custom:Geo" }), "spec.strategy", "one of sticky, balanced, odd-even, round-robin, or custom:NAME"],
    ["a custom strategy of 64 characters", withSpec({ strategy: `custom:${long(64)}` }), "spec.strategy", "DNS-1123 label"],
    ["a custom strategy ending in '-'", withSpec({ strategy: "custom:geo-" }), "spec.strategy", "DNS-1123 label"],
    ["a custom strategy with a dot", withSpec({ strategy: "custom:geo.v2" }), "spec.strategy", "DNS-1123 label"],
    ["a custom prefix in capitals", withSpec({ strategy: "Custom:geo" }), "spec.strategy", "custom:NAME"],
    ["a numeric strategy", withSpec({ strategy: 3 }), "spec.strategy", "one of sticky"],
    ["daemon as a string", withSpec({ daemon: "true" }), "spec.daemon", "true or false"],
    ["a daemon with a schedule", withSpec({ daemon: true, schedule: "0 9 * * *" }), "spec.schedule", "no spec.schedule when spec.daemon is true: a daemon job runs continuously"],
    ["onFailure as a string", withSpec({ onFailure: "log" }), "spec.onFailure", "a mapping with the fields webhook"],
    ["onFireComplete as a handler name", withSpec({ onFireComplete: "done" }), "spec.onFireComplete", "a mapping with the fields handler"],
    ["onFireComplete without a handler", withSpec({ onFireComplete: {} }), "spec.onFireComplete.handler", "a handler name of 1 to 128 characters"],
    ["onFireComplete with a bad handler name", withSpec({ onFireComplete: { handler: "-done" } }), "spec.onFireComplete.handler", "starting with a letter or digit"],
    ["an unknown onFireComplete field", withSpec({ onFireComplete: { handler: "done", script: {} } }), "spec.onFireComplete.script", "spec.onFireComplete has only handler"],
    ["onFireComplete on a daemon job", withSpec({ daemon: true, onFireComplete: { handler: "done" } }), "spec.onFireComplete", "a daemon job has no fires that complete"],
    ["an unknown onFailure field", withSpec({ onFailure: { email: "ops@example.com" } }), "spec.onFailure.email", "spec.onFailure has only webhook"],
    ["a webhook as a URL string", withSpec({ onFailure: { webhook: "https://x" } }), "spec.onFailure.webhook", "a mapping with the fields url, headers"],
    ["a webhook without a URL", withSpec({ onFailure: { webhook: { headers: {} } } }), "spec.onFailure.webhook.url", "an absolute http:// or https:// URL"],
    ["a relative webhook URL", withSpec({ onFailure: { webhook: { url: "/hook" } } }), "spec.onFailure.webhook.url", "an absolute http:// or https:// URL"],
    ["a mailto webhook URL", withSpec({ onFailure: { webhook: { url: "mailto:ops@example.com" } } }), "spec.onFailure.webhook.url", "http:// or https://"],
    ["an unknown webhook field", withSpec({ onFailure: { webhook: { url: "http://x", retries: 3 } } }), "spec.onFailure.webhook.retries", "url, headers"],
    ["webhook headers as a list", withSpec({ onFailure: { webhook: { url: "http://x", headers: ["a"] } } }), "spec.onFailure.webhook.headers", "a mapping of header names"],
    ["a webhook header name with a colon", withSpec({ onFailure: { webhook: { url: "http://x", headers: { "X:Y": "a" } } } }), "spec.onFailure.webhook.headers", "header names"],
    ["a numeric webhook header value", withSpec({ onFailure: { webhook: { url: "http://x", headers: { "X-Team": 1 } } } }), "spec.onFailure.webhook.headers.X-Team", "a string"],
    ["a webhook header value with a line break", withSpec({ onFailure: { webhook: { url: "http://x", headers: { A: "a\nB: b" } } } }), "spec.onFailure.webhook.headers.A", "without line breaks"],
    ["an unknown failover", withSpec({ failover: "slow" }), "spec.failover", "one of fenced, fast, off"],
    ["an unknown misfire policy", withSpec({ misfire: "retry" }), "spec.misfire", "one of fire-once, skip, catch-up"],
    ["an unknown overlap policy", withSpec({ overlap: "queue" }), "spec.overlap", "one of forbid, allow, replace"],
    ["a maxCatchUp of 0", withSpec({ maxCatchUp: 0 }), "spec.maxCatchUp", "an integer from 1 to 1000"],
    ["a priority beyond 1000", withSpec({ priority: 1001 }), "spec.priority", "an integer from -1000 to 1000"],
    ["a fractional priority", withSpec({ priority: 1.5 }), "spec.priority", "an integer from -1000 to 1000"],
    ["a maxCatchUp of 1001", withSpec({ maxCatchUp: 1001 }), "spec.maxCatchUp", "an integer from 1 to 1000"],
    ["a negative timeout", withSpec({ timeoutSeconds: -1 }), "spec.timeoutSeconds", "an integer from 0 to 604800"],
    ["a timeout over a week", withSpec({ timeoutSeconds: 604_801 }), "spec.timeoutSeconds", "an integer from 0 to 604800"],
    ["101 retries", withSpec({ retries: { limit: 101 } }), "spec.retries.limit", "an integer from 0 to 100"],
    ["a backoff over a day", withSpec({ retries: { backoffSeconds: 86_401 } }), "spec.retries.backoffSeconds", "an integer from 0 to 86400"],
    ["an unknown retries field", withSpec({ retries: { tries: 3 } }), "spec.retries.tries", "limit, backoffSeconds"],
    ["retries as a number", withSpec({ retries: 3 }), "spec.retries", "a mapping with the fields limit, backoffSeconds"],
    ["an unknown placement field", withSpec({ placement: { zone: "eu-1" } }), "spec.placement.zone", "selector"],
    ["a numeric selector value", withSpec({ placement: { selector: { rack: 7 } } }), "spec.placement.selector.rack", "a string"],
    ["a malformed env reference in a header", withSpec({ handler: undefined, http: { url: "http://x", headers: { Authorization: "${env:bad name}" } } }), "spec.http.headers.Authorization", "${env:NAME}"],
    ["spreadBy as a string", withSpec({ placement: { spreadBy: "zone" } }), "spec.placement.spreadBy", "a list of 1 to 3 distinct agent label keys"],
    ["a spreadBy key with a space", withSpec({ placement: { spreadBy: ["my zone"] } }), "spec.placement.spreadBy", "a list of 1 to 3 distinct agent label keys"],
    ["a spreadBy key twice", withSpec({ placement: { spreadBy: ["zone", "zone"] } }), "spec.placement.spreadBy", "distinct"],
    ["four spreadBy levels", withSpec({ placement: { spreadBy: ["a", "b", "c", "d"] } }), "spec.placement.spreadBy", "1 to 3"],
    ["spreadBy with balanced", withSpec({ strategy: "balanced", placement: { spreadBy: ["zone"] } }), "spec.placement.spreadBy", "only with sticky"],
    ["suspend as the string yes", withSpec({ suspend: "yes" }), "spec.suspend", "true or false"],
    ["a rollout without steps", withSpec({ rollout: { steps: [] } }), "spec.rollout.steps", "a list of 1 to 32 steps"],
    ["a rollout step of two kinds", withSpec({ rollout: { steps: [{ weight: 10, pause: {} }] } }), "spec.rollout.steps.0", "exactly one of wave, weight, pause, analysis; weight and pause are given together"],
    ["an unknown rollout step", withSpec({ rollout: { steps: [{ canary: 10 }] } }), "spec.rollout.steps.0.canary", "spec.rollout.steps[] has only wave, weight, pause, analysis"],
    ["an empty wave", withSpec({ rollout: { steps: [{ wave: {} }] } }), "spec.rollout.steps.0.wave", "at least one of clusters, matchLabels and matchExpressions"],
    ["a weight of 0", withSpec({ rollout: { steps: [{ weight: 0 }] } }), "spec.rollout.steps.0.weight", "an integer from 1 to 100"],
    ["weights going down", withSpec({ rollout: { steps: [{ weight: 50 }, { weight: 20 }] } }), "spec.rollout.steps.1.weight", "weights are cumulative, and an earlier step reached 50"],
    ["a pause of 5 minutes written 5min", withSpec({ rollout: { steps: [{ pause: { duration: "5min" } }] } }), "spec.rollout.steps.0.pause.duration", "a duration such as 90s, 30m, 1h or 1h30m"],
    ["a pause by duration and fires", withSpec({ rollout: { steps: [{ pause: { duration: "1m", fires: 3 } }] } }), "spec.rollout.steps.0.pause.fires", "one of duration and fires"],
    ["In without values", withSpec({ rollout: { steps: [{ wave: { matchExpressions: [{ key: "zone", operator: "In" }] } }] } }), "spec.rollout.steps.0.wave.matchExpressions.0.values", "1 or more for In and NotIn"],
    ["an unknown operator", withSpec({ rollout: { steps: [{ wave: { matchExpressions: [{ key: "zone", operator: "Is" }] } }] } }), "spec.rollout.steps.0.wave.matchExpressions.0.operator", "one of In, NotIn, Exists, DoesNotExist"],
    ["a failure rate of 5", withSpec({ rollout: { steps: [{ analysis: { maxFailureRate: 5 } }] } }), "spec.rollout.steps.0.analysis.maxFailureRate", "a number from 0 to 1"],
    ["a rollout on a daemon job", withSpec({ daemon: true, rollout: { steps: [{ weight: 10 }] } }), "spec.rollout", "no spec.rollout when spec.daemon is true"],
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

  it("reads spreadBy as label keys, outermost first", () => {
    const spec = parse(withSpec({ placement: { selector: { cluster: "east" }, spreadBy: ["topology.kubernetes.io/zone", "node"] } }));
    expect(spec.placement).toEqual({ selector: { cluster: "east" }, spreadBy: ["topology.kubernetes.io/zone", "node"] });
  });

  it("holds between no spreading and an empty spreadBy, and tells the order of spreadBy apart", () => {
    expect(specEquals(parse(withSpec({})), parse(withSpec({ placement: { spreadBy: [] } })))).toBe(true);
    const zoneThenNode = parse(withSpec({ placement: { spreadBy: ["zone", "node"] } }));
    expect(specEquals(zoneThenNode, parse(withSpec({ placement: { spreadBy: ["node", "zone"] } })))).toBe(false);
  });

  it("holds between a default left out and the same default written out", () => {
    expect(specEquals(parse(withSpec({})), parse(withSpec({ shards: 1, strategy: "sticky", retries: { backoffSeconds: 10 } })))).toBe(true);
  });

  it.each<[string, Doc]>([
    ["a schedule added", { schedule: "0 9 * * *" }],
    ["a retry limit", { retries: { limit: 1 } }],
    ["a shard parameter", { shardParameters: { 0: "x" } }],
    ["a selector", { placement: { selector: { zone: "eu-1" } } }],
    ["spreading", { placement: { spreadBy: ["zone"] } }],
    ["suspend", { suspend: true }],
    ["a time zone", { timeZone: "Europe/Berlin" }],
    ["a script instead of the handler", { handler: undefined, script: { command: "x" } }],
    ["an http call instead of the handler", { handler: undefined, http: { url: "http://x" } }],
    ["daemon", { daemon: true }],
    ["a custom strategy", { strategy: "custom:geo" }],
    ["a failure webhook added", { onFailure: { webhook: { url: "http://x" } } }],
    ["a completion hook added", { onFireComplete: { handler: "done" } }],
  ])("fails when %s differs", (_what, fields) => {
    expect(specEquals(parse(withSpec({})), parse(withSpec(fields)))).toBe(false);
  });

  const script = { command: "python3", args: ["a.py", "b"], env: { A: "1", B: "2" }, killGraceSeconds: 5 };
  const http = { method: "PUT", url: "http://x/y", headers: { A: "1", B: "2" }, body: "b", connectTimeoutSeconds: 2, readTimeoutSeconds: 3 };
  const scriptJob = (fields: Doc) => parse(withSpec({ handler: undefined, script: { ...script, ...fields } }));
  const httpJob = (fields: Doc) => parse(withSpec({ handler: undefined, http: { ...http, ...fields } }));

  it("compares scripts and http calls, ignoring the order of env and headers", () => {
    expect(specEquals(scriptJob({}), scriptJob({ env: { B: "2", A: "1" } }))).toBe(true);
    expect(specEquals(httpJob({}), httpJob({ headers: { B: "2", A: "1" } }))).toBe(true);
    expect(specEquals(scriptJob({ killGraceSeconds: 10 }), parse(withSpec({ handler: undefined, script: { ...script, killGraceSeconds: undefined } })))).toBe(true);
  });

  it.each<[string, Doc]>([
    ["command", { command: "python" }],
    ["args", { args: ["b", "a.py"] }],
    ["an extra arg", { args: ["a.py", "b", "c"] }],
    ["env", { env: { A: "1", B: "3" } }],
    ["killGraceSeconds", { killGraceSeconds: 6 }],
  ])("fails when the script's %s differs", (_what, fields) => {
    expect(specEquals(scriptJob({}), scriptJob(fields))).toBe(false);
  });

  it.each<[string, Doc]>([
    ["method", { method: "POST" }],
    ["url", { url: "http://x/z" }],
    ["headers", { headers: { A: "1" } }],
    ["body", { body: "" }],
    ["connectTimeoutSeconds", { connectTimeoutSeconds: 1 }],
    ["readTimeoutSeconds", { readTimeoutSeconds: 4 }],
  ])("fails when the http call's %s differs", (_what, fields) => {
    expect(specEquals(httpJob({}), httpJob(fields))).toBe(false);
  });

  it("reads daemon left out of a stored spec as false, and an onFailure without a webhook as none", () => {
    const plain = parse(withSpec({}));
    const { daemon: _daemon, ...stored } = plain;
    expect(specEquals(stored, plain)).toBe(true);
    expect(specEquals({ ...plain, onFailure: {} }, plain)).toBe(true);
  });

  const webhook = { url: "https://alerts.internal/x", headers: { A: "1", B: "2" } };
  const hookJob = (fields: Doc) => parse(withSpec({ onFailure: { webhook: { ...webhook, ...fields } } }));

  it("compares failure webhooks, ignoring the order of their headers", () => {
    expect(specEquals(hookJob({}), hookJob({ headers: { B: "2", A: "1" } }))).toBe(true);
  });

  it.each<[string, Doc]>([
    ["url", { url: "https://alerts.internal/y" }],
    ["headers", { headers: { A: "1" } }],
    ["header value", { headers: { A: "1", B: "3" } }],
  ])("fails when the webhook's %s differs", (_what, fields) => {
    expect(specEquals(hookJob({}), hookJob(fields))).toBe(false);
  });

  it("fails when a label value differs", () => {
    expect(specEquals(parse(withMetadata({ labels: { team: "a" } })), parse(withMetadata({ labels: { team: "b" } })))).toBe(false);
  });
});
