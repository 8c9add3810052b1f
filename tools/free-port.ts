import { createServer } from "node:net";

/**
 * A TCP port free on `host` (an address of this machine; loopback by default), for a server the
 * benchmark or a test starts on it: so that a restarted process can come back on the same address.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error(`no free port on ${host}`);
  return address.port;
}
