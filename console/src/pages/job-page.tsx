import { useEffect } from "preact/hooks";
import type { ShardStatus } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import type { Job, RolloutStatus } from "../../../shared/gen/shardline/v1/types_pb.js";
import { formatRelative, formatTime } from "../model/format.js";
import { specOf } from "../model/job-spec.js";
import { executionStateName } from "../model/states.js";
import { ActionButton } from "../ui/action-button.js";
import { ExecutionTable, StateBadge } from "../ui/execution-table.js";
import { executionHref, Link } from "../ui/router.js";
import { useSession } from "../ui/session.js";
import { useCall } from "../ui/use-call.js";
import { useNow } from "../ui/use-now.js";

/** How often a job's recent executions are asked again while its page is open. */
const EXECUTIONS_REFRESH_MS = 5000;

/** One job: what it is, its rollout, its shards and owners, recent runs, revisions and manifest. */
export function JobPage({ name }: { name: string }) {
  const { live, client } = useSession();
  const now = useNow();
  useEffect(() => void (document.title = `${name} · Jobs · Shardline`), [name]);
  const job = live.jobs.get(name);
  if (job === undefined) {
    return (
      <section class="page" data-testid="job-page">
        <h1>{name}</h1>
        <p class="muted">{live.synced ? `No job named ${name}: it was deleted, or never applied.` : "Reading the job…"}</p>
        <Link href="/jobs">All jobs</Link>
      </section>
    );
  }
  const spec = specOf(job);
  const rollout = job.rollout;
  return (
    <section class="page" data-testid="job-page" data-job={job.name}>
      <div class="page-head">
        <h1>{job.name}</h1>
        {job.paused && <span class="badge tone-wait">paused</span>}
        <div class="actions">
          {!spec.daemon && (
            <ActionButton method="TriggerJob" testid="action-trigger" label="Trigger now" run={async () => {
              const fired = await client.triggerJob({ name: job.name });
              return `Triggered ${job.name}: ${fired.executionIds.length === 1 ? "1 execution" : `${fired.executionIds.length} executions`}`;
            }} />
          )}
          {job.paused ? (
            <ActionButton method="ResumeJob" testid="action-resume" label="Resume" run={async () => {
              await client.resumeJob({ name: job.name });
              return `Resumed ${job.name}`;
            }} />
          ) : (
            <ActionButton
              method="PauseJob"
              testid="action-pause"
              label="Pause"
              danger
              confirm={{ title: `Pause ${job.name}?`, body: <p>No scheduled fire is made until it is resumed, and fires missed meanwhile are not made up. Runs under way finish.</p>, yes: `Pause ${job.name}` }}
              run={async () => {
                await client.pauseJob({ name: job.name });
                return `Paused ${job.name}`;
              }}
            />
          )}
        </div>
      </div>
      {job.waitingReason !== "" && <p class="banner warn">{job.waitingReason}</p>}

      <dl class="facts">
        <dt>Schedule</dt>
        <dd>{spec.daemon ? "daemon (each owned shard runs continuously)" : spec.schedule === undefined ? "none (fired by hand)" : <code>{spec.schedule}</code>}</dd>
        <dt>Time zone</dt>
        <dd>{spec.timeZone}</dd>
        <dt>Shards</dt>
        <dd>{spec.shards}</dd>
        <dt>Revision</dt>
        <dd>{String(job.revision)}</dd>
        <dt>Next fires</dt>
        <dd>
          {job.upcomingFiresUnixMs.length === 0
            ? "—"
            : job.upcomingFiresUnixMs.map((fire) => (
                <span key={String(fire)} class="chip" title={formatRelative(fire, live.controllerNow(now))}>
                  {formatTime(fire)}
                </span>
              ))}
        </dd>
        <dt>Last fire</dt>
        <dd>{formatTime(job.lastFireUnixMs)}</dd>
      </dl>

      {rollout !== undefined && rollout.phase !== "none" && <RolloutCard job={job} rollout={rollout} />}
      <ShardsCard job={job} shards={live.shardsOfJob(job.name)} />
      <RecentExecutions job={job.name} now={now} />
      <RevisionsCard job={job} />
      <section class="card">
        <h2>Manifest</h2>
        <p class="muted">As applied (revision {String(job.revision)}).</p>
        <pre class="manifest">{job.manifest}</pre>
      </section>
    </section>
  );
}

