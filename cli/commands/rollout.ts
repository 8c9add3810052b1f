import type { Command } from "commander";
import { ShardlineError } from "../../shared/errors.js";
import type { RolloutStatus } from "../../shared/gen/shardline/v1/types_pb.js";
import { RolloutAbortedError, WatchTimedOutError } from "../exit-codes.js";
import { formatDuration, parseOutputFormat, renderDocument, renderTable, type CliIo, type OutputFormat } from "../output.js";
import { addControllerOption, withAdminClient, type AdminClient } from "./admin.js";
import { applyWarnings } from "./apply.js";
import { parseInteger, parseSeconds } from "./options.js";
import { REVISION_COLUMNS, revisionNote, revisionView, rolloutView, type RolloutView, type TallyView } from "./resources.js";

/** How often `rollout status --watch` asks the controller. */
const POLL_MS = 1000;
/** How long `rollout status --watch` waits unless --timeout says otherwise. */
export const DEFAULT_WATCH_TIMEOUT_SECONDS = 600;

const JOB_HINT = 'run "shardline get jobs" to list the jobs';

/** The flags of `shardline rollout status`, parsed. */
export interface RolloutStatusOptions {
  controller?: string;
  output?: OutputFormat;
  watch?: boolean;
  timeout?: number;
}

/**
 * Registers `shardline rollout`: status, promote, abort, retry, undo and history of a job's
 * revisions and rollout (docs/rollouts.md).
 */
