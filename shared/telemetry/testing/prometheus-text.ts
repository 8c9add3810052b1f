/** One sample of a scraped metric: its labels and value. */
export interface PrometheusSample {
  labels: Record<string, string>;
  value: number;
}

/**
 * Parses the Prometheus text exposition format into samples by series name (a histogram's
 * `_bucket`, `_sum` and `_count` series each under their own name). For tests: it reads what
 * our exporter writes, and throws on a line it cannot read rather than skipping it.
 */
export function parsePrometheusText(text: string): Map<string, PrometheusSample[]> {
  const samples = new Map<string, PrometheusSample[]>();
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (match === null) throw new Error(`line ${index + 1} is not a Prometheus sample: ${raw}`);
    const [, name, labelText, valueText] = match as unknown as [string, string, string | undefined, string];
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : Number(valueText);
    if (Number.isNaN(value) && valueText !== "NaN") throw new Error(`line ${index + 1} has no numeric value: ${raw}`);
    const list = samples.get(name) ?? [];
    list.push({ labels: parseLabels(labelText ?? "", index + 1), value });
    samples.set(name, list);
  }
  return samples;
}

/** The value of the one sample of `name` whose labels include `labels`; 0 when there is none. */
export function sampleValue(samples: Map<string, PrometheusSample[]>, name: string, labels: Record<string, string> = {}): number {
  const matching = (samples.get(name) ?? []).filter((sample) => Object.entries(labels).every(([key, value]) => sample.labels[key] === value));
  if (matching.length > 1) throw new Error(`${matching.length} samples of ${name} match ${JSON.stringify(labels)}; name more labels`);
  return matching[0]?.value ?? 0;
}

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  const pattern = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;
  let at = 0;
  while (at < text.length) {
    pattern.lastIndex = at;
    const match = pattern.exec(text);
    if (match === null) throw new Error(`line ${line} has unreadable labels: {${text}}`);
    labels[match[1]!] = match[2]!.replace(/\\(.)/g, (_all, escaped: string) => (escaped === "n" ? "\n" : escaped));
    at = pattern.lastIndex;
  }
  return labels;
}
