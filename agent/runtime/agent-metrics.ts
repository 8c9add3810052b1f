import type { Attributes, Counter } from "@opentelemetry/api";
import { executionStateName } from "../../shared/execution-view.js";
import type { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { BoundHistogram, HistogramSeries } from "../../shared/telemetry/bound-histogram.js";
import type { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import type { ExecutionMetrics } from "../executors/execution-telemetry.js";

/** What an agent's metrics read from the agent at scrape time. */
export interface AgentGauges {
  /** Shards held, revoking ones included. */
  assignments(): number;
  /** True while a controller's Welcome stands on the open stream. */
  connected(): boolean;
}

/** Counts by ExecutionState, and the bound series, for one job. */
interface JobSeries {
  counts: number[];
  /** {job, outcome} by ExecutionState, made once. */
  outcomes: Attributes[];
  /** Duration series by ExecutionState, bound when first used. */
  durations: (HistogramSeries | undefined)[];
  fireLag: HistogramSeries;
}

/**
 * An agent's metrics (names as scraped; all `shardline_agent_` so that they never add up with
 * the controller's series of the same meaning):
 *
 * - `shardline_agent_executions_total{job,outcome}`: executions this agent ended, by outcome
 *   (succeeded, failed, timed-out, cancelled, lost), refused dispatches included.
 * - `shardline_agent_execution_duration_seconds{job,outcome}`: from an execution's start
 *   (beforeExecution included) to its outcome.
 * - `shardline_agent_fire_lag_seconds{job}`: from the fire instant to the execution's start on
 *   this agent, for first attempts of a fire's shards.
 * - `shardline_agent_running_executions`: executions started and not ended.
 * - `shardline_agent_assignments`: shards held.
 * - `shardline_agent_connected`: 1 while welcomed by a controller.
 * - `shardline_agent_reconnects_total`: streams opened after an earlier one closed.
 * - `shardline_agent_lease_lapses_total`: times the lease lapsed and the agent fenced itself.
 *
 * On the hot path (up to tens of thousands of runs a second) recording allocates nothing: histograms record
 * into series bound once per job and outcome (BoundHistogram), counts and gauges are plain
 * numbers read at scrape time.
 */
export class AgentMetrics implements ExecutionMetrics {
  readonly #series = new Map<string, JobSeries>();
  readonly #duration: BoundHistogram;
  readonly #fireLag: BoundHistogram;
  readonly #reconnects: Counter;
  readonly #leaseLapses: Counter;
  #running = 0;

  constructor(registry: MetricsRegistry, gauges: AgentGauges) {
    const { meter } = registry;
    this.#duration = registry.histogram({
      name: "shardline_agent_execution_duration_seconds",
      description: "How long executions ran on this agent, from their start (beforeExecution included) to their outcome, by job and outcome",
      unit: "s",
    });
    this.#fireLag = registry.histogram({
      name: "shardline_agent_fire_lag_seconds",
      description: "From a fire's instant to the start of its execution on this agent, for first attempts, by job",
      unit: "s",
    });
    this.#reconnects = meter.createCounter("shardline_agent_reconnects", { description: "Streams to a controller opened after an earlier one closed" });
    this.#leaseLapses = meter.createCounter("shardline_agent_lease_lapses", {
      description: "Times this agent's lease lapsed and it fenced itself, aborting every run",
    });
    const executions = meter.createObservableCounter("shardline_agent_executions", {
      description: "Executions this agent ended, by job and outcome (succeeded, failed, timed-out, cancelled, lost)",
    });
    const running = meter.createObservableGauge("shardline_agent_running_executions", { description: "Executions started on this agent and not ended yet" });
    const assignments = meter.createObservableGauge("shardline_agent_assignments", { description: "Shards this agent holds, revoking ones included" });
    const connected = meter.createObservableGauge("shardline_agent_connected", { description: "1 while a controller has welcomed this agent on an open stream, else 0" });
    meter.addBatchObservableCallback(
      (observe) => {
        for (const series of this.#series.values()) {
          series.counts.forEach((count, state) => {
            if (count > 0) observe.observe(executions, count, series.outcomes[state]);
          });
        }
        observe.observe(running, this.#running);
        observe.observe(assignments, gauges.assignments());
        observe.observe(connected, gauges.connected() ? 1 : 0);
      },
      [executions, running, assignments, connected],
    );
  }

  started(job: string, fireLagSeconds: number | undefined): void {
    this.#running++;
    // A start a hair before the instant (a clock read in another order) is on time, not negative.
    if (fireLagSeconds !== undefined) this.#seriesOf(job).fireLag.record(Math.max(0, fireLagSeconds));
  }

  ended(job: string, state: ExecutionState, durationSeconds: number | undefined): void {
    const series = this.#seriesOf(job);
    series.counts[state] = (series.counts[state] ?? 0) + 1;
    if (durationSeconds === undefined) return;
    this.#running--;
    const duration = (series.durations[state] ??= this.#duration.series(series.outcomes[state] ?? { shardline_job: job, outcome: executionStateName(state) }));
    duration.record(Math.max(0, durationSeconds));
  }

  /** A stream was opened after an earlier one closed. */
  reconnected(): void {
    this.#reconnects.add(1);
  }

  /** The lease lapsed: the agent fenced itself. */
  leaseLapsed(): void {
    this.#leaseLapses.add(1);
  }

  #seriesOf(job: string): JobSeries {
    let series = this.#series.get(job);
    if (series === undefined) {
      const outcomes: Attributes[] = [];
      // Every state gets its attribute set up front: a lookup by index on the hot path, never an allocation.
      for (let state = 0; state <= MAX_STATE; state++) outcomes.push({ shardline_job: job, outcome: executionStateName(state) });
      series = { counts: [], outcomes, durations: [], fireLag: this.#fireLag.series({ shardline_job: job }) };
      this.#series.set(job, series);
    }
    return series;
  }
}

/** The highest ExecutionState value this code knows (MISFIRED). */
const MAX_STATE = 8;