export function registerRollout(program: Command, io: CliIo): void {
  const rollout = program
    .command("rollout")
    .summary("follow and steer a job's rollout, list its revisions, go back to one")
    .description(
      [
        "Follow and steer how a change of a job reaches its shards. Every apply that changes a job is its next revision; with spec.rollout, a change of what it runs goes out in steps (waves, pauses, analysis gates), shard by shard, from the stable revision to the new one (docs/rollouts.md).",
        "A command on a job with no rollout in progress is refused with the controller's reason (exit 4).",
      ].join("\n\n"),
    );

  const status = rollout
    .command("status")
    .summary("show how a job's rollout stands; --watch until it completes or is aborted")
    .description(
      [
        "Show how a job's rollout stands: its phase (none, progressing, paused, completed, aborted), the step under way and what it is, the current, stable and target revisions, which shards run which revision, the analysis window's figures per revision (runs, failed, p95 duration), and what it waits for or why it was aborted.",
        `With --watch, print it again each time it changes, until the rollout completes (exit 0) or is aborted (exit 8), or --timeout passes while it is still in progress (exit 9; default ${DEFAULT_WATCH_TIMEOUT_SECONDS} s). A rollout already completed, or a job that never rolled one out, exits 0 at once. With -o json, --watch prints one JSON object per line.`,
      ].join("\n\n"),
    )
    .argument("<JOB>", "the job's name");
  addControllerOption(status)
    .option("-o, --output <FORMAT>", "json or yaml (default: readable text)", (value: string) => parseOutputFormat(value, ["json", "yaml"]))
    .option("-w, --watch", "print again on each change until completed (exit 0) or aborted (exit 8)")
    .option("--timeout <SECONDS>", `with --watch: give up after this long, exit 9 (default: ${DEFAULT_WATCH_TIMEOUT_SECONDS})`, (value: string) =>
      parseSeconds(value, "--timeout", 1, 31_536_000),
    )
    .action(async (job: string, options: RolloutStatusOptions) => {
      await runRolloutStatus(job, options, io);
    });

  const promote = rollout
    .command("promote")
    .summary("end the current pause or analysis of a job's rollout; --full skips every remaining step")
    .description(
      "End the current step of a job's rollout in progress (a pause, or an analysis still waiting for runs) and go on to the next; with --full, skip every remaining step, so every shard runs the new revision from its next fire. Recorded as done by your token's name.",
    )
    .argument("<JOB>", "the job's name");
  addControllerOption(promote)
    .option("--full", "skip every remaining step")
    .action(async (job: string, options: { controller?: string; full?: boolean }) => {
      await withAdminClient(options, io, async (client) => {
        const { rollout: after } = await client.promoteRollout({ job, full: options.full === true }).catch(hinted);
        io.stdout(`job/${job} rollout promoted${options.full ? " (every step)" : ""}; now ${summaryOf(job, after)}\n`);
      });
    });

  const abort = rollout
    .command("abort")
    .summary("abort a job's rollout: every shard runs the stable revision again")
    .description(
      "Abort a job's rollout in progress: every shard runs the stable revision from its next fire (runs under way finish on theirs). The job stays aborted until a new revision is applied, the rollout is retried, or undone.",
    )
    .argument("<JOB>", "the job's name");
  addControllerOption(abort).action(async (job: string, options: { controller?: string }) => {
    await withAdminClient(options, io, async (client) => {
      const { rollout: after } = await client.abortRollout({ job }).catch(hinted);
      io.stdout(`job/${job} rollout aborted; now ${summaryOf(job, after)}\n`);
    });
  });

  const retry = rollout
    .command("retry")
    .summary("start an aborted rollout again from its first step")
    .description("Start a job's aborted rollout again from its first step, with a new analysis window.")
    .argument("<JOB>", "the job's name");
  addControllerOption(retry).action(async (job: string, options: { controller?: string }) => {
    await withAdminClient(options, io, async (client) => {
      const { rollout: after } = await client.retryRollout({ job }).catch(hinted);
      io.stdout(`job/${job} rollout retried; now ${summaryOf(job, after)}\n`);
    });
  });

  const undo = rollout
    .command("undo")
    .summary("apply an earlier revision of a job again, at once on every shard")
    .description(
      "Apply an earlier revision's manifest again as the job's next revision, at once on every shard (without the steps of spec.rollout; a rollout in progress or aborted ends). Without --to-revision: the rollout's stable revision while one is in progress or aborted, else the revision before the current one. \"shardline rollout history JOB\" lists the revisions kept.",
    )
    .argument("<JOB>", "the job's name");
  addControllerOption(undo)
    .option("--to-revision <N>", "the revision to go back to (default: the previous one, see above)", (value: string) =>
      parseInteger(value, "--to-revision", 1, Number.MAX_SAFE_INTEGER),
    )
    .action(async (job: string, options: { controller?: string; toRevision?: number }) => {
      await withAdminClient(options, io, async (client) => {
        const response = await client.undoRollout({ job, toRevision: BigInt(options.toRevision ?? 0) }).catch(hinted);
        const revision = response.job?.revision ?? 0n;
        io.stdout(
          response.changed
            ? `job/${job} rolled back to revision ${response.undoOf}: now revision ${revision}, on every shard from its next fire\n`
            : `job/${job} unchanged: revision ${revision} already runs revision ${response.undoOf}'s spec\n`,
        );
        for (const warning of applyWarnings(response)) io.stderr(`${warning}\n`);
      });
    });

  const history = rollout
    .command("history")
    .summary("list a job's revisions: when, by whom, which is current and stable")
    .description(
      "List the revisions of a job the controller keeps, newest first: when each was applied and by whom (the token's name), its spec hash, and which is current (the latest), stable (what shards outside a rollout's waves run) or rolling out, and which an undo made. With -o json or yaml, each with its manifest.",
    )
    .argument("<JOB>", "the job's name");
  addControllerOption(history)
    .option("-o, --output <FORMAT>", "json, yaml or wide (default: a table)", (value: string) => parseOutputFormat(value, ["json", "yaml", "wide"]))
    .action(async (job: string, options: { controller?: string; output?: OutputFormat }) => {
      await withAdminClient(options, io, async (client) => {
        const { revisions } = await client.listRevisions({ job }).catch(hinted);
        const { rollout: status } = await client.getRollout({ job }).catch(hinted);
        const rollout = status === undefined ? null : rolloutView(job, status);
        const views = revisions.map((revision) => revisionView(revision, rollout));
        if (options.output === "json" || options.output === "yaml") {
          io.stdout(renderDocument(views, options.output));
          return;
        }
        if (views.length === 0) {
          io.stderr(`No revisions of job/${job} kept.\n`);
          return;
        }
        io.stdout(renderTable(views.map((view) => ({ view, note: revisionNote(view, rollout) })), REVISION_COLUMNS, options.output === "wide"));
      });
    });
}

