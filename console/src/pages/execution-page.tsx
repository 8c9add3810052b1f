import { useEffect } from "preact/hooks";
import type { Execution } from "../../../shared/gen/shardline/v1/types_pb.js";
import { formatTime } from "../model/format.js";
import { executionStateName, isOpen } from "../model/states.js";
import { traceUrl } from "../model/trace-link.js";
import { ActionButton } from "../ui/action-button.js";
import { ExecutionLog } from "../ui/execution-log.js";
import { runDuration, StateBadge } from "../ui/execution-table.js";
import { jobHref, Link } from "../ui/router.js";
import { useSession } from "../ui/session.js";
import { useCall } from "../ui/use-call.js";
import { useNow } from "../ui/use-now.js";

/** How often an open execution is asked again while its page is shown. */
const OPEN_REFRESH_MS = 2000;

/** One execution: when and where it ran, how it ended and why, its trace and its log. */
export function ExecutionPage({ id }: { id: string }) {
  const { client, live } = useSession();
  const now = useNow();
  useEffect(() => void (document.title = `${id} · Executions · Shardline`), [id]);
  const answer = useCall((signal) => client.getExecution({ id }, { signal }), id, OPEN_REFRESH_MS);
  // The watch's copy is newer than the last answer when it has one (and saves a call's wait).
  const execution = live.executions.get(id) ?? answer.data?.execution;
  return (
    <section class="page" data-testid="execution-page" data-execution={id}>
      <div class="page-head">
        <h1 class="execution-id">{id}</h1>
        {execution !== undefined && <StateBadge name={executionStateName(execution.state)} />}
        <div class="actions">{execution !== undefined && isOpen(execution.state) && <CancelButton execution={execution} />}</div>
      </div>
      {answer.error !== undefined && execution === undefined && (
        <p class="error" role="alert">
          {answer.error}
        </p>
      )}
      {execution === undefined ? answer.error === undefined && <p class="muted">Reading…</p> : <Details execution={execution} now={now} template={live.status?.traceUrlTemplate} />}
    </section>
  );
}

function Details({ execution, now, template }: { execution: Execution; now: number; template: string | undefined }) {
  const trace = traceUrl(template, execution.traceId);
  return (
    <>
      {execution.error !== "" && (
        <section class="card">
          <h2>Error</h2>
          <pre class="output error-output">{execution.error}</pre>
        </section>
      )}
      <dl class="facts">
        <dt>Job</dt>
        <dd>
          <Link href={jobHref(execution.job)}>{execution.job}</Link>
        </dd>
        <dt>Shard</dt>
        <dd>{execution.fireComplete ? "completion hook (spec.onFireComplete)" : execution.shard}</dd>
        <dt>Attempt</dt>
        <dd>{execution.attempt}</dd>
        <dt>Agent</dt>
        <dd>{execution.agent === "" ? "— (not dispatched)" : <Link href={`/executions?agent=${encodeURIComponent(execution.agent)}`}>{execution.agent}</Link>}</dd>
        <dt>Revision</dt>
        <dd>{execution.revision === 0n ? "—" : String(execution.revision)}</dd>
        <dt>Cause</dt>
        <dd>{execution.cause}</dd>
        <dt>Fire</dt>
        <dd>{formatTime(execution.fireTimeUnixMs)}</dd>
        <dt>Started</dt>
        <dd>{formatTime(execution.startedAtUnixMs)}</dd>
        <dt>Finished</dt>
        <dd>{formatTime(execution.finishedAtUnixMs)}</dd>
        <dt>Duration</dt>
        <dd>{runDuration(execution, now)}</dd>
        {execution.waitingReason !== "" && (
          <>
            <dt>Waiting</dt>
            <dd>
              {execution.waitingReason}
              {execution.queuePosition > 0 && <span class="muted"> · place {execution.queuePosition} in line</span>}
            </dd>
          </>
        )}
        <dt>Trace</dt>
        <dd>
          {trace !== undefined ? (
            <a href={trace} target="_blank" rel="noopener noreferrer" data-testid="trace-link">
              {execution.traceId}
            </a>
          ) : execution.traceId !== "" ? (
            <span>
              <code>{execution.traceId}</code> <span class="muted">(no --trace-url-template on the controller to link it)</span>
            </span>
          ) : (
            <span class="muted">not traced</span>
          )}
        </dd>
      </dl>
      {execution.result !== "" && (
        <section class="card">
          <h2>Result</h2>
          <pre class="output">{execution.result}</pre>
        </section>
      )}
      <ExecutionLog id={execution.id} />
    </>
  );
}

function CancelButton({ execution }: { execution: Execution }) {
  const { client } = useSession();
  return (
    <ActionButton
      method="CancelExecution"
      testid="action-cancel"
      label="Cancel"
      danger
      confirm={{
        title: "Cancel this execution?",
        body: (
          <p>
            <code>{execution.id}</code> is {executionStateName(execution.state)}: a pending run is cancelled at once, a running one is aborted on its agent. It is never run again.
          </p>
        ),
        yes: "Cancel execution",
      }}
      run={async () => {
        const answer = await client.cancelExecution({ id: execution.id });
        return `Cancel sent: ${execution.id} is ${executionStateName(answer.state)}`;
      }}
    />
  );
}
