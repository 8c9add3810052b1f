import type { MessageInitShape } from "@bufbuild/protobuf";
import { ShardlineError } from "../../shared/errors.js";
import { type ShardStatus, type WatchRequestSchema, type WatchResponse, WatchTopic } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { stringify as toYaml } from "yaml";
import { NONE, renderTable, type CliIo, type Column, type OutputFormat } from "../output.js";
import { withAdminClient, type AdminFlags } from "./admin.js";
import { executionStateName } from "./resources.js";

/** How a watched item changed, as kubectl's --output-watch-events says it. */
export type WatchChange = "ADDED" | "MODIFIED" | "DELETED";

/** One item a watch printer shows: its key, its view (-o json/yaml) and its table row. */
export interface WatchedItem<R> {
  key: string;
  view: unknown;
  row: R;
}

/** Consecutive failed attempts to watch again after the stream ended, before giving up. */
const MAX_RESUMES = 5;
const RESUME_BACKOFF_MS = [200, 500, 1_000, 2_000, 5_000];

/**
 * Follows a Watch until interrupted (SIGINT/SIGTERM, success), until the controller ends it
 * without an error (success), or until it cannot be resumed: a stream that fails UNAVAILABLE (the
 * controller stopped leading) or RESOURCE_EXHAUSTED (cut off as too slow) is called again from
 * the last cursor read, through the leader if another one leads now; after
 * MAX_RESUMES failures in a row, the last failure is the command's. `onMessage` is given every
 * message, in order, and ends the watch by returning false; a `reset` one says the controller
 * could not resume and a snapshot follows (a note says so on stderr).
 */
export async function followWatch(
  flags: AdminFlags,
  io: CliIo,
  request: MessageInitShape<typeof WatchRequestSchema>,
  onMessage: (message: WatchResponse) => boolean | void,
): Promise<void> {
  const interrupted = new AbortController();
  const unsubscribe = io.onSignal((signal) => interrupted.abort(signal));
  let cursor = "";
  let failures = 0;
  try {
    for (;;) {
      try {
        await withAdminClient(flags, io, async (client) => {
          for await (const message of client.watch({ ...request, cursor }, { signal: interrupted.signal })) {
            failures = 0;
            if (message.reset) io.stderr("the controller could not resume the watch (it restarted, or more changed meanwhile than it keeps); listing again\n");
            cursor = message.cursor;
            if (onMessage(message) === false) {
              interrupted.abort();
              return;
            }
          }
        });
        // Ended by onMessage, or by the controller without an error: done.
        return;
      } catch (error) {
        // Being interrupted is how this command is meant to end.
        if (interrupted.signal.aborted) return;
        const resumable = error instanceof ShardlineError && (error.code === "unavailable" || error.code === "resource-exhausted");
        if (!resumable || cursor === "" || failures >= MAX_RESUMES) throw error;
        io.stderr(`the watch ended (${error.message}); watching again from where it stopped\n`);
        await delay(RESUME_BACKOFF_MS[failures++] ?? 5_000, interrupted.signal);
        if (interrupted.signal.aborted) return;
      }
    }
  } finally {
    unsubscribe();
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}

/**
 * Prints a watched list as `get -w` does: the snapshot as one table (or, with -o json/yaml, one
 * document per item), then each change as it comes: a table row (a deleted item as its row with
 * DELETED first), or with -o json one line `{"type":"ADDED|MODIFIED|DELETED","object":...}`,
 * with -o yaml the same as a YAML document.
 */
export class WatchPrinter<R> {
  readonly #known = new Map<string, WatchedItem<R>>();
  #snapshot: WatchedItem<R>[] | undefined = [];
  #header = false;

  constructor(
    readonly io: CliIo,
    readonly format: OutputFormat | undefined,
    readonly columns: readonly Column<R>[],
    readonly noun: string,
  ) {}

  /** Forgets everything shown: a new snapshot follows (after a `reset`). */
  reset(): void {
    this.#known.clear();
    this.#snapshot = [];
  }

  upsert(item: WatchedItem<R>): void {
    const change: WatchChange = this.#known.has(item.key) ? "MODIFIED" : "ADDED";
    this.#known.set(item.key, item);
    if (this.#snapshot !== undefined) {
      const at = this.#snapshot.findIndex((known) => known.key === item.key);
      if (at >= 0) this.#snapshot[at] = item;
      else this.#snapshot.push(item);
      return;
    }
    this.#print(change, item);
  }

  remove(key: string): void {
    const item = this.#known.get(key);
    if (item === undefined) return;
    this.#known.delete(key);
    if (this.#snapshot !== undefined) {
      this.#snapshot = this.#snapshot.filter((known) => known.key !== key);
      return;
    }
    this.#print("DELETED", item);
  }

  /** The snapshot is complete: prints it, and every change from here on as it comes. */
  synced(): void {
    const items = this.#snapshot ?? [];
    this.#snapshot = undefined;
    if (this.format === "json" || this.format === "yaml" || this.format === "name") {
      for (const item of items) this.#print("ADDED", item);
      return;
    }
    if (items.length === 0) {
      this.io.stderr(`No ${this.noun} found yet; watching.\n`);
      return;
    }
    this.io.stdout(renderTable(items.map((item) => item.row), this.columns, this.format === "wide"));
    this.#header = true;
  }

  #print(change: WatchChange, item: WatchedItem<R>): void {
    if (this.format === "name") {
      this.io.stdout(`${this.noun.replace(/s$/, "")}/${item.key}\n`);
      return;
    }
    if (this.format === "json") {
      this.io.stdout(`${JSON.stringify({ type: change, object: item.view })}\n`);
      return;
    }
    if (this.format === "yaml") {
      this.io.stdout(`---\n${toYaml({ type: change, object: item.view })}`);
      return;
    }
    const lines = renderTable([item.row], this.columns, this.format === "wide").split("\n");
    if (!this.#header) {
      this.io.stdout(`${lines[0]}\n`);
      this.#header = true;
    }
    this.io.stdout(`${change === "DELETED" ? "DELETED " : ""}${lines[1]}\n`);
  }
}

