import { status } from "@grpc/grpc-js";
import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { createClient, type Client } from "../../shared/grpc/index.js";
import { messageTooLarge, sizeText } from "../../shared/grpc/status.js";
import { TlsCertificates } from "../../shared/security/tls.js";
import { CONTROLLER_ENV, DEFAULT_CONTROLLER_ADDRESS, parseControllerAddresses, resolveControllerAddress } from "../controller-address.js";
import type { CliIo } from "../output.js";

/** A typed AdminService client. */
export type AdminClient = Client<typeof AdminService>;

/**
 * The largest answer the CLI accepts: a listing of 10,000 executions, each with a 4 KiB result
 * and a 4 KiB error, is about 85 MB, far over gRPC's default 4 MiB. No flag changes it; a larger
 * answer is refused with exit 2, saying how to ask for less.
 */
export const ADMIN_MAX_RECEIVE_BYTES = 128 * 1024 * 1024;

/** Deadline of each admin call: long enough for a busy controller, short enough for a script. */
const ADMIN_DEADLINE_MS = 15_000;

/** The environment variable with the caller's token, when --token is not given. */
export const TOKEN_ENV = "SHARDLINE_TOKEN";

/** The TLS flags of a client of the controller (the agent, every admin command). */
export interface ClientTlsFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
}

/** The flags every admin command takes: where the controller is, who is asking, and over what. */
export interface AdminFlags extends ClientTlsFlags {
  controller?: string;
  token?: string;
}

/** Adds `--controller HOST:PORT[,HOST:PORT...]`, `--token TOKEN` and the TLS flags to an admin command. */
export function addControllerOption(command: Command): Command {
  return addClientTlsOptions(
    command
      .option(
        "--controller <HOST:PORT>",
        `the controller's gRPC address, or several replicas' separated by commas (default: $${CONTROLLER_ENV}, else ${DEFAULT_CONTROLLER_ADDRESS})`,
        (value: string) => parseControllerAddresses(value, "--controller"),
      )
      .option("--token <TOKEN>", `the token to present when the controller checks them (default: $${TOKEN_ENV}; prefer it, a flag shows in the process list)`, parseToken),
  );
}

/** Adds `--tls-ca FILE`, `--tls-cert FILE` and `--tls-key FILE`, a client's view of TLS. */
export function addClientTlsOptions(command: Command): Command {
  return command
    .option("--tls-ca <FILE>", "connect over TLS, verifying the controller's certificate against this CA (PEM); without it, plaintext")
    .option("--tls-cert <FILE>", "present this client certificate (PEM), for a controller that requires them (mutual TLS); needs --tls-key and --tls-ca")
    .option("--tls-key <FILE>", "the private key of --tls-cert (PEM)");
}

/**
 * The client certificates of the TLS flags, checked (a missing, unreadable or mismatched file
 * fails naming its flag); undefined for plaintext.
 */
export function clientTls(flags: ClientTlsFlags): TlsCertificates | undefined {
  return TlsCertificates.forClient({ cert: flags.tlsCert, key: flags.tlsKey, ca: flags.tlsCa });
}

/** --tls-cert, --tls-key, --tls-ca and --tls-refresh-interval as the files and interval a controller or agent reads; undefined when none is given. */
export function tlsFiles(flags: ClientTlsFlags & { tlsRefreshInterval?: number }): { cert?: string; key?: string; ca?: string; refreshIntervalMs?: number } | undefined {
  if (flags.tlsCert === undefined && flags.tlsKey === undefined && flags.tlsCa === undefined) return undefined;
  return {
    ...(flags.tlsCert === undefined ? {} : { cert: flags.tlsCert }),
    ...(flags.tlsKey === undefined ? {} : { key: flags.tlsKey }),
    ...(flags.tlsCa === undefined ? {} : { ca: flags.tlsCa }),
    ...(flags.tlsRefreshInterval === undefined ? {} : { refreshIntervalMs: Math.round(flags.tlsRefreshInterval * 1000) }),
  };
}

/** `--token` (or SHARDLINE_TOKEN): printable characters without spaces, as a header carries them. */
export function parseToken(value: string): string {
  if (!/^[\x21-\x7e]{1,4096}$/.test(value)) throw ShardlineError.invalid("--token", "(hidden)", "1 to 4096 printable ASCII characters without spaces");
  return value;
}

/** --token, else SHARDLINE_TOKEN, else none. */
export function resolveToken(token: string | undefined, env: Readonly<Record<string, string | undefined>>): string | undefined {
  return token ?? (env[TOKEN_ENV] ? parseTokenFromEnv(env[TOKEN_ENV]) : undefined);
}

/** The `authorization` header for --token or SHARDLINE_TOKEN; none when neither is set. */
export function authorizationMetadata(token: string | undefined, env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const value = resolveToken(token, env);
  return value === undefined ? {} : { authorization: `Bearer ${value}` };
}

function parseTokenFromEnv(value: string): string {
  try {
    return parseToken(value.trim());
  } catch {
    throw ShardlineError.invalid(TOKEN_ENV, "(hidden)", "1 to 4096 printable ASCII characters without spaces");
  }
}

/** How many times a call follows a follower's answer naming the leader before giving up. */
const MAX_LEADER_HOPS = 3;

