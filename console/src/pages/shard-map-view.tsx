import { useEffect, useRef, useState } from "preact/hooks";
import type { ShardStatus } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import type { Execution } from "../../../shared/gen/shardline/v1/types_pb.js";
import { agentStateName, executionStateName, LEGEND, toneOf } from "../model/states.js";
import { DEFAULT_GEOMETRY, type MapColumn, type MapRow, type ShardMap, visibleRows } from "../model/shard-map.js";
import { executionHref, jobHref, Link, navigate } from "../ui/router.js";

/** The width of the agents' column, in CSS pixels (styles.css's .map-label agrees). */
const LABEL_WIDTH = 220;
/** The least width of a job's column, and the most its name widens it to. */
const MIN_COLUMN_WIDTH = 28;
const MAX_COLUMN_WIDTH = 160;

/** The states' colours, and what a striped or crossed square means. */
export function MapLegend() {
  return (
    <ul class="legend" aria-label="Legend">
      {LEGEND.map((entry) => (
        <li key={entry.tone}>
          <span class={`sq tone-${entry.tone}`} aria-hidden="true" />
          {entry.label}
        </li>
      ))}
      <li>
        <span class="sq tone-ok revoking" aria-hidden="true" />
        being handed back (revoking)
      </li>
      <li>
        <span class="sq tone-none disabled" aria-hidden="true" />
        disabled
      </li>
    </ul>
  );
}

/**
 * The shard map: agents (grouped by cluster and zone) down, jobs across, each shard a square in
 * its latest run's colour. Only the rows in view (and a margin) are drawn, so a thousand agents
 * and ten thousand shards scroll as smoothly as ten; the row heights come from the map's model.
 */
export function ShardMapView({ map, lookup, runOf }: { map: ShardMap; lookup(job: string, shard: number): ShardStatus | undefined; runOf(shard: ShardStatus): Execution | undefined }) {
  const scroller = useRef<HTMLDivElement>(null);
  const header = useRef<HTMLDivElement>(null);
  const [view, setView] = useState({ top: 0, height: 600 });
  useEffect(() => {
    const element = scroller.current;
    if (element === null) return;
    let frame: number | undefined;
    const measure = (): void => {
      frame = undefined;
      setView({ top: Math.max(0, element.scrollTop - (header.current?.offsetHeight ?? 0)), height: element.clientHeight });
    };
    const later = (): void => void (frame ??= requestAnimationFrame(measure));
    measure();
    element.addEventListener("scroll", later, { passive: true });
    const resize = new ResizeObserver(later);
    resize.observe(element);
    return () => {
      element.removeEventListener("scroll", later);
      resize.disconnect();
      if (frame !== undefined) cancelAnimationFrame(frame);
    };
  }, []);

  // Room for the job's name up to MAX_COLUMN_WIDTH (then it is cut, and whole in its title).
  const widths = map.columns.map((column) => Math.max(column.width, Math.min(MAX_COLUMN_WIDTH, MIN_COLUMN_WIDTH + column.job.length * 7)));
  const width = LABEL_WIDTH + widths.reduce((sum, w) => sum + w, 0);
  const [start, end] = visibleRows(map.rows, view.top, view.height);

  const open = (event: MouseEvent): void => {
    const square = (event.target as HTMLElement).closest<HTMLElement>("[data-testid='shard-cell']");
    if (square === null) return;
    const job = square.dataset.job ?? "";
    const shard = lookup(job, Number(square.dataset.shard));
    const run = shard === undefined ? undefined : runOf(shard);
    navigate(run === undefined ? jobHref(job) : executionHref(run.id));
  };

  return (
    <div class="map-scroll" ref={scroller} role="region" aria-label="Shard map" tabIndex={0}>
      <div class="map-header" ref={header} style={{ width: `${width}px` }}>
        <div class="map-label map-corner">agent</div>
        {map.columns.map((column, i) => (
          <div key={column.job} class="map-column-head" style={{ width: `${widths[i]}px` }}>
            <Link href={jobHref(column.job)} title={column.job}>
              {column.job}
            </Link>
          </div>
        ))}
      </div>
      <div class="map-body" style={{ height: `${map.height}px`, width: `${width}px` }} onClick={open}>
        {map.rows.slice(start, end).map((row) => (
          <MapLine key={row.key} row={row} columns={map.columns} widths={widths} runOf={runOf} />
        ))}
      </div>
      {map.columns.length === 0 && <p class="muted map-empty">No jobs yet: apply one (shardline apply -f job.yaml) and its shards appear here.</p>}
    </div>
  );
}

function MapLine({ row, columns, widths, runOf }: { row: MapRow; columns: readonly MapColumn[]; widths: readonly number[]; runOf(shard: ShardStatus): Execution | undefined }) {
  const place = { top: `${row.top}px`, height: `${row.height}px` };
  if (row.kind === "group") {
    return (
      <div class="map-row map-group" style={place}>
        <div class="map-label">
          <span class="muted">cluster</span> {row.cluster} <span class="muted">· zone</span> {row.zone}
          <span class="muted"> · {row.agents === 1 ? "1 agent" : `${row.agents} agents`}</span>
        </div>
      </div>
    );
  }
  const state = row.agent === undefined ? undefined : agentStateName(row.agent.state);
  return (
    <div class={`map-row ${row.kind === "unassigned" ? "map-unassigned" : ""} ${state === "lost" ? "map-lost" : ""}`} style={place} data-agent-row={row.agentId}>
      <div class="map-label">
        {row.kind === "unassigned" ? (
          <strong>unassigned</strong>
        ) : (
          <>
            <Link href={`/executions?agent=${encodeURIComponent(row.agentId)}`} title={`executions of ${row.agentId}`}>
              {row.agentId}
            </Link>
            {state !== undefined && state !== "connected" && <span class={`agent-flag flag-${state}`}>{state}</span>}
            {row.agent?.cordoned === true && state !== "draining" && <span class="agent-flag flag-draining">cordoned</span>}
          </>
        )}
      </div>
      {columns.map((column, i) => (
        <Cell key={column.job} shards={row.cells.get(column.job)} agentId={row.agentId} perLine={column.perLine} width={widths[i]!} runOf={runOf} />
      ))}
    </div>
  );
}

function Cell({ shards, agentId, perLine, width, runOf }: { shards: readonly ShardStatus[] | undefined; agentId: string; perLine: number; width: number; runOf(shard: ShardStatus): Execution | undefined }) {
  const shown = shards?.slice(0, DEFAULT_GEOMETRY.maxSquares) ?? [];
  const hidden = (shards?.length ?? 0) - shown.length;
  return (
    <div class="map-cell" style={{ width: `${width}px` }}>
      <div class="squares" style={{ maxWidth: `${perLine * DEFAULT_GEOMETRY.pitch}px` }}>
        {shown.map((shard) => {
          const state = executionStateName(runOf(shard)?.state);
          const classes = `sq tone-${toneOf(state)}${shard.revoking ? " revoking" : ""}${shard.disabled ? " disabled" : ""}`;
          const why = shard.unassignedReason === "" ? "" : ` — ${shard.unassignedReason}`;
          return (
            <span
              key={shard.shard}
              class={classes}
              data-testid="shard-cell"
              data-job={shard.job}
              data-shard={shard.shard}
              data-agent={agentId}
              data-state={state}
              title={`${shard.job} shard ${shard.shard}: ${state.replace("_", " ")}${shard.revoking ? ", revoking" : ""}${shard.disabled ? ", disabled" : ""}${why}`}
            />
          );
        })}
        {hidden > 0 && <span class="more">+{hidden}</span>}
      </div>
    </div>
  );
}
