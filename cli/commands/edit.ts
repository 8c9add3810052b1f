import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { stringify as toYaml } from "yaml";
import { ShardlineError } from "../../shared/errors.js";
import type { CliIo } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint, type AdminFlags } from "./admin.js";
import { applyOutcome, applyWarnings, splitManifests } from "./apply.js";
import { jobObject } from "./resources.js";

/** Where the editor is found, first set first; vi when none is. */
const EDITOR_ENV = ["SHARDLINE_EDITOR", "KUBE_EDITOR", "VISUAL", "EDITOR"] as const;

const HEADER = [
  "# Edit the job below, then save and quit to apply it. Lines starting with # are left out;",
  "# status is shown for reference and is not applied. Quitting without a change, or saving an",
  "# empty file, cancels the edit.",
];

/**
 * Registers `shardline edit JOB`: opens the job's manifest as applied (with its status, left
 * aside) in $EDITOR and applies what is saved, as kubectl edit does. A change the controller
 * refuses re-opens the editor with the error at the top; saving that unchanged gives up,
 * keeping the edit in a file named in the message.
 */
export function registerEdit(program: Command, io: CliIo): void {
  const command = program
    .command("edit")
    .summary("edit a job's manifest in $EDITOR and apply it")
    .description(
      [
        `Open the job's manifest as applied in an editor (${EDITOR_ENV.map((name) => `$${name}`).join(", then ")}, then vi), and apply what is saved.`,
        "A change the controller refuses re-opens the editor with its error at the top; saving it unchanged gives up (exit 2), keeping your edit in a file the message names. Quitting without a change, or an empty file, cancels (exit 0). The job cannot be renamed here.",
      ].join("\n\n"),
    )
    .argument("<JOB>", "the job's name");
  addControllerOption(command).action(async (name: string, options: AdminFlags) => {
    await runEdit(name, options, io);
  });
}

export async function runEdit(name: string, options: AdminFlags, io: CliIo): Promise<void> {
  await withAdminClient(options, io, async (client) => {
    const answer = await client.getJob({ name }).catch((error: unknown) => {
      throw withNotFoundHint(error, 'run "shardline get jobs" to list the jobs');
    });
    if (answer.job === undefined) throw new ShardlineError("internal", `the controller answered GetJob for "${name}" without a job`);
    const original = toYaml(jobObject(answer.job));
    const dir = await mkdtemp(join(tmpdir(), "shardline-edit-"));
    const file = join(dir, `${name}.yaml`);
    let keep = false;
    try {
      let shown = `${HEADER.join("\n")}\n${original}`;
      let refused: string | undefined;
      for (;;) {
        await writeFile(file, shown);
        await runEditor(file, io.env);
        const saved = await readFile(file, "utf8");
        const edited = withoutComments(saved);
        if (edited.trim() === "" || edited === withoutComments(original)) {
          io.stderr("Edit cancelled, no changes made.\n");
          return;
        }
        if (refused !== undefined && edited === withoutComments(shown)) {
          keep = true;
          throw new ShardlineError("invalid-argument", `${refused}; your edit is kept in ${file}`);
        }
        const manifests = splitManifests(edited);
        try {
          if (manifests.length !== 1) throw ShardlineError.invalid("manifest", `${manifests.length} documents`, "the one job being edited");
          const response = await client.applyJob({ manifest: manifests[0]! });
          if (response.job?.name !== name) throw new ShardlineError("internal", `the controller applied ${response.job?.name ?? "no job"} for an edit of ${name}`);
          io.stdout(`${applyOutcome(response).replace(/ (configured|created)$/, " edited")}\n`);
          for (const warning of applyWarnings(response)) io.stderr(`${warning}\n`);
          return;
        } catch (error) {
          // Only what the user can fix in the editor goes back to it.
          if (!(error instanceof ShardlineError) || error.code !== "invalid-argument") throw error;
          refused = error.message;
          shown = `# error: ${error.message.replace(/\n/g, " ")}\n${HEADER.join("\n")}\n${edited}`;
        }
      }
    } finally {
      if (!keep) await rm(dir, { recursive: true, force: true });
    }
  });
}

/** The text without its comment lines (a `#` first on the line), so comments alone are no change. */
function withoutComments(text: string): string {
  return text
    .split("\n")
    .filter((line) => !/^\s*#/.test(line))
    .join("\n")
    .trim();
}

/** Runs the editor on `file` and resolves when it exits 0; rejects when it cannot start or fails. */
function runEditor(file: string, env: Readonly<Record<string, string | undefined>>): Promise<void> {
  const editor = EDITOR_ENV.map((name) => env[name]).find((value) => value !== undefined && value.trim() !== "") ?? "vi";
  return new Promise((resolve, reject) => {
    // Through the shell, as git and kubectl do: EDITOR may carry arguments ("code --wait").
    const child = spawn("/bin/sh", ["-c", `${editor} "$1"`, "sh", file], { stdio: "inherit", env: { ...process.env, ...env } });
    child.once("error", (error) => reject(new ShardlineError("invalid-argument", `cannot start the editor "${editor}": ${error.message}; set EDITOR`, { field: "EDITOR", value: editor })));
    child.once("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new ShardlineError("invalid-argument", `the editor "${editor}" exited with ${signal ?? code}; nothing was applied`, { field: "EDITOR", value: editor }));
    });
  });
}
