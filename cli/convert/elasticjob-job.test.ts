import { describe, expect, it } from "vitest";
import { parseManifest } from "../../shared/manifest/index.js";
import type { ElasticJobDefinition } from "./elasticjob-config.js";
import { convertJob, dnsName, splitCommandLine } from "./elasticjob-job.js";

function job(settings: Record<string, string>, props: Record<string, string> = {}, name = "billingRollup"): ElasticJobDefinition {
  return { name, settings: new Map(Object.entries(settings)), props: new Map(Object.entries(props)) };
}

const BASE = { elasticJobClass: "com.example.BillingJob", cron: "0 0 2 * * ?", timeZone: "GMT+08:00", shardingTotalCount: "3" };

describe("convertJob", () => {
  it("maps every listed setting to its manifest field", () => {
    const { manifest, problems } = convertJob(
      job({
        ...BASE,
        shardingItemParameters: "0=Beijing, 1 = Shanghai,2=Guangzhou",
        jobParameter: "month=current",
        failover: "true",
        misfire: "false",
        jobShardingStrategyType: "ROUND_ROBIN",
        disabled: "true",
        description: "nightly",
      }),
    );
    expect(manifest).toEqual({
      apiVersion: "shardline.dev/v1",
      kind: "ShardedJob",
      metadata: { name: "billing-rollup", labels: { "elasticjob-job": "billingRollup" } },
      spec: {
        schedule: "0 0 2 * * *",
        timeZone: "Etc/GMT-8",
        shards: 3,
        shardParameters: { "0": "Beijing", "1": "Shanghai", "2": "Guangzhou" },
        parameter: "month=current",
        handler: "com.example.BillingJob",
        strategy: "round-robin",
        failover: "fenced",
        misfire: "skip",
        suspend: true,
        description: "nightly",
      },
    });
    expect(problems.map((problem) => problem.field)).toEqual(["jobName"]);
  });

  it("writes ElasticJob's defaults out: failover off, misfire fire-once, AVG_ALLOCATION as balanced", () => {
    const { manifest } = convertJob(job(BASE));
    expect(manifest?.spec).toMatchObject({ failover: "off", misfire: "fire-once", strategy: "balanced" });
    expect(manifest?.spec).not.toHaveProperty("suspend");
  });

  it.each([
    ["GMT+08:00", "Etc/GMT-8"],
    ["GMT-5", "Etc/GMT+5"],
    ["GMT+0900", "Etc/GMT-9"],
    ["GMT", "UTC"],
    ["GMT+00:00", "UTC"],
    ["Asia/Shanghai", "Asia/Shanghai"],
  ])("reads the time zone %s as %s", (timeZone, zone) => {
    expect(convertJob(job({ ...BASE, timeZone })).manifest?.spec).toMatchObject({ timeZone: zone });
  });

  it("reports a missing time zone, since ElasticJob used the JVM's", () => {
    const { manifest, problems } = convertJob(job({ ...BASE, timeZone: "" }));
    expect(manifest?.spec).not.toHaveProperty("timeZone");
    expect(problems).toContainEqual(expect.objectContaining({ field: "timeZone", value: undefined, fatal: false, why: expect.stringMatching(/JVM's default time zone/) as unknown }));
  });

  it.each([
    [{ cron: "0 0 2 * * ? 2031" }, "cron"],
    [{ cron: "0 0 2 15W * ?" }, "cron"],
    [{ cron: "0 0 2 31 2 ?" }, "cron"],
    [{ timeZone: "GMT+05:30" }, "timeZone"],
    [{ timeZone: "Mars/Olympus" }, "timeZone"],
    [{ shardingTotalCount: "0" }, "shardingTotalCount"],
    [{ shardingItemParameters: "0=a,3=d" }, "shardingItemParameters"],
    [{ shardingItemParameters: "a=b" }, "shardingItemParameters"],
    [{ failover: "yes" }, "failover"],
    [{ elasticJobType: "DATAFLOW_CUSTOM" }, "elasticJobType"],
  ])("does not convert a job with %o, naming %s", (settings, field) => {
    const { manifest, problems } = convertJob(job({ ...BASE, ...settings }));
    expect(manifest).toBeUndefined();
    expect(problems.filter((problem) => problem.fatal).map((problem) => problem.field)).toEqual([field]);
  });

  it("reports each setting without an equivalent, and unknown ones, and still converts the job", () => {
    const { manifest, problems } = convertJob(
      job({ ...BASE, overwrite: "false", monitorExecution: "false", maxTimeDiffSeconds: "60", reconcileIntervalMinutes: "10", jobErrorHandlerType: "EMAIL", jobListenerTypes: "a", label: "x", staticSharding: "true", shardingTotalCnt: "3" }, { "email.host": "smtp" }),
    );
    expect(manifest).toBeDefined();
    expect(problems.filter((problem) => !problem.fatal).map((problem) => problem.field).sort()).toEqual(
      ["jobErrorHandlerType", "jobListenerTypes", "jobName", "label", "maxTimeDiffSeconds", "monitorExecution", "overwrite", "props.email.host", "reconcileIntervalMinutes", "shardingTotalCnt", "staticSharding"].sort(),
    );
    expect(problems.find((problem) => problem.field === "jobErrorHandlerType")?.advice).toMatch(/spec\.onFailure\.webhook/);
    expect(problems.find((problem) => problem.field === "shardingTotalCnt")?.why).toMatch(/not an ElasticJob job setting/);
  });

  it("converts a SCRIPT job's command line and an HTTP job's request", () => {
    const script = convertJob(job({ ...BASE, elasticJobClass: "", elasticJobType: "SCRIPT" }, { "script.command.line": "/opt/jobs/clean.sh --days '7 days'" }));
    expect(script.manifest?.spec).toMatchObject({ script: { command: "/opt/jobs/clean.sh", args: ["--days", "7 days"] } });
    const http = convertJob(
      job({ ...BASE, elasticJobClass: "", elasticJobType: "HTTP" }, { "http.url": "http://svc/run", "http.method": "post", "http.data": "a=1", "http.connect.timeout.milliseconds": "1500", "http.read.timeout.milliseconds": "5000", "http.content.type": "application/x-www-form-urlencoded" }),
    );
    expect(http.manifest?.spec).toMatchObject({
      http: { method: "POST", url: "http://svc/run", body: "a=1", headers: { "Content-Type": "application/x-www-form-urlencoded" }, connectTimeoutSeconds: 2, readTimeoutSeconds: 5 },
    });
    for (const { manifest } of [script, http]) expect(() => parseManifest(JSON.stringify(manifest))).not.toThrow();
  });

  it("names the handler after the job when no class is given, and says so", () => {
    const { manifest, problems } = convertJob(job({ cron: "0 0 2 * * ?", timeZone: "UTC", shardingTotalCount: "1" }, {}, "settle"));
    expect(manifest?.spec).toMatchObject({ handler: "settle" });
    expect(problems).toContainEqual(expect.objectContaining({ field: "elasticJobClass", fatal: false }));
  });

  it("makes a manual-only job of one without a cron", () => {
    const { manifest, problems } = convertJob(job({ elasticJobClass: "com.example.Once", timeZone: "UTC", shardingTotalCount: "1", jobBootstrapBeanName: "onceBean" }));
    expect(manifest?.spec).not.toHaveProperty("schedule");
    expect(problems.map((problem) => problem.field)).toEqual(["jobName", "cron", "jobBootstrapBeanName"]);
  });
});

describe("dnsName", () => {
  it.each([
    ["dataflowJob", "dataflow-job"],
    ["billing_rollup", "billing-rollup"],
    ["Billing.Rollup", "billing-rollup"],
    ["job", "job"],
    ["__", undefined],
  ])("%s -> %s", (name, label) => {
    expect(dnsName(name)).toBe(label);
  });
});

describe("splitCommandLine", () => {
  it("splits at blanks, keeping quoted words together", () => {
    expect(splitCommandLine(`python3 run.py "a b" 'c d' e`)).toEqual(["python3", "run.py", "a b", "c d", "e"]);
  });
});
