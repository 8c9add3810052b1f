import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { createClient, type Client } from "../../shared/grpc/index.js";
import { CONTROLLER_ENV, DEFAULT_CONTROLLER_ADDRESS, parseHostPort, resolveControllerAddress } from "../controller-address.js";
import type { CliIo } from "../output.js";

/** A typed AdminService client. */
export type AdminClient = Client<typeof AdminService>;

/** Deadline of each admin call: long enough for a busy controller, short enough for a script. */
const ADMIN_DEADLINE_MS = 15_000;

/** Adds `--controller HOST:PORT` to an admin command. */
export function addControllerOption(command: Command): Command {
  return command.option(
    "--controller <HOST:PORT>",
    `the controller's gRPC address (default: $${CONTROLLER_ENV}, else ${DEFAULT_CONTROLLER_ADDRESS})`,
    (value: string) => parseHostPort(value, "--controller"),
  );
}

/**
 * Runs `call` with a client of the controller named by --controller, SHARDLINE_CONTROLLER or the
 * default, and closes it afterwards. "unavailable" failures are reworded to say which address was
 * tried and how to change it, since a wrong address is the usual cause.
 */
export async function withAdminClient<T>(
  flag: string | undefined,
  io: CliIo,
  call: (client: AdminClient, address: string) => Promise<T>,
): Promise<T> {
  const address = resolveControllerAddress(flag, io.env);
  const client = createClient(AdminService, address, { deadlineMs: ADMIN_DEADLINE_MS });
  try {
    return await call(client, address);
  } catch (error) {
    if (error instanceof ShardlineError && error.code === "unavailable") throw unreachable(address, error);
    throw error;
  } finally {
    client.close();
  }
}

function unreachable(address: string, error: ShardlineError): ShardlineError {
  return new ShardlineError(
    "unavailable",
    `cannot reach the controller at ${address} (${error.message.replace(/[\s.]*Resolution note:\s*$/, "")}); check --controller or ${CONTROLLER_ENV} (default ${DEFAULT_CONTROLLER_ADDRESS})`,
    { field: "--controller", value: address },
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
