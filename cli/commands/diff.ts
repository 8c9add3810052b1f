import type { Command } from "commander";
import { createTwoFilesPatch } from "diff";
import { stringify as toYaml } from "yaml";
import { ShardlineError } from "../../shared/errors.js";
import { manifestShaped, parseManifest } from "../../shared/manifest/index.js";
import { DiffersError } from "../exit-codes.js";
import type { CliIo } from "../output.js";
import { addControllerOption, withAdminClient, type AdminFlags } from "./admin.js";
import { checkManifestSizes, readManifest, splitManifests } from "./apply.js";

/**
 * Registers `shardline diff -f FILE`: what applying the file would change, as a unified diff of
 * each job's spec as the controller holds it against the file's, defaults filled in on both
 * sides (so only what means something differs). Exit 0 when nothing would change, 10 when
 * something would (kubectl's 1 is this CLI's internal error).
 */
export function registerDiff(program: Command, io: CliIo): void {
  const command = program
    .command("diff")
    .summary("show what applying a manifest file would change")
    .description(
      [
        "Show what `apply -f FILE` would change, job by job, as a unified diff of the spec the controller holds (---) against the file's (+++), both with every default filled in, so that only what would change shows. A job the controller does not hold shows whole, as added.",
        "Exits 0 when applying would change nothing, 10 when it would change something, and as any command for an error (2 for a manifest the controller would refuse).",
      ].join("\n\n"),
    )
    .requiredOption("-f, --file <FILE>", "the manifest file, or - for standard input");
  addControllerOption(command).action(async (options: AdminFlags & { file: string }) => {
    await runDiff(options, io);
  });
}

export async function runDiff(options: AdminFlags & { file: string }, io: CliIo): Promise<void> {
  const manifests = splitManifests(await readManifest(options.file, io));
  if (manifests.length === 0) throw ShardlineError.invalid("--file", options.file, "a file holding a ShardedJob manifest; this one is empty");
  checkManifestSizes(options.file, manifests);
  const specs = manifests.map((manifest) => parseManifest(manifest).spec);
  const changed = await withAdminClient(options, io, async (client) => {
    // The controller's own check: a manifest it would refuse is an error here too, not a diff.
    await client.applyJobs({ manifests, dryRun: true });
    let differs = 0;
    for (const spec of specs) {
      const live = await client.getJob({ name: spec.name }).then(
        (answer) => answer.job,
        (error: unknown) => {
          if (error instanceof ShardlineError && error.code === "not-found") return undefined;
          throw error;
        },
      );
      const before = live === undefined ? "" : toYaml(JSON.parse(live.specJson) as unknown);
      const after = toYaml(manifestShaped(spec));
      if (before === after) continue;
      differs++;
      const label = `job/${spec.name}`;
      io.stdout(createTwoFilesPatch(`${label} (controller${live === undefined ? ": none" : `, revision ${live.revision}`})`, `${label} (${options.file === "-" ? "stdin" : options.file})`, before, after, undefined, undefined, { context: 3 }).replace(/^=+\n/, ""));
    }
    return differs;
  });
  if (changed > 0) throw new DiffersError(`${changed} job${changed === 1 ? "" : "s"} would change`);
}
