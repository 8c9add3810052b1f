import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { isScalar, parseAllDocuments, parseDocument, stringify as stringifyYaml } from "yaml";
import { ShardlineError } from "../../shared/errors.js";
import type { ApplyJobResponse } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { parseManifest } from "../../shared/manifest/index.js";
import { MANIFEST_LIMIT_TEXT, MANIFEST_SIZE_ADVICE, MAX_MANIFEST_BYTES } from "../../shared/manifest/manifest-limits.js";
import type { CliIo } from "../output.js";
import { addControllerOption, withAdminClient } from "./admin.js";

/** The flags of `shardline apply`, parsed. */
export interface ApplyOptions {
  file: string;
  controller?: string;
  /** none (apply), server (the controller validates and says what would change), client (checked here only). */
  dryRun?: DryRun;
}

/** `--dry-run` values, as kubectl has them. */
export type DryRun = "none" | "server" | "client";

function parseDryRun(value: string): DryRun {
  if (value !== "none" && value !== "server" && value !== "client") throw ShardlineError.invalid("--dry-run", value, "server, client or none");
  return value;
}

export function registerApply(program: Command, io: CliIo): void {
  const command = program
    .command("apply")
    .summary("create or update jobs from a manifest")
    .description(
      [
        "Create or update jobs from a ShardedJob manifest (YAML or JSON). Prints job/NAME created, configured or unchanged for each, and the controller's warnings on stderr.",
        "A file holding several YAML documents separated by ---, or a List (what get jobs -o yaml prints), is applied all or nothing: the controller checks every manifest first, then applies all of them in one write, or none. A manifest's status (get -o yaml prints one) is left aside, as kubectl does.",
        "A manifest may hold at most 256 KiB: a file with a larger one is refused whole, before anything is sent.",
        "--dry-run=server: the controller checks the manifests and says what would change; nothing is stored. --dry-run=client: the manifests are checked here only, without a controller.",
      ].join("\n\n"),
    )
    .requiredOption("-f, --file <FILE>", "the manifest file, or - for standard input")
    .option("--dry-run [MODE]", "server (default when given without a value) or client: check, and say what would change, without applying; none: apply", parseDryRun);
  addControllerOption(command).action(async (options: Omit<ApplyOptions, "dryRun"> & { dryRun?: DryRun | true }) => {
    await runApply({ ...options, dryRun: options.dryRun === true ? "server" : (options.dryRun ?? "none") }, io);
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
  const dryRun = options.dryRun ?? "none";
  if (dryRun === "client") {
    for (const [index, manifest] of manifests.entries()) {
      const { spec } = inDocument(options.file, index, manifests.length, () => parseManifest(manifest));
      io.stdout(`job/${spec.name} checked (client dry run)\n`);
    }
    return;
  }
  const responses = await withAdminClient(options, io, async (client) => {
    if (manifests.length === 1) return [await client.applyJob({ manifest: manifests[0]!, dryRun: dryRun === "server" })];
    try {
      return (await client.applyJobs({ manifests, dryRun: dryRun === "server" })).results;
    } catch (error) {
      throw documentError(error, options.file, manifests.length);
    }
  });
  for (const response of responses) {
    io.stdout(`${applyOutcome(response)}${dryRun === "server" ? " (server dry run)" : ""}\n`);
    for (const warning of applyWarnings(response)) io.stderr(`${warning}\n`);
  }
}

/** What `run` threw, as an error about document `index` of the file (when there are several). */
function inDocument<T>(file: string, index: number, count: number, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if (!(error instanceof ShardlineError) || count === 1) throw error;
    throw new ShardlineError(error.code, `${whereIn(file, index, count)}: ${error.message}`, error.details, { cause: error });
  }
}

/** The controller's "manifests[I]: ..." as "--file NAME, document I+1 of N: ...". */
function documentError(error: unknown, file: string, count: number): unknown {
  if (!(error instanceof ShardlineError)) return error;
  const match = /^manifests\[(\d+)\](?: \(job [^)]*\))?: (.*)$/s.exec(error.message);
  if (match === null) return error;
  return new ShardlineError(error.code, `${whereIn(file, Number(match[1]), count)}: ${match[2]}`, error.details, { cause: error });
}

function whereIn(file: string, index: number, count: number): string {
  return `--file ${file === "-" ? "standard input" : JSON.stringify(file)}, document ${index + 1} of ${count}`;
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
  const printed = filled.map(fromPrinted);
  if (printed.some((manifests) => manifests.some((manifest) => manifest !== undefined))) {
    return filled.flatMap((document, index) => printed[index]!.map((manifest) => manifest ?? document.toString()));
  }
  if (filled.length <= 1) return filled.length === 0 ? [] : [text];
  return filled.map((document) => document.toString());
}

/**
 * What `get -o yaml|json` printed, made appliable again: a List's items, each without its
 * status; a single object without its status. undefined for a document that is neither (a
 * manifest as written, kept as its text).
 */
function fromPrinted(document: ReturnType<typeof parseAllDocuments>[number]): (string | undefined)[] {
  let value: unknown;
  try {
    value = document.toJS({ maxAliasCount: 10 });
  } catch {
    // The controller says what is wrong with it.
    return [undefined];
  }
  if (!isObject(value)) return [undefined];
  if (value.kind === "List" && Array.isArray(value.items)) {
    return value.items.map((item: unknown) => (isObject(item) ? stringifyYaml(withoutStatus(item)) : stringifyYaml(item)));
  }
  return "status" in value ? [stringifyYaml(withoutStatus(value))] : [undefined];
}

function withoutStatus(object: Record<string, unknown>): Record<string, unknown> {
  const { status: _status, ...rest } = object;
  return rest;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export async function readManifest(file: string, io: CliIo): Promise<string> {
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