function RolloutCard({ job, rollout }: { job: Job; rollout: RolloutStatus }) {
  const { client } = useSession();
  const inProgress = rollout.phase === "progressing" || rollout.phase === "paused";
  const tally = (label: string, t: RolloutStatus["target"]) =>
    t === undefined ? null : (
      <span class="chip">
        {label}: {t.runs} runs, {t.failures} failed{t.p95DurationMs === undefined ? "" : `, p95 ${String(t.p95DurationMs)} ms`}
      </span>
    );
  return (
    <section class="card">
      <div class="card-head">
        <h2>Rollout</h2>
        <span class={`badge phase-${rollout.phase}`}>{rollout.phase}</span>
        <div class="actions">
          {inProgress && (
            <ActionButton method="PromoteRollout" testid="action-rollout-promote" label="Promote" run={async () => {
              const answer = await client.promoteRollout({ job: job.name });
              return `Promoted ${job.name}: ${answer.rollout?.phase ?? ""}`;
            }} />
          )}
          {inProgress && (
            <ActionButton
              method="AbortRollout"
              testid="action-rollout-abort"
              label="Abort"
              danger
              confirm={{ title: `Abort the rollout of ${job.name}?`, body: <p>Every shard runs the stable revision {String(rollout.stableRevision)} from its next fire. Runs under way finish on the revision they started with.</p>, yes: "Abort rollout" }}
              run={async () => {
                await client.abortRollout({ job: job.name });
                return `Aborted the rollout of ${job.name}`;
              }}
            />
          )}
          {rollout.phase === "aborted" && (
            <ActionButton method="RetryRollout" testid="action-rollout-retry" label="Retry" run={async () => {
              await client.retryRollout({ job: job.name });
              return `Retrying the rollout of ${job.name}`;
            }} />
          )}
          <UndoButton job={job} />
        </div>
      </div>
      <dl class="facts">
        <dt>Step</dt>
        <dd>
          {Math.min(rollout.step, rollout.steps.length)} of {rollout.steps.length}
          {rollout.stepStartedAtUnixMs > 0n && <span class="muted"> · since {formatTime(rollout.stepStartedAtUnixMs)}</span>}
        </dd>
        <dt>Revisions</dt>
        <dd>
          stable {String(rollout.stableRevision)} → target {String(rollout.targetRevision)}
        </dd>
        {rollout.waiting !== "" && (
          <>
            <dt>Waiting for</dt>
            <dd>{rollout.waiting}</dd>
          </>
        )}
        {rollout.reason !== "" && (
          <>
            <dt>Reason</dt>
            <dd>{rollout.reason}</dd>
          </>
        )}
        <dt>Shards</dt>
        <dd>
          {rollout.shardsByRevision.map((entry) => (
            <span key={String(entry.revision)} class="chip">
              revision {String(entry.revision)}: {entry.shards.length === 1 ? "1 shard" : `${entry.shards.length} shards`}
            </span>
          ))}
        </dd>
        <dt>Analysis</dt>
        <dd>
          {tally("target", rollout.target)} {tally("stable", rollout.stable)}
        </dd>
      </dl>
      <ol class="steps">
        {rollout.steps.map((step, i) => (
          <li key={i} class={i + 1 === rollout.step ? "current" : i + 1 < rollout.step ? "done" : ""} aria-current={i + 1 === rollout.step ? "step" : undefined}>
            {step}
          </li>
        ))}
      </ol>
    </section>
  );
}

/** Applies the previous revision again (UndoRollout with to_revision 0). */
function UndoButton({ job }: { job: Job }) {
  const { client } = useSession();
  return (
    <ActionButton
      method="UndoRollout"
      testid="action-rollout-undo"
      label="Undo"
      danger
      confirm={{
        title: `Undo ${job.name}'s last change?`,
        body: <p>The previous revision's manifest (the stable one while a rollout is under way or aborted) is applied again as a new revision, at once on every shard, without the rollout's steps.</p>,
        yes: "Undo",
      }}
      run={async () => {
        const answer = await client.undoRollout({ job: job.name });
        const warnings = answer.warnings.length === 0 ? "" : ` (${answer.warnings.join("; ")})`;
        return answer.changed ? `${job.name} is at revision ${String(answer.job?.revision ?? "")}, a copy of revision ${String(answer.undoOf)}${warnings}` : `Nothing to undo: revision ${String(answer.undoOf)} is what ${job.name} runs`;
      }}
    />
  );
}

