import { useEffect, useState } from "preact/hooks";
import { DEFAULT_LIMIT, type ExecutionFilters, filtersFromQuery, listRequest, pageOf, queryFromFilters } from "../model/execution-filters.js";
import { formatTime } from "../model/format.js";
import { type ExecutionStateName, FILTERABLE_STATES } from "../model/states.js";
import { ExecutionTable } from "../ui/execution-table.js";
import { Link, navigate } from "../ui/router.js";
import { useSession } from "../ui/session.js";
import { useCall } from "../ui/use-call.js";
import { useNow } from "../ui/use-now.js";

/** How often the newest page is asked again. */
const REFRESH_MS = 5000;

/**
 * Executions, filtered by job, shard, agent, state and time; the filters and the page live in
 * the URL's query, so that a link shows the same list to whoever opens it.
 */
export function ExecutionsPage({ query }: { query: URLSearchParams }) {
  const { client } = useSession();
  const now = useNow();
  const { filters, problems } = filtersFromQuery(query);
  const key = queryFromFilters(filters);
  useEffect(() => void (document.title = "Executions · Shardline"), []);
  const listed = useCall((signal) => client.listExecutions(listRequest(filters), { signal }), key, filters.until === undefined ? REFRESH_MS : undefined);
  const page = listed.data === undefined ? undefined : pageOf(listed.data.executions, filters.limit);
  const href = (changes: Partial<ExecutionFilters>): string => {
    const next = queryFromFilters({ ...filters, ...changes });
    return next === "" ? "/executions" : `/executions?${next}`;
  };

  return (
    <section class="page">
      <div class="page-head">
        <h1>Executions</h1>
        {filters.until !== undefined && <span class="muted">fires before {formatTime(filters.until)}</span>}
      </div>
      <FilterForm key={key} filters={filters} onApply={(next) => navigate(href(next))} />
      {problems.map((problem) => (
        <p key={problem} class="error" role="alert">
          Ignored from the link: {problem}
        </p>
      ))}
      {listed.error !== undefined && (
        <p class="error" role="alert">
          {listed.error}
        </p>
      )}
      {page === undefined ? (
        listed.error === undefined && <p class="muted">Reading…</p>
      ) : (
        <ExecutionTable executions={page.shown} now={now} empty="No execution matches these filters (finished ones are kept as the controller's retention says)." />
      )}
      <nav class="pager" aria-label="Pages">
        {filters.until !== undefined && <Link href={href({ until: undefined })}>← Newest</Link>}
        {page?.nextUntil !== undefined && <Link href={href({ until: page.nextUntil })}>Older →</Link>}
      </nav>
    </section>
  );
}

/** The filters as a form; applied on submit (Enter in any field). */
function FilterForm({ filters, onApply }: { filters: ExecutionFilters; onApply(next: ExecutionFilters): void }) {
  const { live } = useSession();
  const [draft, setDraft] = useState({
    job: filters.job,
    shard: filters.shard === undefined ? "" : String(filters.shard),
    agent: filters.agent,
    state: filters.state as string,
    since: filters.since === undefined ? "" : toLocalInput(filters.since),
    until: filters.until === undefined ? "" : toLocalInput(filters.until),
    limit: String(filters.limit),
  });
  const set = (field: keyof typeof draft) => (event: Event) => setDraft({ ...draft, [field]: (event.currentTarget as HTMLInputElement).value });
  const submit = (event: Event): void => {
    event.preventDefault();
    const shard = /^\d+$/.test(draft.shard.trim()) ? Number(draft.shard.trim()) : undefined;
    const limit = /^\d+$/.test(draft.limit.trim()) ? Math.min(10_000, Math.max(1, Number(draft.limit.trim()))) : DEFAULT_LIMIT;
    onApply({
      job: draft.job,
      shard,
      agent: draft.agent.trim(),
      state: draft.state as ExecutionStateName | "",
      since: fromLocalInput(draft.since),
      until: fromLocalInput(draft.until),
      limit,
    });
  };
  const jobs = [...live.jobs.keys()].sort();
  if (filters.job !== "" && !jobs.includes(filters.job)) jobs.unshift(filters.job);
  return (
    <form class="filters" onSubmit={submit} aria-label="Filters">
      <label>
        Job
        <select value={draft.job} onChange={set("job")} data-testid="filter-job">
          <option value="">any</option>
          {jobs.map((name) => (
            <option key={name} value={name}>
              {name}
            </option>
          ))}
        </select>
      </label>
      <label>
        Shard
        <input inputMode="numeric" size={5} value={draft.shard} onInput={set("shard")} placeholder="any" data-testid="filter-shard" />
      </label>
      <label>
        Agent
        <input list="agent-ids" size={14} value={draft.agent} onInput={set("agent")} placeholder="any" data-testid="filter-agent" />
        <datalist id="agent-ids">
          {[...live.agents.keys()].sort().map((id) => (
            <option key={id} value={id} />
          ))}
        </datalist>
      </label>
      <label>
        State
        <select value={draft.state} onChange={set("state")} data-testid="filter-state">
          <option value="">any</option>
          {FILTERABLE_STATES.map((state) => (
            <option key={state} value={state}>
              {state.replace("_", " ")}
            </option>
          ))}
        </select>
      </label>
      <label>
        Fired from
        <input type="datetime-local" step={1} value={draft.since} onInput={set("since")} data-testid="filter-since" />
      </label>
      <label>
        until
        <input type="datetime-local" step={1} value={draft.until} onInput={set("until")} data-testid="filter-until" />
      </label>
      <label>
        Per page
        <input inputMode="numeric" size={5} value={draft.limit} onInput={set("limit")} data-testid="filter-limit" />
      </label>
      <button type="submit" class="primary" data-testid="filter-apply">
        Apply
      </button>
      <Link href="/executions">Clear</Link>
    </form>
  );
}

/** An instant as a datetime-local input holds it: this browser's local time, to the second. */
function toLocalInput(ms: number): string {
  const date = new Date(ms);
  const two = (n: number): string => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())}T${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

/** A datetime-local input's value (local time) as Unix ms; undefined when empty or invalid. */
function fromLocalInput(value: string): number | undefined {
  if (value === "") return undefined;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}
