import { isIP } from "node:net";
import { ShardlineError } from "../errors.js";
import { splitHostPort } from "../http-server.js";

/** True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (bare === "localhost" || bare === "::1") return true;
  if (isIP(bare) === 4) return bare.startsWith("127.");
  // ::ffff:127.0.0.1, an IPv4 loopback address written as IPv6.
  return bare.startsWith("::ffff:127.");
}

/**
 * Refuses to serve plaintext on an address other machines can reach: the tokens and the job
 * manifests it carries would cross the network readable by anyone on the path. `--insecure`
 * is the explicit way to do it anyway (a service mesh that encrypts, a private test network).
 */
export function checkPlaintextListen(flag: string, hostPort: string, tls: boolean, insecure: boolean): void {
  if (tls || insecure) return;
  if (isLoopbackHost(splitHostPort(hostPort, flag).host)) return;
  throw ShardlineError.invalid(
    flag,
    hostPort,
    "a loopback address (127.0.0.1, ::1) while TLS is off; to listen on other addresses give --tls-cert and --tls-key, or --insecure to serve plaintext anyway (docs/security.md)",
  );
}