/**
 * Runs `call` with a client of the controller named by --controller, SHARDLINE_CONTROLLER or the
 * default, and closes it afterwards. With several addresses, one that cannot be reached is
 * skipped for the next; a follower's refusal naming the leader sends the call there. When none
 * answers, the error says which addresses were tried and how to change them.
 */
export async function withAdminClient<T>(
  flags: AdminFlags,
  io: CliIo,
  call: (client: AdminClient, address: string) => Promise<T>,
): Promise<T> {
  const addresses = resolveControllerAddress(flags.controller, io.env).split(",");
  const metadata = authorizationMetadata(flags.token, io.env);
  // Checked before any connection, and shared by the clients of every address tried.
  const credentials = clientTls(flags)?.channelCredentials();
  const tried: string[] = [];
  let next = 0;
  let address = addresses[next++]!;
  for (let hops = 0; ; ) {
    tried.push(address);
    const client = createClient(AdminService, address, { deadlineMs: ADMIN_DEADLINE_MS, maxReceiveMessageBytes: ADMIN_MAX_RECEIVE_BYTES, metadata, ...(credentials === undefined ? {} : { credentials }) });
    try {
      return await call(client, address);
    } catch (error) {
      if (!(error instanceof ShardlineError)) throw error;
      const tooLarge = sizeRefusal(error, address);
      if (tooLarge !== undefined) throw tooLarge;
      // A refusal at a limit (--admin-rate-limit, the calls served at once, --max-jobs) came from
      // a controller that was reached: its own message names the limit and what to do.
      if (error.code !== "unavailable" || grpcCodeOf(error) === status.RESOURCE_EXHAUSTED) throw error;
      if (error.details.leader !== undefined && hops < MAX_LEADER_HOPS) {
        hops++;
        address = error.details.leader;
        continue;
      }
      // Only a call that never reached a controller goes to the next one: after a deadline it may
      // have been done, and must not be done twice.
      if (refusedOrUnreachable(error) && next < addresses.length) {
        address = addresses[next++]!;
        continue;
      }
      throw unreachable(tried, error, credentials !== undefined);
    } finally {
      client.close();
    }
  }
}

function refusedOrUnreachable(error: ShardlineError): boolean {
  return grpcCodeOf(error) === status.UNAVAILABLE;
}

/** The gRPC status code a failed call ended with, as fromGrpcError keeps it in the cause. */
function grpcCodeOf(error: ShardlineError): unknown {
  return (error.cause as { code?: unknown } | undefined)?.code;
}

/**
 * A message refused for its size, said the way round it happened. grpc-js words the controller's
 * refusal of a request and this client's refusal of an answer alike; only the limit in the text
 * tells them apart: this client's is ADMIN_MAX_RECEIVE_BYTES, far above the controller's 4 MiB
 * (DEFAULT_MAX_RECEIVE_MESSAGE_BYTES in shared/grpc/server.ts). Undefined for every other error.
 */
function sizeRefusal(error: ShardlineError, address: string): ShardlineError | undefined {
  const details = (error.cause as { details?: unknown } | undefined)?.details;
  const tooLarge = grpcCodeOf(error) === status.RESOURCE_EXHAUSTED && typeof details === "string" ? messageTooLarge(details) : undefined;
  if (tooLarge === undefined) return undefined;
  const { bytes, limit } = tooLarge;
  const sizes = { value: `${bytes} bytes`, allowed: `at most ${limit} bytes` };
  if (limit === ADMIN_MAX_RECEIVE_BYTES) {
    return new ShardlineError(
      "invalid-argument",
      `the answer of the controller at ${address} is ${bytes} bytes, over the ${sizeText(limit)} shardline accepts in one answer; ` +
        "the limit is fixed (no flag raises it): ask for less, e.g. get executions with a smaller --limit or --job, --agent or --state, or get jobs NAME for one job",
      sizes,
      { cause: error },
    );
  }
  return new ShardlineError(
    "invalid-argument",
    `the request is ${bytes} bytes, over the ${sizeText(limit)} the controller at ${address} accepts in one message; the limit is fixed (no flag raises it): send less in one call`,
    sizes,
    { cause: error },
  );
}

function unreachable(tried: string[], error: ShardlineError, tls: boolean): ShardlineError {
  const where = tried.length === 1 ? `the controller at ${tried[0]}` : `any controller (tried ${tried.join(", ")})`;
  // Over TLS a refused handshake (an unknown CA, a missing client certificate) looks the same.
  const alsoCheck = tls ? ", and --tls-ca, --tls-cert and --tls-key" : "";
  return new ShardlineError(
    "unavailable",
    `cannot reach ${where} (${error.message.replace(/[\s.]*Resolution note:\s*$/, "")}); check --controller or ${CONTROLLER_ENV} (default ${DEFAULT_CONTROLLER_ADDRESS})${alsoCheck}`,
    { field: "--controller", value: tried.join(",") },
    { cause: error },
  );
}

/**
 * Adds a hint to a "not-found" error from the controller ("job "x" not found") saying how to list
 * what exists; other errors pass unchanged.
 */
export function withNotFoundHint(error: unknown, hint: string): unknown {
  if (!(error instanceof ShardlineError) || error.code !== "not-found") return error;
  return new ShardlineError("not-found", `${error.message}; ${hint}`, error.details, { cause: error });
}
