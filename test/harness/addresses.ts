import { createServer } from "node:net";
import { isLoopbackHost } from "../../shared/security/listen-policy.js";

/** A free TCP port on `host` (an address of this machine). */
export async function freePortOn(host: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error(`no port on ${host}`);
  return address.port;
}

/** `--insecure` for a controller on a test network namespace's address: plaintext off loopback needs it. */
export function plaintextOn(host: string): string[] {
  return isLoopbackHost(host) ? [] : ["--insecure"];
}