/** Adds how to list the jobs to the controller's "job "x" not found"; other errors pass as they are. */
function hinted(error: unknown): never {
  if (error instanceof ShardlineError && error.code === "not-found" && /^job ".*" not found$/.test(error.message)) {
    throw new ShardlineError("not-found", `${error.message}; ${JOB_HINT}`, error.details, { cause: error });
  }
  throw error;
}

/** `shardline rollout status JOB [--watch]`. */
export async function runRolloutStatus(job: string, options: RolloutStatusOptions, io: CliIo): Promise<void> {
  if (options.timeout !== undefined && !options.watch) {
    throw new ShardlineError("invalid-argument", "--timeout applies only with --watch", { field: "--timeout" });
  }
  await withAdminClient(options, io, async (client) => {
    if (!options.watch) {
      const view = await fetchView(client, job);
      io.stdout(options.output === "json" || options.output === "yaml" ? renderDocument(view, options.output) : statusText(view));
      return;
    }
    await watch(client, job, options, io);
  });
}

async function fetchView(client: AdminClient, job: string): Promise<RolloutView> {
  const { rollout } = await client.getRollout({ job }).catch(hinted);
  if (rollout === undefined) throw new ShardlineError("internal", `the controller answered GetRollout for "${job}" without a rollout`);
  return rolloutView(job, rollout);
}

/**
 * Prints the rollout each time it changes until it completes or is aborted, or the timeout
 * passes. A controller out of reach for a while (a restart, a leader change) is asked again
 * until the timeout; a follower's answer naming the leader goes to withAdminClient, which calls
 * the leader (this again, printing the status anew).
 */
