import { useEffect, useMemo, useState } from "preact/hooks";
import { type AdminClient, createAdminClient } from "./api/admin-client.js";
import { errorText, isUnauthenticated, isUnimplemented } from "./api/errors.js";
import { readToken, writeToken } from "./api/token-store.js";
import { ConsoleShell } from "./ui/console-shell.js";
import type { Identity } from "./ui/session.js";
import { SignIn } from "./ui/sign-in.js";

/** Where the console stands with the controller. */
type Phase =
  | { kind: "checking" }
  | { kind: "signin"; error: string | undefined }
  | { kind: "unreachable"; error: string }
  | { kind: "ready"; identity: Identity };

/**
 * Who the caller is, from WhoAmI: signed in, or a prompt for a token (the controller refused the
 * one held, or needs one and none is held), or the controller out of reach. A controller that
 * does not serve WhoAmI yet is asked ListJobs instead, and every action is offered (it still
 * refuses what the role does not allow, and the console shows its words).
 */
async function identify(client: AdminClient): Promise<Phase> {
  const held = readToken() !== undefined;
  try {
    const who = await client.whoAmI({});
    if (who.tokensRequired && !held) return { kind: "signin", error: undefined };
    const identity = { name: who.name, role: who.role, allowedMethods: new Set(who.allowedMethods), tokensRequired: who.tokensRequired };
    return { kind: "ready", identity };
  } catch (error) {
    if (isUnauthenticated(error)) return { kind: "signin", error: held ? errorText(error) : undefined };
    if (!isUnimplemented(error)) return { kind: "unreachable", error: errorText(error) };
  }
  try {
    await client.listJobs({});
    return { kind: "ready", identity: { name: "", role: "", allowedMethods: undefined, tokensRequired: held } };
  } catch (error) {
    if (isUnauthenticated(error)) return { kind: "signin", error: held ? errorText(error) : undefined };
    return { kind: "unreachable", error: errorText(error) };
  }
}

/** The console: sign-in when needed, then the pages. */
export function App() {
  const client = useMemo(() => createAdminClient(readToken), []);
  const [phase, setPhase] = useState<Phase>({ kind: "checking" });
  const check = (): void => {
    setPhase({ kind: "checking" });
    void identify(client).then(setPhase);
  };
  useEffect(check, [client]);

  const signIn = async (token: string): Promise<void> => {
    writeToken(token);
    const next = await identify(client);
    // A refused token is not kept: the prompt shows the controller's words instead.
    if (next.kind !== "ready") writeToken(undefined);
    setPhase(next.kind === "signin" && next.error === undefined ? { kind: "signin", error: "the controller did not accept this token" } : next);
  };

  switch (phase.kind) {
    case "checking":
      return <p class="loading-page">Connecting to the controller…</p>;
    case "signin":
      return <SignIn error={phase.error} onSubmit={signIn} />;
    case "unreachable":
      return (
        <main class="signin-page">
          <div class="signin" role="alert">
            <h1>The controller does not answer</h1>
            <p class="error">{phase.error}</p>
            <button type="button" class="primary" onClick={check}>
              Try again
            </button>
          </div>
        </main>
      );
    case "ready":
      return (
        <ConsoleShell
          client={client}
          identity={phase.identity}
          onRefused={(error) => {
            writeToken(undefined);
            setPhase({ kind: "signin", error: errorText(error) });
          }}
          onSignOut={() => {
            writeToken(undefined);
            check();
          }}
        />
      );
  }
}
