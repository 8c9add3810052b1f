import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { MetricsRegistry, PROMETHEUS_CONTENT_TYPE, SECONDS_BUCKETS } from "./metrics.js";
import { parsePrometheusText, sampleValue } from "./testing/prometheus-text.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function registry(serviceName = "shardline-test"): MetricsRegistry {
  const created = new MetricsRegistry({ serviceName });
  cleanups.push(() => created.shutdown());
  return created;
}

describe("MetricsRegistry", () => {
  it("exports a counter with _total appended and a histogram of seconds under its own name", async () => {
    const metrics = registry();
    const executions = metrics.meter.createCounter("shardline_executions", { description: "Executions that ended." });
    const duration = metrics.meter.createHistogram("shardline_execution_duration_seconds", {
      unit: "s",
      advice: { explicitBucketBoundaries: [...SECONDS_BUCKETS] },
    });
    executions.add(2, { job: "billing", outcome: "succeeded" });
    executions.add(1, { job: "billing", outcome: "failed" });
    duration.record(0.003, { job: "billing" });
    duration.record(2, { job: "billing" });

    const text = await metrics.text();
    expect(text).toContain("# TYPE shardline_executions_total counter");
    const samples = parsePrometheusText(text);
    expect(sampleValue(samples, "shardline_executions_total", { job: "billing", outcome: "succeeded" })).toBe(2);
    expect(sampleValue(samples, "shardline_executions_total", { job: "billing", outcome: "failed" })).toBe(1);
    expect(sampleValue(samples, "shardline_execution_duration_seconds_count", { job: "billing" })).toBe(2);
    expect(sampleValue(samples, "shardline_execution_duration_seconds_sum", { job: "billing" })).toBeCloseTo(2.003);
    expect(sampleValue(samples, "shardline_execution_duration_seconds_bucket", { job: "billing", le: "0.005" })).toBe(1);
    expect(sampleValue(samples, "shardline_execution_duration_seconds_bucket", { job: "billing", le: "+Inf" })).toBe(2);
    // No scope label on every series.
    expect(samples.get("shardline_executions_total")![0]!.labels).toEqual({ job: "billing", outcome: "succeeded" });
    expect(sampleValue(samples, "target_info", { service_name: "shardline-test" })).toBe(1);
  });

  it("exports a bound histogram beside the instruments, one series per attribute set", async () => {
    const metrics = registry();
    metrics.meter.createCounter("shardline_fires").add(1);
    const lag = metrics.histogram({ name: "shardline_fire_lag_seconds", description: "From the instant to the start.", unit: "s" });
    const billing = lag.series({ job: "billing" });
    expect(lag.series({ job: "billing" })).toBe(billing);
    billing.record(0.0004);
    billing.record(0.001);
    billing.record(7200);
    billing.record(-1);
    lag.series({ job: "reports" }).record(0.3);

    const text = await metrics.text();
    expect(text).toContain("# TYPE shardline_fire_lag_seconds histogram");
    expect(text).toContain("# HELP shardline_fire_lag_seconds From the instant to the start.");
    const samples = parsePrometheusText(text);
    expect(sampleValue(samples, "shardline_fires_total")).toBe(1);
    expect(sampleValue(samples, "shardline_fire_lag_seconds_count", { job: "billing" })).toBe(3);
    expect(sampleValue(samples, "shardline_fire_lag_seconds_sum", { job: "billing" })).toBeCloseTo(7200.0014);
    // Upper bounds are inclusive: 0.001 falls in the le="0.001" bucket.
    expect(sampleValue(samples, "shardline_fire_lag_seconds_bucket", { job: "billing", le: "0.001" })).toBe(2);
    expect(sampleValue(samples, "shardline_fire_lag_seconds_bucket", { job: "billing", le: "3600" })).toBe(2);
    expect(sampleValue(samples, "shardline_fire_lag_seconds_bucket", { job: "billing", le: "+Inf" })).toBe(3);
    expect(sampleValue(samples, "shardline_fire_lag_seconds_bucket", { job: "reports", le: "0.25" })).toBe(0);
    expect(sampleValue(samples, "shardline_fire_lag_seconds_bucket", { job: "reports", le: "0.5" })).toBe(1);
  });

  it("keeps each registry's counts apart, as two agents in one process need", async () => {
    const first = registry("first");
    const second = registry("second");
    first.meter.createCounter("shardline_reconnects").add(3);
    second.meter.createCounter("shardline_reconnects").add(1);
    expect(sampleValue(parsePrometheusText(await first.text()), "shardline_reconnects_total")).toBe(3);
    expect(sampleValue(parsePrometheusText(await second.text()), "shardline_reconnects_total")).toBe(1);
  });

  it("answers a scrape over HTTP in the Prometheus text format", async () => {
    const metrics = registry();
    metrics.meter.createUpDownCounter("shardline_running_executions").add(4);
    const server = createServer((request, response) => metrics.handle(request, response));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    cleanups.push(() => new Promise((done) => server.close(() => done())));
    const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe(PROMETHEUS_CONTENT_TYPE);
    const text = await response.text();
    expect(text).toContain("# TYPE shardline_running_executions gauge");
    expect(sampleValue(parsePrometheusText(text), "shardline_running_executions")).toBe(4);
  });
});

describe("parsePrometheusText", () => {
  it("reads labels with escapes and special values, and refuses a line it cannot read", () => {
    const samples = parsePrometheusText('# HELP x y\nx{a="q\\"uote",b="back\\\\slash"} 1.5\ny_bucket{le="+Inf"} +Inf\n');
    expect(samples.get("x")).toEqual([{ labels: { a: 'q"uote', b: "back\\slash" }, value: 1.5 }]);
    expect(sampleValue(samples, "y_bucket", { le: "+Inf" })).toBe(Infinity);
    expect(() => parsePrometheusText("not a sample line at all {")).toThrow(/line 1/);
  });
});