/** A shard as `get assignments -w` shows it: its owner, or why it has none, and its latest execution. */
export interface ShardWatchView {
  job: string;
  shard: number;
  agent: string | null;
  revoking: boolean;
  disabled: boolean;
  reason: string | null;
  lastExecution: { id: string; state: string } | null;
}

export function shardWatchView(shard: ShardStatus): ShardWatchView {
  return {
    job: shard.job,
    shard: shard.shard,
    agent: shard.agent === "" ? null : shard.agent,
    revoking: shard.revoking,
    disabled: shard.disabled,
    reason: shard.unassignedReason === "" ? null : shard.unassignedReason,
    lastExecution: shard.lastExecution === undefined ? null : { id: shard.lastExecution.id, state: executionStateName(shard.lastExecution.state) },
  };
}

export const SHARD_WATCH_COLUMNS: readonly Column<ShardWatchView>[] = [
  { header: "JOB", value: (shard) => shard.job },
  { header: "SHARD", value: (shard) => String(shard.shard) },
  { header: "AGENT", value: (shard) => shard.agent ?? NONE },
  { header: "STATE", value: (shard) => (shard.disabled ? "disabled" : shard.agent === null ? "unassigned" : shard.revoking ? "revoking" : "assigned") },
  { header: "LAST", value: (shard) => shard.lastExecution?.state ?? NONE },
  { header: "LAST EXECUTION", value: (shard) => shard.lastExecution?.id ?? NONE, wide: true },
  { header: "REASON", value: (shard) => shard.reason ?? NONE, wide: true },
];

/** The topic a `get` resource is watched through. */
export const WATCH_TOPIC_OF = {
  jobs: WatchTopic.JOBS,
  agents: WatchTopic.AGENTS,
  assignments: WatchTopic.SHARDS,
  executions: WatchTopic.EXECUTIONS,
} as const;
