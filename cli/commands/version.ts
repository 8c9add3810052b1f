import type { Command } from "commander";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { VERSION } from "../../shared/version.js";
import { parseOutputFormat, renderDocument, type CliIo, type OutputFormat } from "../output.js";
import { addControllerOption, withAdminClient, type AdminFlags } from "./admin.js";

/** The API this CLI speaks: the proto package of its AdminService. */
export const CLIENT_API = AdminService.typeName.replace(/\.AdminService$/, "");

/**
 * Registers `shardline version`: this CLI's version and API, and the controller's (GetVersion),
 * as kubectl version shows client and server. A controller out of reach fails the command after
 * the client's lines (exit 5), unless --client.
 */
export function registerVersion(program: Command, io: CliIo): void {
  const command = program
    .command("version")
    .summary("print the CLI's and the controller's versions")
    .description("Print this CLI's version and the API it speaks (shardline.v1), then the controller's. With --client, the CLI's only, without a connection.");
  addControllerOption(command)
    .option("--client", "the CLI's version only")
    .option("-o, --output <FORMAT>", "json or yaml (default: text)", (value: string) => parseOutputFormat(value, ["json", "yaml"]))
    .action(async (options: AdminFlags & { client?: boolean; output?: OutputFormat }) => {
      const client = { version: VERSION, api: CLIENT_API };
      const structured = options.output === "json" || options.output === "yaml";
      if (!structured) io.stdout(`Client Version: ${client.version} (API ${client.api})\n`);
      if (options.client === true) {
        if (structured) io.stdout(renderDocument({ client }, options.output as "json" | "yaml"));
        return;
      }
      const controller = await withAdminClient(options, io, (admin) => admin.getVersion({}));
      if (structured) io.stdout(renderDocument({ client, controller: { version: controller.version, api: controller.api } }, options.output as "json" | "yaml"));
      else io.stdout(`Controller Version: ${controller.version} (API ${controller.api})\n`);
      if (controller.api !== client.api) io.stderr(`warning: the controller speaks ${controller.api} and this CLI ${client.api}; use a CLI of the controller's API version\n`);
    });
}
