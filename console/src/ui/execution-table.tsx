import type { Execution } from "../../../shared/gen/shardline/v1/types_pb.js";
import { formatDuration, formatTime } from "../model/format.js";
import { type ExecutionStateName, executionStateName, toneOf } from "../model/states.js";
import { executionHref, jobHref, Link } from "./router.js";

/** A state as a coloured word. */
export function StateBadge({ name }: { name: ExecutionStateName }) {
  return <span class={`badge tone-${toneOf(name)}`}>{name.replace("_", " ")}</span>;
}

/** How long a run took, or has been running (to `now`); "—" before it started. */
export function runDuration(execution: Execution, now: number): string {
  const started = Number(execution.startedAtUnixMs);
  if (started === 0) return "—";
  const finished = Number(execution.finishedAtUnixMs);
  return formatDuration((finished === 0 ? now : finished) - started);
}

/** Executions as a table, newest first as given; `showJob` false on a job's own page. */
export function ExecutionTable({ executions, now, showJob = true, empty }: { executions: readonly Execution[]; now: number; showJob?: boolean; empty: string }) {
  if (executions.length === 0) return <p class="muted">{empty}</p>;
  return (
    <div class="table-wrap">
      <table class="data">
        <thead>
          <tr>
            <th scope="col">Fire</th>
            {showJob && <th scope="col">Job</th>}
            <th scope="col" class="num">
              Shard
            </th>
            <th scope="col" class="num">
              Attempt
            </th>
            <th scope="col">State</th>
            <th scope="col">Agent</th>
            <th scope="col" class="num">
              Revision
            </th>
            <th scope="col">Cause</th>
            <th scope="col" class="num">
              Duration
            </th>
            <th scope="col">Error or waiting</th>
          </tr>
        </thead>
        <tbody>
          {executions.map((execution) => {
            const state = executionStateName(execution.state);
            return (
              <tr key={execution.id} data-testid="execution-row" data-execution={execution.id} data-state={state}>
                <td>
                  <Link href={executionHref(execution.id)} title={execution.id}>
                    {formatTime(execution.fireTimeUnixMs)}
                  </Link>
                </td>
                {showJob && (
                  <td>
                    <Link href={jobHref(execution.job)}>{execution.job}</Link>
                  </td>
                )}
                <td class="num">{execution.fireComplete ? "hook" : execution.shard}</td>
                <td class="num">{execution.attempt}</td>
                <td>
                  <StateBadge name={state} />
                </td>
                <td>{execution.agent === "" ? <span class="muted">—</span> : execution.agent}</td>
                <td class="num">{execution.revision === 0n ? "—" : String(execution.revision)}</td>
                <td>{execution.cause}</td>
                <td class="num">{runDuration(execution, now)}</td>
                <td class="clip" title={execution.error || execution.waitingReason}>
                  {execution.error || execution.waitingReason}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
