import { freePort } from "../../tools/free-port.js";
import { isLoopbackHost } from "../../shared/security/listen-policy.js";

/** A free TCP port on `host` (an address of this machine). */
export const freePortOn = (host: string): Promise<number> => freePort(host);

/** `--insecure` for a controller on a test network namespace's address: plaintext off loopback needs it. */
export function plaintextOn(host: string): string[] {
  return isLoopbackHost(host) ? [] : ["--insecure"];
}
