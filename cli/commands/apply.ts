import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { isScalar, parseAllDocuments } from "yaml";
import { ShardlineError } from "../../shared/errors.js";
import type { ApplyJobResponse } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import type { CliIo } from "../output.js";
import { addControllerOption, withAdminClient } from "./admin.js";

/** The flags of `shardline apply`, parsed. */
export interface ApplyOptions {
  file: string;
  controller?: string;
}

export function registerApply(program: Command, io: CliIo): void {
  const command = program
    .command("apply")
    .summary("create or update jobs from a manifest")
    .description(
      "Create or update jobs from a ShardedJob manifest (YAML or JSON). A file holding several YAML documents separated by --- applies each in turn. Prints job/NAME created, configured or unchanged for each.",
    )
    .requiredOption("-f, --file <FILE>", "the manifest file, or - for standard input");
  addControllerOption(command).action(async (options: ApplyOptions) => {
    await runApply(options, io);
  });
}

/** `shardline apply -f FILE`: sends each manifest in the file to ApplyJob and says what happened. */
export async function runApply(options: ApplyOptions, io: CliIo): Promise<void> {
  const text = await readManifest(options.file, io);
  const manifests = splitManifests(text);
  if (manifests.length === 0) {
    throw ShardlineError.invalid("--file", options.file, "a file holding a ShardedJob manifest; this one is empty");
  }
  await withAdminClient(options, io, async (client) => {
    for (const manifest of manifests) {
      const response = await client.applyJob({ manifest });
      io.stdout(`${applyOutcome(response)}\n`);
    }
  });
}

/** `job/NAME created|configured|unchanged`, as kubectl says it. */
export function applyOutcome(response: Pick<ApplyJobResponse, "job" | "changed">): string {
  const name = response.job?.name ?? "";
  if (!response.changed) return `job/${name} unchanged`;
  return response.job?.revision === 1n ? `job/${name} created` : `job/${name} configured`;
}

/**
 * The manifests in a file: the text itself when it holds one document, so the controller keeps
 * it as written (comments included), or each document of a multi-document YAML stream. Text that
 * does not parse is sent whole, for the controller to explain what is wrong with it.
 */
export function splitManifests(text: string): string[] {
  if (text.trim() === "") return [];
  const documents = parseAllDocuments(text);
  if (!Array.isArray(documents) || documents.some((document) => document.errors.length > 0)) return [text];
  // A stray "---" at the end of a file makes an empty document, not a manifest.
  const filled = documents.filter(
    (document) => document.contents !== null && !(isScalar(document.contents) && document.contents.value === null),
  );
  if (filled.length <= 1) return filled.length === 0 ? [] : [text];
  return filled.map((document) => document.toString());
}

async function readManifest(file: string, io: CliIo): Promise<string> {
  if (file === "-") return io.readStdin();
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message;
    throw new ShardlineError(
      "invalid-argument",
      `--file: cannot read "${file}" (${reason}); expected a readable manifest file, or - for standard input`,
      { field: "--file", value: file },
      { cause: error },
    );
  }
}
