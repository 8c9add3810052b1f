import type { IncomingMessage, ServerResponse } from "node:http";
import type { Meter } from "@opentelemetry/api";
import { hrTime } from "@opentelemetry/core";
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import { emptyResource, resourceFromAttributes } from "@opentelemetry/resources";
import { MeterProvider, type HistogramMetricData, type MetricProducer } from "@opentelemetry/sdk-metrics";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import { BoundHistogram, type BoundHistogramOptions } from "./bound-histogram.js";

/** What a MetricsRegistry is for. */
export interface MetricsRegistryOptions {
  /** service.name, shown in the target_info series. */
  serviceName: string;
}

/** The content type of the Prometheus text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Bucket bounds, in seconds, for histograms of durations and lags: from a millisecond to an
 * hour. OpenTelemetry's default bounds (0 to 10000) suit milliseconds, not seconds.
 */
export const SECONDS_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
];

/**
 * The metrics of one controller or agent, served as Prometheus text from its own HTTP port.
 *
 * Each registry has a MeterProvider of its own (not the global one), so several controllers and
 * agents in one process (tests, the demo) each count only their own work.
 *
 * Naming: the exporter appends `_total` to monotonic counters and nothing else (no unit suffix),
 * so counters are named without `_total` (`shardline_executions` is scraped as
 * `shardline_executions_total`) and other instruments carry their unit in the name
 * (`shardline_execution_duration_seconds`, unit "s"). Give histograms of seconds
 * `advice: { explicitBucketBoundaries: [...SECONDS_BUCKETS] }`, or, on a hot path, make them
 * with histogram() instead.
 */
export class MetricsRegistry {
  /** Where instruments are created. */
  readonly meter: Meter;
  readonly #provider: MeterProvider;
  readonly #exporter: PrometheusExporter;
  readonly #histograms: BoundHistogram[] = [];
  // Scope labels left out: every series would carry otel_scope_name="shardline", which says nothing.
  readonly #serializer = new PrometheusSerializer(undefined, false, undefined, false, true);

  constructor(options: MetricsRegistryOptions) {
    // The bound histograms join the instruments' metrics through a producer of their own.
    const histograms: MetricProducer = { collect: () => Promise.resolve(this.#collectHistograms()) };
    this.#exporter = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true, metricProducers: [histograms] });
    this.#provider = new MeterProvider({
      resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.serviceName }),
      readers: [this.#exporter],
    });
    this.meter = this.#provider.getMeter("shardline");
  }

  /**
   * A histogram for hot paths (see BoundHistogram), exported with the instruments. Its name is
   * scraped as given; `boundaries` default to SECONDS_BUCKETS.
   */
  histogram(options: Omit<BoundHistogramOptions, "boundaries"> & { boundaries?: readonly number[] }): BoundHistogram {
    const histogram = new BoundHistogram({ ...options, boundaries: options.boundaries ?? SECONDS_BUCKETS });
    this.#histograms.push(histogram);
    return histogram;
  }

  #collectHistograms() {
    const now = hrTime();
    const metrics = this.#histograms.map((histogram) => histogram.collect(now)).filter((data): data is HistogramMetricData => data !== undefined);
    // The reader keeps the SDK's resource and takes only the scope metrics from here.
    return { resourceMetrics: { resource: emptyResource(), scopeMetrics: metrics.length === 0 ? [] : [{ scope: { name: "shardline" }, metrics }] }, errors: [] };
  }

  /** The metrics now, in the Prometheus text exposition format. */
  async text(): Promise<string> {
    const { resourceMetrics, errors } = await this.#exporter.collect();
    if (errors.length > 0) throw new AggregateError(errors, "collecting the metrics failed");
    return this.#serializer.serialize(resourceMetrics);
  }

  /**
   * Answers a scrape (GET or HEAD, whatever the path: the caller routes) with the metrics in
   * the Prometheus text format; 500 when collecting them failed.
   */
  handle(request: IncomingMessage, response: ServerResponse): void {
    this.text().then(
      (text) => {
        response.writeHead(200, { "content-type": PROMETHEUS_CONTENT_TYPE });
        response.end(request.method === "HEAD" ? undefined : text);
      },
      (error: unknown) => {
        response.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
        response.end(`collecting the metrics failed: ${error instanceof Error ? error.message : String(error)}\n`);
      },
    );
  }

  /** Stops the instruments; a scrape afterwards fails. */
  shutdown(): Promise<void> {
    return this.#provider.shutdown();
  }
}
