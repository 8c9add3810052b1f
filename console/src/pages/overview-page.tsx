import { useEffect, useMemo } from "preact/hooks";
import { formatRate, formatTime } from "../model/format.js";
import { buildShardMap } from "../model/shard-map.js";
import { shardKey } from "../live/live-state.js";
import { useSession } from "../ui/session.js";
import { MapLegend, ShardMapView } from "./shard-map-view.js";

/** The overview: the controller's status, then the shard map, moving as the watch tells. */
export function OverviewPage() {
  const { live, version, mode } = useSession();
  useEffect(() => void (document.title = "Overview · Shardline"), []);
  const map = useMemo(() => buildShardMap(live.jobs.keys(), live.agents.values(), live.shards.values()), [live, version]);
  const status = live.status;
  // Polling a controller without Watch gives no term and no rates: shown as unknown, not as 0.
  const unknown = mode.kind === "polling" || status === undefined;
  const figure = (text: string | number | undefined, testid: string, label: string, tone = "") => (
    <div class={`figure ${tone}`}>
      <span class="figure-value" data-testid={testid}>
        {text ?? "—"}
      </span>
      <span class="figure-label">{label}</span>
    </div>
  );

  return (
    <section class="page page-wide">
      <div class="page-head">
        <h1>Overview</h1>
        <span class="muted">
          {status === undefined ? "waiting for the controller's status" : `leader ${status.address}${status.version === "" ? "" : ` · version ${status.version}`} · as of ${formatTime(status.timeUnixMs)}`}
        </span>
      </div>
      <div class="figures" aria-label="Controller status">
        {figure(status?.address, "status-leader", "leader")}
        {figure(unknown || status.term === 0n ? undefined : String(status.term), "status-term", "term")}
        {figure(unknown ? undefined : formatRate(status.firesPerSecond), "status-fires-per-second", "fires/s")}
        {figure(status?.agentsConnected, "status-agents-connected", "agents connected")}
        {figure(status?.agentsLost, "status-agents-lost", "agents lost", (status?.agentsLost ?? 0) > 0 ? "figure-bad" : "")}
        {figure(status?.jobs, "status-jobs", "jobs")}
        {figure(status?.shardsUnassigned, "status-shards-unassigned", "shards unassigned", (status?.shardsUnassigned ?? 0) > 0 ? "figure-warn" : "")}
      </div>
      <MapLegend />
      {!live.synced && live.version === 0 ? <p class="muted">Reading the shard map…</p> : <ShardMapView map={map} lookup={(job, shard) => live.shards.get(shardKey(job, shard))} runOf={(shard) => live.shownRun(shard)} />}
      <RecentEvents />
    </section>
  );
}

/** The newest events the watch brought, newest first. */
function RecentEvents() {
  const { live } = useSession();
  const events = live.events.slice(-12).reverse();
  if (events.length === 0) return null;
  return (
    <section class="card">
      <h2>Recent events</h2>
      <ul class="events">
        {events.map((event, i) => (
          <li key={`${event.timeUnixMs}-${i}`}>
            <time class="muted">{formatTime(event.timeUnixMs)}</time> <code>{event.type}</code> {event.message}
          </li>
        ))}
      </ul>
    </section>
  );
}
