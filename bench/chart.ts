/**
 * A small SVG bar chart for the benchmark's results: horizontal bars on a log scale, one panel
 * per figure group, Shardline's bars and the peer's in two colours. Plain SVG text, so the file
 * diffs and renders anywhere without a plotting library.
 */

/** One bar. */
export interface ChartBar {
  label: string;
  value: number;
  /** True for a peer's figure: drawn in the peer's colour. */
  peer?: boolean;
}

/** A titled group of bars sharing a unit. */
export interface ChartPanel {
  title: string;
  unit: string;
  bars: ChartBar[];
}

const WIDTH = 760;
const LABEL_WIDTH = 300;
const BAR_HEIGHT = 18;
const GAP = 6;
const PANEL_TITLE = 28;
const PLOT_WIDTH = WIDTH - LABEL_WIDTH - 90;
const COLOURS = { shardline: "#2b6cb0", peer: "#c05621" };

/** The chart as an SVG document. */
export function renderChart(panels: readonly ChartPanel[]): string {
  const parts: string[] = [];
  let y = 10;
  for (const panel of panels) {
    parts.push(text(10, y + 18, escape(`${panel.title} (${panel.unit}, log scale)`), 'font-weight="bold"'));
    y += PANEL_TITLE;
    const values = panel.bars.map((b) => b.value).filter((v) => v > 0);
    const min = Math.min(...values, 1);
    const max = Math.max(...values, min * 10);
    const low = Math.log10(min) - 0.3;
    const span = Math.log10(max) - low;
    for (const bar of panel.bars) {
      const width = bar.value > 0 ? Math.max(2, ((Math.log10(bar.value) - low) / span) * PLOT_WIDTH) : 0;
      const colour = bar.peer === true ? COLOURS.peer : COLOURS.shardline;
      parts.push(text(LABEL_WIDTH - 8, y + 13, escape(bar.label), 'text-anchor="end"'));
      parts.push(`<rect x="${LABEL_WIDTH}" y="${y}" width="${width.toFixed(1)}" height="${BAR_HEIGHT}" fill="${colour}"/>`);
      parts.push(text(LABEL_WIDTH + width + 6, y + 13, escape(formatValue(bar.value))));
      y += BAR_HEIGHT + GAP;
    }
    y += GAP * 2;
  }
  parts.push(`<rect x="${LABEL_WIDTH}" y="${y}" width="12" height="12" fill="${COLOURS.shardline}"/>`);
  parts.push(text(LABEL_WIDTH + 18, y + 11, "Shardline"));
  parts.push(`<rect x="${LABEL_WIDTH + 110}" y="${y}" width="12" height="12" fill="${COLOURS.peer}"/>`);
  parts.push(text(LABEL_WIDTH + 128, y + 11, "peer"));
  const height = y + 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="white"/>`,
    ...parts,
    "</svg>",
    "",
  ].join("\n");
}

function text(x: number, y: number, content: string, attributes = ""): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attributes}>${content}</text>`;
}

function formatValue(value: number): string {
  if (value >= 100) return String(Math.round(value));
  if (value >= 1) return value.toFixed(1);
  return value.toFixed(2);
}

function escape(value: string): string {
  return value.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