function ShardsCard({ job, shards }: { job: Job; shards: readonly ShardStatus[] }) {
  const { client } = useSession();
  return (
    <section class="card">
      <h2>Shards and owners</h2>
      <div class="table-wrap">
        <table class="data">
          <thead>
            <tr>
              <th scope="col" class="num">
                Shard
              </th>
              <th scope="col">Owner</th>
              <th scope="col">Latest run</th>
              <th scope="col">Notes</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {shards.map((shard) => {
              const state = executionStateName(shard.lastExecution?.state);
              return (
                <tr key={shard.shard} data-testid="shard-row" data-shard={shard.shard}>
                  <td class="num">{shard.shard}</td>
                  <td>{shard.agent === "" ? <span class="muted">none</span> : <Link href={`/executions?agent=${encodeURIComponent(shard.agent)}`}>{shard.agent}</Link>}</td>
                  <td>
                    {shard.lastExecution === undefined ? (
                      <StateBadge name="none" />
                    ) : (
                      <Link href={executionHref(shard.lastExecution.id)}>
                        <StateBadge name={state} /> {formatTime(shard.lastExecution.fireTimeUnixMs)}
                      </Link>
                    )}
                  </td>
                  <td class="clip" title={shard.unassignedReason}>
                    {shard.disabled && <span class="badge tone-off">disabled</span>} {shard.revoking && <span class="badge tone-wait">revoking</span>} {shard.unassignedReason}
                  </td>
                  <td class="row-actions">
                    {shard.disabled ? (
                      <ActionButton small method="EnableShard" testid="action-enable-shard" label="Enable" run={async () => {
                        await client.enableShard({ job: job.name, shard: shard.shard });
                        return `Enabled ${job.name} shard ${shard.shard}`;
                      }} />
                    ) : (
                      <ActionButton small method="DisableShard" testid="action-disable-shard" label="Disable" run={async () => {
                        await client.disableShard({ job: job.name, shard: shard.shard });
                        return `Disabled ${job.name} shard ${shard.shard}`;
                      }} />
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function RecentExecutions({ job, now }: { job: string; now: number }) {
  const { client } = useSession();
  const recent = useCall((signal) => client.listExecutions({ job, limit: 20 }, { signal }), job, EXECUTIONS_REFRESH_MS);
  return (
    <section class="card">
      <div class="card-head">
        <h2>Recent executions</h2>
        <Link href={`/executions?job=${encodeURIComponent(job)}`}>All executions of {job}</Link>
      </div>
      {recent.error !== undefined && <p class="error">{recent.error}</p>}
      {recent.data === undefined ? (
        recent.error === undefined && <p class="muted">Reading…</p>
      ) : (
        <ExecutionTable executions={recent.data.executions} now={now} showJob={false} empty="No executions yet." />
      )}
    </section>
  );
}

function RevisionsCard({ job }: { job: Job }) {
  const { client } = useSession();
  const revisions = useCall((signal) => client.listRevisions({ job: job.name }, { signal }), `${job.name}@${job.revision}`);
  const stable = job.rollout?.stableRevision;
  const showUndo = (job.rollout?.phase ?? "none") === "none" && (revisions.data?.revisions.length ?? 0) > 1;
  return (
    <section class="card">
      <div class="card-head">
        <h2>Revisions</h2>
        <div class="actions">{showUndo && <UndoButton job={job} />}</div>
      </div>
      {revisions.error !== undefined && <p class="error">{revisions.error}</p>}
      {revisions.data !== undefined && (
        <div class="table-wrap">
          <table class="data">
            <thead>
              <tr>
                <th scope="col" class="num">
                  Revision
                </th>
                <th scope="col">Applied</th>
                <th scope="col">By</th>
                <th scope="col">Spec hash</th>
                <th scope="col">Note</th>
              </tr>
            </thead>
            <tbody>
              {revisions.data.revisions.map((revision) => {
                const notes = [
                  revision.revision === job.revision ? "current" : "",
                  stable !== undefined && stable !== job.revision && revision.revision === stable ? "stable" : "",
                  revision.undoOf > 0n ? `undo of ${String(revision.undoOf)}` : "",
                ].filter((note) => note !== "");
                return (
                  <tr key={String(revision.revision)}>
                    <td class="num">{String(revision.revision)}</td>
                    <td>{formatTime(revision.appliedAtUnixMs)}</td>
                    <td>{revision.appliedBy === "" ? <span class="muted">—</span> : revision.appliedBy}</td>
                    <td>
                      <code title={revision.specHash}>{revision.specHash.slice(0, 12)}</code>
                    </td>
                    <td>{notes.join(", ")}</td>
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
