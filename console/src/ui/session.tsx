import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { AdminClient } from "../api/admin-client.js";
import type { FeedMode } from "../live/live-feed.js";
import type { LiveState } from "../live/live-state.js";

/** Who the console calls as, and what it may do (WhoAmI). */
export interface Identity {
  /** The token's name; "" when the controller checks no tokens. */
  name: string;
  role: string;
  /** The AdminService methods the caller may call (proto names); undefined when the controller does not say (no WhoAmI): every action is offered and the controller decides. */
  allowedMethods: ReadonlySet<string> | undefined;
  tokensRequired: boolean;
}

/** What every page reads: the client, the caller, the live state and how it is fed. */
export interface Session {
  client: AdminClient;
  identity: Identity;
  live: LiveState;
  /** Grows with each live change drawn (at most once per animation frame). */
  version: number;
  mode: FeedMode;
  /** True when the caller's role allows `method` (a proto name, e.g. "TriggerJob"). */
  allows(method: string): boolean;
  /** A call was refused for its token: back to the sign-in prompt, showing why. */
  refused(error: unknown): void;
  signOut(): void;
}

export const SessionContext = createContext<Session | undefined>(undefined);

/** The session of the signed-in console; only under the App's provider. */
export function useSession(): Session {
  const session = useContext(SessionContext);
  if (session === undefined) throw new Error("useSession outside the signed-in console");
  return session;
}

/** Whether an identity may call `method`. */
export function identityAllows(identity: Identity, method: string): boolean {
  return identity.allowedMethods === undefined || identity.allowedMethods.has(method);
}
