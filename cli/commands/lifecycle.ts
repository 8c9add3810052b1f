import { ShardlineError } from "../../shared/errors.js";
import type { CliIo } from "../output.js";

/** Resolves with the next SIGINT or SIGTERM. */
export function nextSignal(io: CliIo): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const unsubscribe = io.onSignal((signal) => {
      unsubscribe();
      resolve(signal);
    });
  });
}

/**
 * Imports a module of another part of Shardline by URL. The long-running commands load the
 * controller, the agent and the demo only when asked, so `shardline get` starts fast and a build
 * without one of them still serves the others.
 */
export async function importPart<T>(url: URL, part: string): Promise<T> {
  try {
    return (await import(url.href)) as T;
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === "ERR_MODULE_NOT_FOUND" && String((error as Error).message).includes(url.pathname);
    if (!missing) throw error;
    throw new ShardlineError("internal", `${part} is not part of this build (${url.pathname} is missing); rebuild with "npm run build"`, {}, { cause: error });
  }
}
