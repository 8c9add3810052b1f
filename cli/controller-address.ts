import { ShardlineError } from "../shared/errors.js";

/** The controller's gRPC address when neither --controller nor SHARDLINE_CONTROLLER is set. */
export const DEFAULT_CONTROLLER_ADDRESS = "127.0.0.1:7070";

/** The controller's HTTP address (health, readiness, metrics, web page) by default. */
export const DEFAULT_HTTP_ADDRESS = "127.0.0.1:7071";

/** The environment variable that names the controller when --controller is not given. */
export const CONTROLLER_ENV = "SHARDLINE_CONTROLLER";

const HOST_PORT_ALLOWED = "HOST:PORT, e.g. 127.0.0.1:7070 or [::1]:7070, with a port from 1 to 65535";
const LISTEN_ALLOWED = "HOST:PORT, e.g. 0.0.0.0:7070 or [::]:7070, with a port from 0 (any free port) to 65535";

/** A hostname, an IPv4 address, or a bracketed IPv6 address. */
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.%A-Za-z]+\])$/;

/**
 * Checks a `HOST:PORT` address given as `field` (a flag or an environment variable) and returns
 * it unchanged. `listen` addresses may use port 0, which asks the system for a free port.
 */
export function parseHostPort(value: string, field: string, options: { listen?: boolean } = {}): string {
  const allowed = options.listen ? LISTEN_ALLOWED : HOST_PORT_ALLOWED;
  const colon = value.lastIndexOf(":");
  if (colon <= 0) throw ShardlineError.invalid(field, value, allowed);
  const host = value.slice(0, colon);
  const portText = value.slice(colon + 1);
  // An unbracketed IPv6 address ("::1:7070") is ambiguous: which colon starts the port?
  if (!HOST.test(host)) throw ShardlineError.invalid(field, value, allowed);
  if (!/^\d{1,5}$/.test(portText)) throw ShardlineError.invalid(field, value, allowed);
  const port = Number(portText);
  if (port > 65535 || (port === 0 && !options.listen)) throw ShardlineError.invalid(field, value, allowed);
  return value;
}

/**
 * Checks `HOST:PORT[,HOST:PORT...]`, the controller replicas to try in order (a follower names
 * the leader, so any one of them is enough), and returns it unchanged.
 */
export function parseControllerAddresses(value: string, field: string): string {
  for (const address of value.split(",")) {
    try {
      parseHostPort(address, field);
    } catch {
      throw ShardlineError.invalid(field, value, `${HOST_PORT_ALLOWED}, or several separated by commas`);
    }
  }
  return value;
}

/**
 * The controller addresses a command talks to (`HOST:PORT[,HOST:PORT...]`): --controller, else
 * SHARDLINE_CONTROLLER, else 127.0.0.1:7070. A bad value is reported under the name it came from.
 */
export function resolveControllerAddress(flag: string | undefined, env: Readonly<Record<string, string | undefined>>): string {
  if (flag !== undefined) return parseControllerAddresses(flag, "--controller");
  const fromEnv = env[CONTROLLER_ENV];
  if (fromEnv !== undefined && fromEnv !== "") return parseControllerAddresses(fromEnv, CONTROLLER_ENV);
  return DEFAULT_CONTROLLER_ADDRESS;
}
