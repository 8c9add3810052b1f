import type { Command } from "commander";
import { type WatchEventsResponse, WatchTopic } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { isoTime, oneLine, parseOutputFormat, tableTime, type CliIo, type OutputFormat } from "../output.js";
import { addControllerOption, withAdminClient, withNotFoundHint } from "./admin.js";
import { followWatch } from "./watch.js";

/** The flags of `shardline events`, parsed. */
export interface EventsOptions {
  controller?: string;
  job?: string;
  output?: OutputFormat;
  follow?: boolean;
  watch?: boolean;
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
      ].join("\n\n"),
    );
  addControllerOption(command)
    .option("-w, --watch", "after the recent events, print new ones as they happen")
    .option("-f, --follow", "the same as --watch, for kubectl habits")
    .option("--job <JOB>", "only events of this job")
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