async function watch(client: AdminClient, job: string, options: RolloutStatusOptions, io: CliIo): Promise<void> {
  const timeoutSeconds = options.timeout ?? DEFAULT_WATCH_TIMEOUT_SECONDS;
  const deadline = Date.now() + timeoutSeconds * 1000;
  let shown: string | undefined;
  let view: RolloutView | undefined;
  for (;;) {
    try {
      view = await fetchView(client, job);
    } catch (error) {
      const passing = error instanceof ShardlineError && error.code === "unavailable" && error.details.leader === undefined && view !== undefined;
      if (!passing) throw error;
    }
    if (view !== undefined) {
      const text = JSON.stringify(view);
      if (text !== shown) {
        if (options.output === "json") io.stdout(`${text}\n`);
        else if (options.output === "yaml") io.stdout(`---\n${renderDocument(view, "yaml")}`);
        else io.stdout(`${shown === undefined ? "" : "\n"}${statusText(view)}`);
        shown = text;
      }
      if (view.phase === "completed" || view.phase === "none") return;
      if (view.phase === "aborted") throw new RolloutAbortedError(`job/${job} rollout ${summaryOf(job, view)}`);
    }
    if (Date.now() + POLL_MS > deadline) {
      const where = view === undefined ? "" : `, still ${summaryOf(job, view)}`;
      throw new WatchTimedOutError(`job/${job} rollout did not end within --timeout ${timeoutSeconds} s${where}; it goes on without us`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/**
 * One line of how the rollout stands: "paused at step 2/4: pause: until promoted", "completed:
 * every shard runs revision 3", "aborted: every shard runs revision 2 (analysis at step 2: ...)".
 */
export function summaryOf(job: string, status: RolloutView | RolloutStatus | undefined): string {
  if (status === undefined) return "unknown (the controller sent no rollout)";
  const view = "$typeName" in status ? rolloutView(job, status) : status;
  switch (view.phase) {
    case "none":
      return `no rollout: every shard runs revision ${view.currentRevision}`;
    case "completed":
      return `completed: every shard runs revision ${view.currentRevision}${view.reason === null ? "" : ` (${view.reason})`}`;
    case "aborted":
      return `aborted: every shard runs revision ${view.stableRevision}${view.reason === null ? "" : ` (${view.reason})`}`;
    default:
      return `${view.phase} at step ${stepText(view)}`;
  }
}

/** "2/4: pause: until promoted", or "4/4, every step done" past the last step. */
function stepText(view: RolloutView): string {
  const total = view.steps.length;
  const current = view.steps[view.step - 1];
  return current === undefined ? `${total}/${total}, every step done` : `${view.step}/${total}: ${current}`;
}

/** Shard numbers with runs folded: 0-3,7,9-10. */
export function shardRanges(shards: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < shards.length; ) {
    let j = i;
    while (j + 1 < shards.length && shards[j + 1] === shards[j]! + 1) j++;
    parts.push(i === j ? String(shards[i]) : `${shards[i]}-${shards[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

function tallyText(revision: number, tally: TallyView): string {
  return `revision ${revision}: ${tally.runs} run${tally.runs === 1 ? "" : "s"}, ${tally.failures} failed${tally.p95Ms === null ? "" : `, p95 ${formatDuration(tally.p95Ms)}`}`;
}

/**
 * The lines `rollout status` and `describe job` show of a rollout, each "Label:  value", without
 * the steps list.
 */
export function rolloutLines(view: RolloutView): [string, string][] {
  const lines: [string, string][] = [["Phase", view.phase]];
  const shards = view.shardsByRevision.map((entry) => `revision ${entry.revision}: ${shardRanges(entry.shards)}`).join("; ");
  if (view.phase === "none") {
    lines.push(["Revisions", `current ${view.currentRevision} (nothing rolls out: every shard runs it)`]);
    if (shards !== "") lines.push(["Shards", shards]);
    return lines;
  }
  lines.push(["Step", stepText(view)]);
  lines.push(["Revisions", `current ${view.currentRevision}, stable ${view.stableRevision}, target ${view.targetRevision}`]);
  if (shards !== "") lines.push(["Shards", shards]);
  if (view.windowStartedAt !== null) {
    const stable = view.stableRevision === view.targetRevision ? "" : `; ${tallyText(view.stableRevision, view.stable)}`;
    lines.push(["Analysis", `since ${view.windowStartedAt.replace(/\.000Z$/, "Z")}: ${tallyText(view.targetRevision, view.target)}${stable}`]);
  }
  if (view.waiting !== null) lines.push(["Waiting", view.waiting]);
  if (view.reason !== null) lines.push(["Reason", view.reason]);
  if (view.endedAt !== null) lines.push(["Ended", view.endedAt.replace(/\.000Z$/, "Z")]);
  return lines;
}

/** `rollout status` as text: the job, its rollout's lines, and its steps with the current one marked. */
export function statusText(view: RolloutView): string {
  return `${[`Job:        ${view.job}`, ...rolloutText(view)].join("\n")}\n`;
}

/** A rollout's lines, and its steps with the one under way (or where it was aborted) marked. */
export function rolloutText(view: RolloutView): string[] {
  const lines = rolloutLines(view).map(([label, value]) => `${`${label}:`.padEnd(12)}${value}`);
  if (view.steps.length > 0) {
    const marked = view.phase === "progressing" || view.phase === "paused" || view.phase === "aborted";
    lines.push("Steps:");
    view.steps.forEach((step, index) => lines.push(`${marked && index + 1 === view.step ? ">" : " "} ${index + 1}. ${step}`));
  }
  return lines;
}
