import { useEffect, useRef, useState } from "preact/hooks";

/**
 * The token prompt: shown when the controller refuses a call for its token, or says it needs one
 * (WhoAmI.tokens_required) and none is held. `error` is the controller's refusal, word for word.
 */
export function SignIn({ error, onSubmit }: { error: string | undefined; onSubmit(token: string): Promise<void> }) {
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), [error]);

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    if (token.trim() === "") return;
    setBusy(true);
    try {
      await onSubmit(token.trim());
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="signin-page">
      <form class="signin" data-testid="signin" onSubmit={(event) => void submit(event)}>
        <h1>Sign in to Shardline</h1>
        <p class="muted">This controller needs a token (one of its --token-file). It is kept in this tab only, until you sign out or close it.</p>
        <label for="token">Token</label>
        <input
          id="token"
          ref={input}
          type="password"
          autocomplete="off"
          spellcheck={false}
          data-testid="token"
          value={token}
          aria-invalid={error !== undefined}
          aria-describedby={error === undefined ? undefined : "signin-error"}
          onInput={(event) => setToken(event.currentTarget.value)}
        />
        {error !== undefined && (
          <p id="signin-error" class="error" role="alert" data-testid="signin-error">
            {error}
          </p>
        )}
        <button type="submit" class="primary" data-testid="signin-submit" disabled={busy || token.trim() === ""}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
