import { useEffect, useMemo, useState } from "preact/hooks";
import type { AdminClient } from "../api/admin-client.js";
import { type FeedMode, LiveFeed } from "../live/live-feed.js";
import { LiveState } from "../live/live-state.js";
import { AgentsPage } from "../pages/agents-page.js";
import { ExecutionPage } from "../pages/execution-page.js";
import { ExecutionsPage } from "../pages/executions-page.js";
import { JobPage } from "../pages/job-page.js";
import { JobsPage } from "../pages/jobs-page.js";
import { OverviewPage } from "../pages/overview-page.js";
import { Notices } from "./notices.js";
import { Link, useLocation } from "./router.js";
import { type Identity, identityAllows, type Session, SessionContext } from "./session.js";

/** The signed-in console: header, navigation, the page the path names, notices. */
export function ConsoleShell({ client, identity, onRefused, onSignOut }: { client: AdminClient; identity: Identity; onRefused(error: unknown): void; onSignOut(): void }) {
  const live = useMemo(() => new LiveState(), []);
  const [version, setVersion] = useState(0);
  const [mode, setMode] = useState<FeedMode>({ kind: "connecting" });

  useEffect(() => {
    // Changes are drawn once per animation frame, however many messages arrived in between.
    let frame: number | undefined;
    const unsubscribe = live.subscribe(() => {
      frame ??= requestAnimationFrame(() => {
        frame = undefined;
        setVersion(live.version);
      });
    });
    const feed = new LiveFeed(client, live, { mode: setMode, unauthenticated: onRefused });
    feed.start();
    return () => {
      feed.stop();
      unsubscribe();
      if (frame !== undefined) cancelAnimationFrame(frame);
    };
    // One feed for the session's life: the client and the callbacks do not change within it.
  }, [client, live]);

  const session: Session = useMemo(
    () => ({ client, identity, live, version, mode, allows: (method) => identityAllows(identity, method), refused: onRefused, signOut: onSignOut }),
    [client, identity, live, version, mode, onRefused, onSignOut],
  );
  const where = useLocation();

  return (
    <SessionContext.Provider value={session}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <span class="brand" aria-hidden="true">
          <span class="brand-mark" />
          Shardline
        </span>
        <nav aria-label="Console">
          <NavLink href="/" testid="nav-overview" label="Overview" active={where.path === "/"} />
          <NavLink href="/jobs" testid="nav-jobs" label="Jobs" active={where.path.startsWith("/jobs")} />
          <NavLink href="/executions" testid="nav-executions" label="Executions" active={where.path.startsWith("/executions")} />
          <NavLink href="/agents" testid="nav-agents" label="Agents" active={where.path.startsWith("/agents")} />
        </nav>
        <FeedIndicator mode={mode} />
        <span class="whoami" data-testid="whoami" title={identity.allowedMethods === undefined ? "this controller does not say which actions your role allows" : undefined}>
          {identity.name === "" ? "anonymous" : identity.name} ({identity.role === "" ? "role unknown" : identity.role})
        </span>
        {(identity.tokensRequired || identity.name !== "") && (
          <button type="button" class="small" data-testid="signout" onClick={onSignOut}>
            Sign out
          </button>
        )}
      </header>
      <main id="main" tabIndex={-1}>
        <Page path={where.path} query={where.query} />
      </main>
      <Notices />
    </SessionContext.Provider>
  );
}

function NavLink({ href, testid, label, active }: { href: string; testid: string; label: string; active: boolean }) {
  return (
    <Link href={href} data-testid={testid} aria-current={active ? "page" : undefined} class={active ? "active" : undefined}>
      {label}
    </Link>
  );
}

/** Whether what the console shows is live, polled, or being reconnected. */
function FeedIndicator({ mode }: { mode: FeedMode }) {
  const [text, tone, title] =
    mode.kind === "live"
      ? ["live", "ok", "following the controller's changes (Watch)"]
      : mode.kind === "polling"
        ? ["polling", "wait", "this controller does not serve Watch: asking again every 2 s"]
        : mode.kind === "connecting"
          ? ["connecting", "wait", "reading the controller's state"]
          : ["reconnecting", "bad", `${mode.error} — trying again in ${Math.ceil(mode.inMs / 1000)} s`];
  return (
    <span class={`feed feed-${tone}`} title={title} role="status">
      <span class="dot" aria-hidden="true" />
      {text}
    </span>
  );
}

function Page({ path, query }: { path: string; query: URLSearchParams }) {
  if (path === "/" || path === "") return <OverviewPage />;
  if (path === "/jobs" || path === "/jobs/") return <JobsPage />;
  const job = /^\/jobs\/([^/]+)\/?$/.exec(path);
  if (job !== null) return <JobPage name={decodeURIComponent(job[1]!)} />;
  if (path === "/executions" || path === "/executions/") return <ExecutionsPage query={query} />;
  const execution = /^\/executions\/(.+)$/.exec(path);
  if (execution !== null) return <ExecutionPage id={execution[1]!.split("/").map(decodeURIComponent).join("/")} />;
  if (path === "/agents" || path === "/agents/") return <AgentsPage />;
  return (
    <section class="page">
      <h1>Not found</h1>
      <p>
        The console has no page at <code>{path}</code>. <Link href="/">Go to the overview</Link>.
      </p>
    </section>
  );
}
