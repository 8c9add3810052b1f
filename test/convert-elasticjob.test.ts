import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { shardline, waitFor } from "./harness/processes.js";
import { ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";

const EXAMPLES = join(dirname(fileURLToPath(import.meta.url)), "..", "examples", "elasticjob");
const SPRING_BOOT_YAML = join(EXAMPLES, "application.yml");
const SPRING_BOOT_PROPERTIES = join(EXAMPLES, "application.properties");

interface ShardingContextResult {
  jobName: string;
  shardingTotalCount: number;
  jobParameter: string;
  shardingItem: number;
  shardingParameter: string;
}

describe("shardline convert elasticjob, applied and fired through the binary", () => {
  let env: ShardlineTestEnv<SqliteController>;
  let cli: Record<string, string>;

  /** The succeeded executions of `job`, one per shard, once every one of its `shards` has one. */
  const everyShardSucceeded = (job: string, shards: number) =>
    waitFor(`every shard of ${job} to succeed`, async () => {
      const { executions } = await env.admin.listExecutions({ job, state: ExecutionState.SUCCEEDED, limit: 200 });
      const byShard = new Map(executions.map((execution) => [execution.shard, execution]));
      return byShard.size === shards ? [...byShard.values()].sort((a, b) => a.shard - b.shard) : undefined;
    }, 60_000);

  const specOf = async (name: string): Promise<Record<string, unknown>> => {
    const { job } = await env.admin.getJob({ name });
    return JSON.parse(job!.specJson) as Record<string, unknown>;
  };

  beforeAll(async () => {
    env = await ShardlineTestEnv.single({ name: "convert-elasticjob", handlers: join(EXAMPLES, "handlers.mjs") });
    await env.settingUp(async () => {
      cli = { SHARDLINE_CONTROLLER: env.controller.address };
      env.startAgent("worker-1", { args: ["--allow-script", "echo"] });
      await env.agentsReady(1, "the agent to connect");
    });
  });

  afterAll(async () => {
    await env?.close();
  });

  it("converts the Spring Boot YAML, reporting each setting without an equivalent, and its jobs apply and fire", async () => {
    const converted = await shardline(["convert", "elasticjob", SPRING_BOOT_YAML]);
    expect(converted.stderr).not.toMatch(/^error:/m);
    expect(converted.code).toBe(0);
    const warnings = converted.stderr.trim().split("\n");
    for (const expected of [
      /^warning: elasticjob: elasticjob\.regCenter: no equivalent: there is no registry/,
      /^warning: elasticjob job billingRollup: overwrite true: no equivalent: shardline apply always makes the job what the manifest says/,
      /^warning: elasticjob job billingRollup: monitorExecution true: no equivalent/,
      /^warning: elasticjob job billingRollup: jobErrorHandlerType LOG: no equivalent/,
      /^warning: elasticjob job billingRollup: jobListenerTypes auditListener: no equivalent in the manifest: listeners are code; export listeners/,
      /^warning: elasticjob job billingRollup: jobName billingRollup: .* the manifest names it billing-rollup/,
      /^warning: elasticjob job reportCleanup: props\.script\.command\.line "echo cleaning reports": runs echo without a shell.*--allow-script echo$/,
    ]) {
      expect(warnings.filter((line) => expected.test(line)), String(expected)).toHaveLength(1);
    }

    const documents = parseAllDocuments(converted.stdout).map((document) => document.toJS() as { metadata: { name: string; labels: Record<string, string> }; spec: Record<string, unknown> });
    expect(documents.map((document) => document.metadata.name)).toEqual(["billing-rollup", "invoice-export", "report-cleanup"]);
    const file = join(env.dir, "from-yaml.yaml");
    await writeFile(file, converted.stdout);
    const applied = await shardline(["apply", "-f", file], cli);
    expect(applied.stdout).toBe("job/billing-rollup created\njob/invoice-export created\njob/report-cleanup created\n");
    expect(applied.code).toBe(0);

    // Every field the issue lists, as the controller stored it.
    expect(await specOf("billing-rollup")).toMatchObject({
      schedule: "0/1 * * * * *",
      timeZone: "Etc/GMT-8",
      shards: 3,
      shardParameters: { "0": "Beijing", "1": "Shanghai", "2": "Guangzhou" },
      parameter: "month=current",
      handler: "com.example.billing.BillingRollupJob",
      strategy: "odd-even",
      failover: "fenced",
      misfire: "skip",
      suspend: false,
      description: "Rolls up the day's invoices, one city per shard",
    });
    expect(await specOf("invoice-export")).toMatchObject({ schedule: "* * * * * *", timeZone: "Asia/Shanghai", strategy: "round-robin", failover: "off", misfire: "fire-once", suspend: true });
    expect(await specOf("report-cleanup")).toMatchObject({ timeZone: "UTC", strategy: "balanced", script: expect.objectContaining({ command: "echo", args: ["cleaning", "reports"] }) as unknown });

    // Each shard ran the handler named after the job's class, with ShardingContext's values.
    const rollups = await everyShardSucceeded("billing-rollup", 3);
    expect(rollups.map((execution) => JSON.parse(execution.result) as ShardingContextResult)).toEqual(
      ["Beijing", "Shanghai", "Guangzhou"].map((city, shard) => ({
        jobName: "billing-rollup",
        taskId: rollups[shard]!.id,
        shardingTotalCount: 3,
        jobParameter: "month=current",
        shardingItem: shard,
        shardingParameter: city,
      })),
    );
    const cleanups = await everyShardSucceeded("report-cleanup", 2);
    for (const cleanup of cleanups) expect(cleanup.result).toContain("cleaning reports");

    // disabled: true is spec.suspend: no scheduled fire, yet a trigger runs it.
    const { job: suspended } = await env.admin.getJob({ name: "invoice-export" });
    expect(suspended!.nextFireUnixMs).toBe(0n);
    expect((await shardline(["trigger", "invoice-export"], cli)).code).toBe(0);
    const exports = await everyShardSucceeded("invoice-export", 2);
    expect(exports.map((execution) => execution.cause)).toEqual(["trigger", "trigger"]);
  }, 180_000);

  it("converts the Spring Boot properties into one file per job, and the job applies and fires", async () => {
    const dir = join(env.dir, "from-properties");
    const converted = await shardline(["convert", "elasticjob", SPRING_BOOT_PROPERTIES, "--output-dir", dir]);
    expect(converted.code).toBe(0);
    expect(converted.stdout).toBe(`job/order-settlement written to ${join(dir, "order-settlement.yaml")}\n`);
    expect(converted.stderr).toMatch(/^warning: elasticjob job orderSettlement: overwrite false: no equivalent: ElasticJob kept the registry's copy/m);
    expect(converted.stderr).toMatch(/^warning: elasticjob job orderSettlement: maxTimeDiffSeconds 60: no equivalent/m);
    expect(converted.stderr).toMatch(/^warning: elasticjob job orderSettlement: props\.settle\.currency USD: no equivalent/m);
    expect(converted.stderr).toMatch(/^warning: elasticjob: elasticjob\.reg-center: no equivalent/m);

    const applied = await shardline(["apply", "-f", join(dir, "order-settlement.yaml")], cli);
    expect(applied.code).toBe(0);
    expect(await specOf("order-settlement")).toMatchObject({
      schedule: "0/1 * * * * *",
      timeZone: "Etc/GMT+5",
      shards: 4,
      shardParameters: { "0": "north", "1": "south", "2": "east", "3": "west" },
      parameter: "batch=500",
      strategy: "balanced",
      failover: "off",
      misfire: "fire-once",
      suspend: false,
      description: "Settles the day's orders by region",
    });
    const settlements = await everyShardSucceeded("order-settlement", 4);
    expect(settlements.map((execution) => (JSON.parse(execution.result) as ShardingContextResult).shardingParameter)).toEqual(["north", "south", "east", "west"]);
  });

  it("writes the jobs it can, reports each one it cannot with the field and why, and exits 2", async () => {
    const file = join(env.dir, "application.properties");
    await writeFile(
      file,
      [
        "elasticjob.jobs.yearly.elastic-job-class=com.example.YearlyJob",
        "elasticjob.jobs.yearly.cron=0 0 0 1 1 ? 2030",
        "elasticjob.jobs.yearly.sharding-total-count=1",
        "elasticjob.jobs.weekday.elastic-job-class=com.example.WeekdayJob",
        "elasticjob.jobs.weekday.cron=0 0 9 15W * ?",
        "elasticjob.jobs.weekday.sharding-total-count=1",
        "elasticjob.jobs.india.elastic-job-class=com.example.IndiaJob",
        "elasticjob.jobs.india.cron=0 0 9 * * ?",
        "elasticjob.jobs.india.time-zone=GMT+05:30",
        "elasticjob.jobs.india.sharding-total-count=1",
        "elasticjob.jobs.fine.elastic-job-class=com.example.FineJob",
        "elasticjob.jobs.fine.cron=0 0 9 ? * 2-6",
        "elasticjob.jobs.fine.time-zone=GMT+08:00",
        "elasticjob.jobs.fine.sharding-total-count=2",
        "",
      ].join("\n"),
    );
    const converted = await shardline(["convert", "elasticjob", file]);
    expect(converted.code).toBe(2);
    expect(converted.stderr).toMatch(/^error: elasticjob job yearly: cron "0 0 0 1 1 \? 2030": the year field "2030" has no equivalent .*; the job was not converted$/m);
    expect(converted.stderr).toMatch(/^error: elasticjob job weekday: cron "0 0 9 15W \* \?": day-of-month "15W": W \(the nearest weekday\) has no equivalent; .*; the job was not converted$/m);
    expect(converted.stderr).toMatch(/^error: elasticjob job india: timeZone GMT\+05:30: an offset with minutes has no IANA Etc zone; set timeZone to the region's IANA zone.*; the job was not converted$/m);
    expect(converted.stderr).toMatch(/^shardline: 3 of 4 ElasticJob jobs could not be converted \(yearly, weekday, india\); nothing was written for them/m);
    const documents = parseAllDocuments(converted.stdout).map((document) => document.toJS() as { metadata: { name: string }; spec: { schedule: string } });
    expect(documents).toEqual([expect.objectContaining({ metadata: { name: "fine", labels: { "elasticjob-job": "fine" } }, spec: expect.objectContaining({ schedule: "0 0 9 * * MON-FRI", timeZone: "Etc/GMT-8" }) as unknown })]);

    const written = join(env.dir, "fine.yaml");
    await writeFile(written, converted.stdout);
    expect((await shardline(["apply", "-f", written], cli)).code).toBe(0);
    const { job } = await env.admin.getJob({ name: "fine" });
    // 09:00 at GMT+08:00 on a weekday is 01:00 UTC.
    expect(new Date(Number(job!.nextFireUnixMs)).getUTCHours()).toBe(1);
    expect([1, 2, 3, 4, 5]).toContain(new Date(Number(job!.nextFireUnixMs) + 8 * 3600_000).getUTCDay());
    expect(await readFile(written, "utf8")).toMatch(/^# Converted from ElasticJob job fine \(application\.properties\) by shardline convert elasticjob\./);
  });
});
