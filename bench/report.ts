/**
 * The benchmark's results: rows of `{name, value, unit, peer, peerValue, ratio}` written as
 * `latest.json`, the same as a Markdown table in `latest.md`, and a chart in `latest.svg`.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ChartPanel, renderChart } from "./chart.js";

/** One measured figure, beside the peer's where the peer was measured in the same run. */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  /** What the peer figure is ("BullMQ 5.81 on Redis 7.0", "balanced (ElasticJob AVG_ALLOCATION)"); null without one. */
  peer: string | null;
  peerValue: number | null;
  /**
   * How many times better Shardline's figure is than the peer's: peerValue / value where lower
   * is better (lag, time, shards moved), value / peerValue where higher is better (throughput).
   * Above 1, Shardline leads. Null without a peer, or when a figure is 0.
   */
  ratio: number | null;
}

/** Which way a figure improves. */
export type Better = "lower" | "higher";

/** A row, with its ratio computed from which way the figure improves. */
export function row(name: string, value: number, unit: string, better: Better, peer?: { name: string; value: number }): BenchRow {
  const rounded = round(value);
  if (peer === undefined) return { name, value: rounded, unit, peer: null, peerValue: null, ratio: null };
  const peerValue = round(peer.value);
  const ratio = value > 0 && peer.value > 0 ? round(better === "lower" ? peer.value / value : value / peer.value) : null;
  return { name, value: rounded, unit, peer: peer.name, peerValue, ratio };
}

/** Three significant digits, at most three decimals: enough for a noisy shared machine. */
function round(value: number): number {
  if (!Number.isFinite(value) || value === 0) return value;
  const digits = Math.max(0, Math.min(3, 2 - Math.floor(Math.log10(Math.abs(value)))));
  return Number(value.toFixed(digits));
}

/** What produced the results: shown above the table. */
export interface RunInfo {
  command: string;
  startedAt: Date;
  seconds: number;
  node: string;
  cpus: number;
  cpuModel: string;
  /** Design targets by row name, shown in their own column. */
  targets: Record<string, string>;
}

/** Writes latest.json, latest.md and latest.svg into `dir`; returns their paths. */
export function writeResults(dir: string, rows: readonly BenchRow[], info: RunInfo, panels: readonly ChartPanel[]): string[] {
  mkdirSync(dir, { recursive: true });
  const json = join(dir, "latest.json");
  const md = join(dir, "latest.md");
  const svg = join(dir, "latest.svg");
  writeFileSync(json, `${JSON.stringify(rows, null, 2)}\n`);
  writeFileSync(md, markdown(rows, info));
  writeFileSync(svg, renderChart(panels));
  return [json, md, svg];
}

function markdown(rows: readonly BenchRow[], info: RunInfo): string {
  const cell = (value: number | string | null): string => (value === null ? "" : String(value));
  const lines = [
    "# Shardline benchmark",
    "",
    `Produced by \`${info.command}\` on ${info.startedAt.toISOString()} in ${Math.round(info.seconds)} s: Node ${info.node}, ` +
      `${info.cpus} × ${info.cpuModel}. Every peer figure was measured in the same run on the same machine. ` +
      "`ratio` is how many times better Shardline's figure is (above 1, Shardline leads).",
    "",
    "| figure | Shardline | unit | peer | peer figure | ratio | target |",
    "|---|---|---|---|---|---|---|",
    ...rows.map(
      (r) => `| ${r.name} | ${cell(r.value)} | ${r.unit} | ${cell(r.peer)} | ${cell(r.peerValue)} | ${cell(r.ratio)} | ${info.targets[r.name] ?? ""} |`,
    ),
    "",
    "![fire lag and failover](latest.svg)",
    "",
  ];
  return lines.join("\n");
}
