import { useEffect } from "preact/hooks";
import { formatRelative, formatTime } from "../model/format.js";
import { latestFireOutcome } from "../model/job-outcome.js";
import { specOf } from "../model/job-spec.js";
import { StateBadge } from "../ui/execution-table.js";
import { jobHref, Link } from "../ui/router.js";
import { useSession } from "../ui/session.js";
import { useNow } from "../ui/use-now.js";

/** Every job: its schedule, next fire, how its last fire went, and whether it is paused or rolling out. */
export function JobsPage() {
  const { live } = useSession();
  const now = useNow();
  useEffect(() => void (document.title = "Jobs · Shardline"), []);
  const jobs = [...live.jobs.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  return (
    <section class="page">
      <div class="page-head">
        <h1>Jobs</h1>
        <span class="muted">{jobs.length === 1 ? "1 job" : `${jobs.length} jobs`}</span>
      </div>
      {jobs.length === 0 ? (
        <p class="muted">{live.synced ? "No jobs yet: apply one with shardline apply -f job.yaml." : "Reading the jobs…"}</p>
      ) : (
        <div class="table-wrap">
          <table class="data">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Schedule</th>
                <th scope="col">Time zone</th>
                <th scope="col">Next fire</th>
                <th scope="col">Last outcome</th>
                <th scope="col">Paused</th>
                <th scope="col" class="num">
                  Revision
                </th>
                <th scope="col">Rollout</th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((job) => {
                const spec = specOf(job);
                const finished = live.lastFinishedFire(job.name);
                const outcome = latestFireOutcome(finished.length > 0 ? finished : live.shardsOfJob(job.name).flatMap((shard) => shard.lastExecution ?? []));
                const phase = job.rollout?.phase ?? "none";
                return (
                  <tr key={job.name} data-testid="job-row" data-job={job.name}>
                    <td>
                      <Link href={jobHref(job.name)}>{job.name}</Link>
                      {job.waitingReason !== "" && (
                        <div class="sub warn clip" title={job.waitingReason}>
                          {job.waitingReason}
                        </div>
                      )}
                    </td>
                    <td>{spec.daemon ? <span class="muted">daemon</span> : spec.schedule === undefined ? <span class="muted">by hand</span> : <code>{spec.schedule}</code>}</td>
                    <td>{spec.timeZone}</td>
                    <td title={formatTime(job.nextFireUnixMs)}>{formatRelative(job.nextFireUnixMs, live.controllerNow(now))}</td>
                    <td title={outcome.fireTimeMs === 0 ? undefined : `fire of ${formatTime(outcome.fireTimeMs)}`}>
                      <StateBadge name={outcome.state} /> <span class="muted">{outcome.state === "none" ? "" : outcome.text}</span>
                    </td>
                    <td>{job.paused ? <span class="badge tone-wait">paused</span> : <span class="muted">no</span>}</td>
                    <td class="num">{String(job.revision)}</td>
                    <td>{phase === "none" ? <span class="muted">—</span> : <span class={`badge phase-${phase}`}>{phase}</span>}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
