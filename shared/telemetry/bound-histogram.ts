import { ValueType, type Attributes, type HrTime } from "@opentelemetry/api";
import { hrTime } from "@opentelemetry/core";
import { AggregationTemporality, DataPointType, type DataPoint, type Histogram, type HistogramMetricData } from "@opentelemetry/sdk-metrics";

/** One series of a BoundHistogram: its attributes are fixed, recording is cheap. */
export interface HistogramSeries {
  /** Counts `value` in its bucket; negative values and NaN are dropped, as OpenTelemetry's histograms drop them. */
  record(value: number): void;
}

/** What a BoundHistogram is called and measures. */
export interface BoundHistogramOptions {
  /** The scraped name, with its unit (`..._seconds`): nothing is appended to a histogram's name. */
  name: string;
  description: string;
  unit: string;
  /** Inclusive upper bounds of the buckets, ascending; one more bucket holds what is above the last. */
  boundaries: readonly number[];
}

/**
 * A cumulative histogram whose series are bound to their attributes once, for paths that record
 * tens of thousands of values a second: OpenTelemetry's own Histogram hashes the attributes of
 * every recording (sorting and serialising them), which costs microseconds a value. Recording
 * here is a bucket search and a few additions. A MetricsRegistry makes these and exports them
 * beside its instruments.
 */
export class BoundHistogram {
  readonly #options: BoundHistogramOptions;
  readonly #boundaries: number[];
  readonly #series = new Map<string, Series>();

  constructor(options: BoundHistogramOptions) {
    for (let i = 1; i < options.boundaries.length; i++) {
      if (!(options.boundaries[i]! > options.boundaries[i - 1]!)) throw new RangeError(`${options.name}: bucket boundaries must ascend`);
    }
    this.#options = options;
    this.#boundaries = [...options.boundaries];
  }

  /** The series of `attributes`; the same one for equal attributes. Keep it: this call is not the cheap part. */
  series(attributes: Attributes): HistogramSeries {
    const key = JSON.stringify(Object.entries(attributes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    let series = this.#series.get(key);
    if (series === undefined) {
      series = new Series(this.#boundaries, { ...attributes }, hrTime());
      this.#series.set(key, series);
    }
    return series;
  }

  /** What the series hold now, as metric data; undefined before anything was bound. */
  collect(endTime: HrTime): HistogramMetricData | undefined {
    if (this.#series.size === 0) return undefined;
    const { name, description, unit } = this.#options;
    return {
      descriptor: { name, description, unit, valueType: ValueType.DOUBLE },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints: [...this.#series.values()].map((series) => series.point(endTime)),
    };
  }
}

class Series implements HistogramSeries {
  readonly #boundaries: number[];
  readonly #counts: number[];
  readonly #attributes: Attributes;
  readonly #startTime: HrTime;
  #sum = 0;
  #count = 0;
  #min = Infinity;
  #max = -Infinity;

  constructor(boundaries: number[], attributes: Attributes, startTime: HrTime) {
    this.#boundaries = boundaries;
    this.#counts = new Array<number>(boundaries.length + 1).fill(0);
    this.#attributes = attributes;
    this.#startTime = startTime;
  }

  record(value: number): void {
    if (!(value >= 0)) return;
    // The first bucket whose upper bound is >= value; the last one when none is.
    const boundaries = this.#boundaries;
    let low = 0;
    let high = boundaries.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (boundaries[middle]! < value) low = middle + 1;
      else high = middle;
    }
    this.#counts[low]!++;
    this.#sum += value;
    this.#count++;
    if (value < this.#min) this.#min = value;
    if (value > this.#max) this.#max = value;
  }

  point(endTime: HrTime): DataPoint<Histogram> {
    return {
      startTime: this.#startTime,
      endTime,
      attributes: this.#attributes,
      value: {
        buckets: { boundaries: this.#boundaries, counts: [...this.#counts] },
        sum: this.#sum,
        count: this.#count,
        ...(this.#count > 0 ? { min: this.#min, max: this.#max } : {}),
      },
    };
  }
}
