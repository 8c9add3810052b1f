import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { isScalar, parseAllDocuments, parseDocument } from "yaml";
import { ShardlineError } from "../../shared/errors.js";
import type { ApplyJobResponse } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { MANIFEST_LIMIT_TEXT, MANIFEST_SIZE_ADVICE, MAX_MANIFEST_BYTES } from "../../shared/manifest/manifest-limits.js";
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
      "Create or update jobs from a ShardedJob manifest (YAML or JSON). A file holding several YAML documents separated by --- applies each in turn. Prints job/NAME created, configured or unchanged for each, and the controller's warnings on stderr. A manifest may hold at most 256 KiB: a file with a larger one is refused whole, before anything is sent.",
    )
    .requiredOption("-f, --file <FILE>", "the manifest file, or - for standard input");
  addControllerOption(command).action(async (options: ApplyOptions) => {
    await runApply(options, io);
  });
}

/**
 * `shardline apply -f FILE`: sends each manifest in the file to ApplyJob and says what happened,
 * with the controller's warnings on stderr. Every manifest's size is checked first, so a file
 * with one too large is refused whole, without a connection.
 */
export async function runApply(options: ApplyOptions, io: CliIo): Promise<void> {
  const text = await readManifest(options.file, io);
  const manifests = splitManifests(text);
  if (manifests.length === 0) {
    throw ShardlineError.invalid("--file", options.file, "a file holding a ShardedJob manifest; this one is empty");
  }
  checkManifestSizes(options.file, manifests);
  await withAdminClient(options, io, async (client) => {
    for (const manifest of manifests) {
      const response = await client.applyJob({ manifest });
      io.stdout(`${applyOutcome(response)}\n`);
      for (const warning of applyWarnings(response)) io.stderr(`${warning}\n`);
    }
  });
}

/** The controller's warnings about an applied job, one line each: `warning: job/NAME: TEXT`. */
export function applyWarnings(response: Pick<ApplyJobResponse, "job" | "warnings">): string[] {
  const name = response.job?.name ?? "";
  return response.warnings.map((warning) => `warning: job/${name}: ${warning.replace(/\s*\n\s*/g, " ")}`);
}

/**
 * Refuses a file holding a manifest over MAX_MANIFEST_BYTES, as the controller would, before any
 * is sent: applying the documents before it and then failing would leave half a file applied.
 * The message names the file, the document (when there are several), its size and the limit.
 */
export function checkManifestSizes(file: string, manifests: readonly string[]): void {
  const sizes = manifests.map((manifest) => Buffer.byteLength(manifest));
  const over = sizes.flatMap((bytes, index) => (bytes > MAX_MANIFEST_BYTES ? [index] : []));
  const first = over[0];
  if (first === undefined) return;
  const where = file === "-" ? "standard input" : JSON.stringify(file);
  const name = manifestName(manifests[first]!);
  const which = manifests.length === 1 ? "" : `, document ${first + 1} of ${manifests.length}${name === undefined ? "" : ` (job/${name})`},`;
  const others = over.length - 1;
  const more = others === 0 ? "" : others === 1 ? " (1 more of its documents is too)" : ` (${others} more of its documents are too)`;
  throw new ShardlineError(
    "invalid-argument",
    `--file: ${where}${which} is ${sizes[first]} bytes${more}; expected at most ${MANIFEST_LIMIT_TEXT} per manifest; ${MANIFEST_SIZE_ADVICE}; nothing was applied`,
    { field: "--file", value: `${sizes[first]} bytes`, allowed: `at most ${MAX_MANIFEST_BYTES} bytes` },
  );
}

/** metadata.name of a manifest, when it has one that is a string. */
function manifestName(manifest: string): string | undefined {
  try {
    const name: unknown = parseDocument(manifest).getIn(["metadata", "name"]);
    return typeof name === "string" ? name : undefined;
  } catch {
    return undefined;
  }
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
