import type { Command, Option } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import type { CliIo } from "../output.js";

const SHELLS = ["bash", "zsh", "fish"] as const;

/** What a command's first argument names, when completions can list them from the controller. */
const LISTED: Readonly<Record<string, string>> = { JOB: "jobs", AGENT: "agents", ID: "agents" };

/** One command as completion sees it: its words, flags and what its first argument is. */
interface CommandShape {
  path: string[];
  summary: string;
  flags: string[];
  /** Fixed values of its first argument (get's resources), if any. */
  values: string[];
  /** The resource whose names complete its first argument, if any. */
  listed?: string;
}

/**
 * Registers `shardline completion bash|zsh|fish`: a completion script for the shell, made from
 * the commands and flags this CLI has, so it never lags behind them. Job and agent names are
 * completed from the controller (`shardline get jobs -o name`), as kubectl completes names.
 */
export function registerCompletion(program: Command, io: CliIo): void {
  program
    .command("completion")
    .summary("print a shell completion script (bash, zsh or fish)")
    .description(
      [
        "Print a completion script for the shell: commands, subcommands, flags, get's and describe's resources, and job and agent names (read from the controller given by SHARDLINE_CONTROLLER).",
        "bash: source <(shardline completion bash), or save it to /etc/bash_completion.d/shardline.",
        "zsh: source <(shardline completion zsh), or save it as _shardline in a directory of $fpath.",
        "fish: shardline completion fish > ~/.config/fish/completions/shardline.fish",
      ].join("\n\n"),
    )
    .argument("<SHELL>", SHELLS.join(", "))
    .action((shell: string) => {
      if (!(SHELLS as readonly string[]).includes(shell)) throw ShardlineError.invalid("SHELL", shell, SHELLS.join(", "));
      const commands = shapes(program);
      io.stdout(shell === "fish" ? fish(commands) : shell === "zsh" ? zsh(commands) : bash(commands));
    });
}

function shapes(program: Command): CommandShape[] {
  const all: CommandShape[] = [];
  const visit = (command: Command, path: string[]): void => {
    for (const sub of command.commands) {
      const here = [...path, sub.name()];
      const first = sub.registeredArguments[0];
      const values = sub.name() === "get" || sub.name() === "describe" ? resourceValues(first?.description ?? "") : [];
      const listed = first === undefined ? undefined : LISTED[first.name()];
      all.push({ path: here, summary: sub.summary() || sub.description().split("\n")[0] || "", flags: flagsOf(sub.options as Option[]), values, ...(listed === undefined ? {} : { listed }) });
      visit(sub, here);
    }
  };
  visit(program, []);
  return all;
}

/** The resource words a RESOURCE argument's description lists ("one of jobs, agents, ..."). */
function resourceValues(description: string): string[] {
  return description
    .replace(/^one of /, "")
    .split(/,\s*|\s+or\s+/)
    .map((word) => word.trim())
    .filter((word) => /^[a-z]+$/.test(word));
}

function flagsOf(options: readonly Option[]): string[] {
  return options.flatMap((option) => [option.long, option.short].filter((flag): flag is string => flag !== undefined));
}

function bash(commands: CommandShape[]): string {
  const top = commands.filter((c) => c.path.length === 1);
  const cases = commands.map((c) => {
    const subs = commands.filter((s) => s.path.length === c.path.length + 1 && s.path.slice(0, -1).join(" ") === c.path.join(" ")).map((s) => s.path.at(-1));
    const words = [...subs, ...c.values].join(" ");
    const listed = c.listed === undefined ? "" : `listed=${c.listed}; `;
    return `    "${c.path.join(" ")}") flags="${c.flags.join(" ")}"; words="${words}"; ${listed};;`;
  });
  return `# shardline completion for bash: source <(shardline completion bash)
_shardline_names() {
  shardline get "$1" -o name 2>/dev/null | sed 's#^[a-z]*/##'
}

_shardline() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" word i flags="" words="" listed="" args=0
  # The command's words (subcommands) up to the cursor; what follows them are its arguments.
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    [[ "$word" == -* ]] && continue
    case "$path\${path:+ }$word" in
${commands.map((c) => `      "${c.path.join(" ")}") path="${c.path.join(" ")}"; args=0; continue;;`).join("\n")}
    esac
    args=$((args + 1))
  done
  if [[ -z "$path" ]]; then
    COMPREPLY=($(compgen -W "${top.map((c) => c.path[0]).join(" ")} --help --version --log-level" -- "$cur"))
    return
  fi
  case "$path" in
${cases.join("\n")}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags --help" -- "$cur"))
  elif [[ $args -eq 0 && -n "$words" ]]; then
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  elif [[ $args -eq 0 && -n "$listed" ]]; then
    COMPREPLY=($(compgen -W "$(_shardline_names "$listed")" -- "$cur"))
  elif [[ $args -eq 1 && ( "$path" == "describe" || "$path" == "get" ) ]]; then
    case "\${COMP_WORDS[COMP_CWORD - 1]}" in
      job|jobs) COMPREPLY=($(compgen -W "$(_shardline_names jobs)" -- "$cur"));;
      agent|agents) COMPREPLY=($(compgen -W "$(_shardline_names agents)" -- "$cur"));;
    esac
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _shardline shardline
`;
}

function zsh(commands: CommandShape[]): string {
  return `#compdef shardline
# shardline completion for zsh: source <(shardline completion zsh), or save as _shardline in $fpath.
autoload -U +X bashcompinit && bashcompinit
${bash(commands).replace(/^# shardline completion for bash.*\n/, "")}`;
}

function fish(commands: CommandShape[]): string {
  const quote = (text: string): string => `'${text.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  const lines = ["# shardline completion for fish: shardline completion fish > ~/.config/fish/completions/shardline.fish", "complete -c shardline -f"];
  for (const c of commands) {
    const parent = c.path.slice(0, -1);
    const condition =
      parent.length === 0
        ? "__fish_use_subcommand"
        : `__fish_seen_subcommand_from ${parent.at(-1)}; and not __fish_seen_subcommand_from ${commands
            .filter((s) => s.path.length === c.path.length && s.path.slice(0, -1).join(" ") === parent.join(" "))
            .map((s) => s.path.at(-1))
            .join(" ")}`;
    lines.push(`complete -c shardline -n ${quote(condition)} -a ${quote(c.path.at(-1)!)} -d ${quote(c.summary)}`);
    const seen = `__fish_seen_subcommand_from ${c.path.at(-1)}`;
    for (const flag of c.flags) {
      lines.push(flag.startsWith("--") ? `complete -c shardline -n ${quote(seen)} -l ${flag.slice(2)}` : `complete -c shardline -n ${quote(seen)} -s ${flag.slice(1)}`);
    }
    if (c.values.length > 0) lines.push(`complete -c shardline -n ${quote(seen)} -a ${quote(c.values.join(" "))}`);
    if (c.listed !== undefined) {
      lines.push(`complete -c shardline -n ${quote(seen)} -a ${quote(`(shardline get ${c.listed} -o name 2>/dev/null | string replace -r '^[a-z]*/' '')`)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
