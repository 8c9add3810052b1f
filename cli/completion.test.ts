import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCli } from "./commands/program.js";
import type { CliIo } from "./output.js";

/** The script `shardline completion SHELL` prints. */
async function script(shell: string): Promise<string> {
  let out = "";
  const io: CliIo = { stdout: (text) => (out += text), stderr: () => {}, readStdin: async () => "", env: {}, onSignal: () => () => {} };
  expect(await runCli(["completion", shell], io)).toBe(0);
  return out;
}

describe("shardline completion", () => {
  it("completes commands, subcommands, resources and flags in bash, and job names from the controller", async () => {
    const dir = mkdtempSync(join(tmpdir(), "shardline-completion-"));
    try {
      writeFileSync(join(dir, "completion.bash"), await script("bash"));
      // The names come from `shardline get jobs -o name`: a stand-in answers as the controller would.
      const run = (...words: string[]): string =>
        execFileSync(
          "bash",
          [
            "-c",
            `source ${join(dir, "completion.bash")}
shardline() { [[ "$*" == "get jobs -o name" ]] && printf 'job/billing-rollup\\njob/reindex\\n'; }
COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); _shardline; echo "\${COMPREPLY[*]}"`,
          ],
          { encoding: "utf8" },
        ).trim();
      expect(run("shardline", "ge")).toBe("get");
      expect(run("shardline", "get", "")).toBe("jobs agents assignments executions");
      expect(run("shardline", "get", "jobs", "--ou")).toBe("--output");
      expect(run("shardline", "rollout", "st")).toBe("status");
      expect(run("shardline", "rollout", "status", "")).toBe("billing-rollup reindex");
      expect(run("shardline", "pause", "re")).toBe("reindex");
      expect(run("shardline", "describe", "job", "bi")).toBe("billing-rollup");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("prints zsh and fish scripts, and refuses another shell", async () => {
    expect(await script("zsh")).toMatch(/^#compdef shardline\n[^]*autoload -U \+X bashcompinit && bashcompinit\n[^]*complete -F _shardline shardline\n$/);
    const fish = await script("fish");
    expect(fish).toContain("complete -c shardline -n '__fish_use_subcommand' -a 'get' -d 'list jobs, agents, assignments or executions'\n");
    // Quotes inside a fish single-quoted string are escaped.
    expect(fish).toContain("complete -c shardline -n '__fish_seen_subcommand_from pause' -a '(shardline get jobs -o name 2>/dev/null | string replace -r \\'^[a-z]*/\\' \\'\\')'\n");
    let err = "";
    const io: CliIo = { stdout: () => {}, stderr: (text) => (err += text), readStdin: async () => "", env: {}, onSignal: () => () => {} };
    expect(await runCli(["completion", "powershell"], io)).toBe(2);
    expect(err).toBe('shardline: SHELL: "powershell" is not allowed; expected bash, zsh, fish\n');
  });
});
