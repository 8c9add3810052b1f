import type { Command } from "commander";
import { auditMessage } from "../../shared/audit-message.js";
import { ShardlineError } from "../../shared/errors.js";
import { type AuditRecord, type WatchEventsResponse, WatchTopic } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { isoTime, oneLine, parseOutputFormat, tableTime, type CliIo, type OutputFormat } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint } from "./admin.js";
import { parseInteger } from "./options.js";
import { followWatch } from "./watch.js";

/** The flags of `shardline events`, parsed. */
export interface EventsOptions {
  controller?: string;
  job?: string;
  output?: OutputFormat;
  follow?: boolean;
  watch?: boolean;
  audit?: boolean;
  limit?: number;
}

/** `shardline events -o json`: one event, one line. */
export interface EventView {
  time: string | null;
  type: string;
  job: string | null;
  shard: number | null;
  agent: string | null;
  executionId: string | null;
  message: string;
}

export function registerEvents(program: Command, io: CliIo): void {
  const command = program
    .command("events")
    .summary("list the controller's recent events, or follow them with -w")
    .description(
      [
        "List the controller's recent events (the newest 1,000 it keeps in memory, oldest first), one line each: TIME TYPE MESSAGE.",
        "With -w (--watch, or -f, --follow), keeps printing events as they happen until interrupted (Ctrl-C, exit 0); if the stream ends (the controller stopped leading, or cut off a reader that fell behind), it resumes from where it stopped, through the new leader.",
        "With --audit, the audit trail the controller stores instead: each mutating admin call (apply, trigger, pause, drain, rollouts, ...) and each call refused for its token or role, with who made it (the token's name), their role, where from, on what, what changed and the outcome; -w then follows new records.",
      ].join("\n\n"),
    );
  addControllerOption(command)
    .option("-w, --watch", "after the recent events, print new ones as they happen")
    .option("-f, --follow", "the same as --watch, for kubectl habits")
    .option("--job <JOB>", "only events of this job")
    .option("--audit", "the audit trail instead: who changed what (every mutating admin call, every refused call), oldest first")
    .option("--limit <N>", "with --audit: the newest N records (default 100, at most 10000)", (value: string) => parseInteger(value, "--limit", 1, 10_000))
    .option("-o, --output <FORMAT>", "json: one JSON object per line (default: text)", (value: string) => parseOutputFormat(value, ["json"]))
    .action(async (options: EventsOptions) => {
      await runEvents(options, io);
    });
}

/**
 * `shardline events`: prints the recent events, and with --watch/--follow new ones until
 * SIGINT/SIGTERM (which ends the command with success), from AdminService.Watch.
 */
export async function runEvents(options: EventsOptions, io: CliIo): Promise<void> {
  const follow = options.watch === true || options.follow === true;
  if (options.limit !== undefined && options.audit !== true) throw new ShardlineError("invalid-argument", "--limit applies to events --audit only; the recent events are the newest 1,000 the controller keeps", { field: "--limit" });
  if (options.audit === true) {
    await runAudit(options, follow, io);
    return;
  }
  const job = options.job;
  // A job that does not exist would have no events: say so at once rather than wait for none.
  if (job !== undefined) {
    await withAdminClient(options, io, (client) =>
      client.getJob({ name: job }).catch((error: unknown) => {
        throw withNotFoundHint(error, 'run "shardline get jobs" to list the jobs');
      }),
    );
  }
  let printed = 0;
  await followWatch(options, io, { topics: [WatchTopic.EVENTS], job: options.job ?? "" }, (message) => {
    for (const event of message.events) io.stdout(options.output === "json" ? `${JSON.stringify(eventView(event))}\n` : `${eventLine(event)}\n`);
    printed += message.events.length;
    if (message.synced && printed === 0) io.stderr(follow ? "No recent events; watching.\n" : "No recent events.\n");
    return follow || !message.synced;
  });
}

/** `shardline events --audit`: the stored records, oldest first, then (with -w) the new ones as `audit` events. */
async function runAudit(options: EventsOptions, follow: boolean, io: CliIo): Promise<void> {
  const { records } = await withAdminClient(options, io, (client) => client.listAuditRecords({ limit: options.limit ?? 100, target: options.job ?? "" }));
  for (const record of [...records].reverse()) {
    io.stdout(options.output === "json" ? `${JSON.stringify(auditView(record))}\n` : `${tableTime(record.timeUnixMs)} audit ${oneLine(auditMessage(record))}\n`);
  }
  if (records.length === 0 && !follow) io.stderr("No audit records.\n");
  if (!follow) return;
  // The watch's snapshot repeats recent events: only what comes after it is new.
  let live = false;
  await followWatch(options, io, { topics: [WatchTopic.EVENTS], job: options.job ?? "" }, (message) => {
    if (live) {
      for (const event of message.events) {
        if (event.type !== "audit") continue;
        io.stdout(options.output === "json" ? `${JSON.stringify(eventView(event))}\n` : `${eventLine(event)}\n`);
      }
    }
    if (message.reset) live = false;
    if (message.synced) live = true;
    return true;
  });
}

/** `shardline events --audit -o json`: one record, one line. */
function auditView(record: AuditRecord): Record<string, unknown> {
  return {
    time: isoTime(record.timeUnixMs),
    caller: record.caller || null,
    role: record.role || null,
    peer: record.peer,
    method: record.method,
    target: record.target || null,
    summary: record.summary || null,
    outcome: record.outcome,
    error: record.error || null,
  };
}

export function eventView(event: WatchEventsResponse): EventView {
  return {
    time: isoTime(event.timeUnixMs),
    type: event.type,
    job: event.job || null,
    shard: event.job ? event.shard : null,
    agent: event.agent || null,
    executionId: event.executionId || null,
    message: event.message,
  };
}

/** `TIME TYPE MESSAGE`; an event without a message shows what it concerns instead. */
export function eventLine(event: WatchEventsResponse): string {
  const subject = [
    event.job ? `job=${event.job}` : "",
    event.job ? `shard=${event.shard}` : "",
    event.agent ? `agent=${event.agent}` : "",
    event.executionId ? `execution=${event.executionId}` : "",
  ]
    .filter((part) => part !== "")
    .join(" ");
  return `${tableTime(event.timeUnixMs)} ${event.type} ${oneLine(event.message || subject)}`.trimEnd();
}
