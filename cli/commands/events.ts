import type { Command } from "commander";
import type { WatchEventsResponse } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { isoTime, oneLine, parseOutputFormat, tableTime, type CliIo, type OutputFormat } from "../output.js";
import { addControllerOption, withAdminClient } from "./admin.js";

/** The flags of `shardline events`, parsed. */
export interface EventsOptions {
  controller?: string;
  job?: string;
  output?: OutputFormat;
  follow?: boolean;
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
    .summary("stream the controller's events as they happen")
    .description(
      [
        "Stream the controller's events as they happen, one line each: TIME TYPE MESSAGE.",
        "Following is the default (the API only streams): the command runs until interrupted (Ctrl-C, exit 0) or until the controller ends the stream. --follow is accepted for kubectl habits.",
      ].join("\n\n"),
    );
  addControllerOption(command)
    .option("-f, --follow", "keep streaming new events (the default)")
    .option("--job <JOB>", "only events of this job")
    .option("-o, --output <FORMAT>", "json: one JSON object per line (default: text)", (value: string) => parseOutputFormat(value, ["json"]))
    .action(async (options: EventsOptions) => {
      await runEvents(options, io);
    });
}

/**
 * `shardline events`: prints events until SIGINT/SIGTERM (which ends the command with success) or
 * until the controller closes the stream.
 */
export async function runEvents(options: EventsOptions, io: CliIo): Promise<void> {
  const interrupted = new AbortController();
  const unsubscribe = io.onSignal((signal) => interrupted.abort(signal));
  try {
    await withAdminClient(options, io, async (client) => {
      try {
        for await (const event of client.watchEvents({ job: options.job ?? "" }, { signal: interrupted.signal })) {
          io.stdout(options.output === "json" ? `${JSON.stringify(eventView(event))}\n` : `${eventLine(event)}\n`);
        }
      } catch (error) {
        // Being interrupted is how this command is meant to end.
        if (!interrupted.signal.aborted) throw error;
      }
    });
  } finally {
    unsubscribe();
  }
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
