import { auditMessage } from "../../shared/audit-message.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { ShardlineError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logging.js";
import { ADMIN_METHOD_ROLES } from "../../shared/security/roles.js";
import type { CoreEvent } from "../core/messages.js";
import type { AuditRecord, Store } from "../store/store.js";
import type { Authorization } from "./authorization.js";

/** Default of the audit trail's retention (--audit-retention-days, --audit-max-records). */
export const DEFAULT_AUDIT_RETENTION = { maxAgeMs: 90 * 24 * 3600 * 1000, maxRecords: 100_000 };

/** Records kept in memory waiting for the store before the oldest are dropped (and said to be). */
const MAX_QUEUED = 10_000;

/**
 * The audit trail of one leader: each record is logged at once as a structured line (`audit`
 * with its fields, for a log shipper to send to a SIEM), and written to the store in batches
 * (a turn of the event loop's records in one commit), where `ListAuditRecords` reads it and the
 * retention prunes it. A store that fails to take a batch loses nothing silently: the failure is
 * logged with how many records it held (their lines are in the log already).
 */
export class AuditTrail {
  #queued: AuditRecord[] = [];
  #flushing: Promise<void> | undefined;
  #dropped = 0;

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    /** Told of each record as it is made: the leader publishes it as an `audit` event. */
    private readonly onRecord: (record: AuditRecord) => void = () => {},
  ) {}

  record(record: AuditRecord): void {
    this.onRecord(record);
    this.logger.info({ audit: record }, `audit: ${auditMessage(record)}`);
    if (this.#queued.length >= MAX_QUEUED) {
      this.#queued.shift();
      this.#dropped++;
    }
    this.#queued.push(record);
    this.#flushing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.#flush());
  }

  /** Resolves once every record so far is written (or its failure logged). */
  async idle(): Promise<void> {
    while (this.#flushing !== undefined) await this.#flushing;
  }

  async #flush(): Promise<void> {
    const batch = this.#queued;
    this.#queued = [];
    if (this.#dropped > 0) {
      this.logger.error({ dropped: this.#dropped }, `the audit trail dropped ${this.#dropped} records the store could not take in time; their lines are in this log`);
      this.#dropped = 0;
    }
    try {
      await this.store.commit({ audit: batch });
    } catch (error) {
      this.logger.error({ err: error, records: batch.length }, `the audit trail could not store ${batch.length} records; their lines are in this log`);
    } finally {
      this.#flushing = undefined;
      if (this.#queued.length > 0) this.#flushing = this.#flush();
    }
  }
}

/**
 * An audit record as an event of type `audit` (what `shardline events --audit -w` follows): its
 * target as the job, agent or execution it is, its message who did what.
 */
export function auditEvent(record: AuditRecord): CoreEvent {
  const on = record.method.endsWith("Agent") ? "agent" : record.method === "CancelExecution" ? "executionId" : "job";
  return { time: record.time, type: "audit", ...(record.target === "" ? {} : { [on]: record.target }), message: auditMessage(record) };
}

/** Options of auditedAdmin. */
export interface AuditedAdminOptions {
  authorization: Authorization;
  /** The leader's audit trail; undefined while this controller does not lead (records are then only logged). */
  trail: () => AuditTrail | undefined;
  logger: Logger;
  clock?: () => number;
}

/**
 * Wraps the AdminService as served (outside authorizedAdmin) so that every call to a method that
 * changes something (a role above viewer: ApplyJob, TriggerJob, DrainAgent, ...), and every call
 * refused for its caller's token or role, is recorded once it is answered: who (the token's name,
 * even for a refusal when the token is known), role, where from, which method, on what, what
 * changed, and the outcome. Reads that succeed are not recorded.
 */
export function auditedAdmin(impl: Record<string, unknown>, options: AuditedAdminOptions): Record<string, unknown> {
  const clock = options.clock ?? Date.now;
  const wrapped: Record<string, unknown> = { ...impl };
  for (const method of AdminService.methods) {
    const fn = impl[method.localName];
    if (typeof fn !== "function") continue;
    const mutating = ADMIN_METHOD_ROLES[method.name] !== "viewer";
    const call = fn as (...args: unknown[]) => Promise<unknown>;
    const record = (request: unknown, context: { metadata: { get(key: string): unknown[] }; peer: string }, outcome: { response?: unknown; error?: unknown }): void => {
      const holder = options.authorization.identify(context.metadata.get("authorization")[0] as string | undefined);
      const error = outcome.error;
      const entry: AuditRecord = {
        time: clock(),
        caller: holder?.name ?? "",
        role: holder?.role ?? "",
        peer: context.peer,
        method: method.name,
        target: targetOf(method.name, request, outcome.response),
        summary: error === undefined ? summaryOf(method.name, request, outcome.response) : "",
        outcome: error === undefined ? "ok" : codeOf(error),
        error: error === undefined ? "" : error instanceof Error ? error.message : String(error),
      };
      const trail = options.trail();
      if (trail !== undefined) trail.record(entry);
      else options.logger.info({ audit: entry }, `audit: ${auditMessage(entry)} (this controller does not lead: not stored)`);
    };
    wrapped[method.localName] = async (...args: unknown[]): Promise<unknown> => {
      const request = args[0];
      const context = args.at(-1) as { metadata: { get(key: string): unknown[] }; peer: string };
      try {
        const response = await call(...args);
        if (mutating) record(request, context, { response });
        return response;
      } catch (error) {
        if (mutating || isDenial(error)) record(request, context, { error });
        throw error;
      }
    };
  }
  return wrapped;
}

function isDenial(error: unknown): boolean {
  return error instanceof ShardlineError && (error.code === "unauthenticated" || error.code === "permission-denied");
}

/** An error's code as the API names it: "not_found", "permission_denied", ... */
function codeOf(error: unknown): string {
  return error instanceof ShardlineError ? error.code.replace(/-/g, "_") : "internal";
}

type Fields = Record<string, unknown>;

function fields(value: unknown): Fields {
  return typeof value === "object" && value !== null ? (value as Fields) : {};
}

/** What a call acts on: its job, agent or execution (for an apply, the job's name as applied, else as the manifest seems to say). */
function targetOf(method: string, request: unknown, response: unknown): string {
  const r = fields(request);
  const answer = fields(response);
  if (method === "ApplyJob") return typeof fields(answer.job).name === "string" ? String(fields(answer.job).name) : manifestName(r.manifest);
  if (method === "ApplyJobs") {
    const results = Array.isArray(answer.results) ? (answer.results as unknown[]).map((result) => String(fields(fields(result).job).name)) : undefined;
    return (results ?? (Array.isArray(r.manifests) ? r.manifests : []).map(manifestName)).join(",");
  }
  for (const key of ["name", "job", "id"]) if (typeof r[key] === "string" && r[key] !== "") return r[key];
  return "";
}

/** metadata.name of a manifest's text, found without parsing it (it may be the refused input). */
function manifestName(manifest: unknown): string {
  if (typeof manifest !== "string") return "";
  return /(?:^|[{,\s])name:\s*["']?([a-z0-9-]{1,63})/m.exec(manifest)?.[1] ?? "";
}

/** What a successful call changed, in words. */
function summaryOf(method: string, request: unknown, response: unknown): string {
  const r = fields(request);
  const answer = fields(response);
  const job = fields(answer.job);
  const dry = r.dryRun === true ? "dry run: " : "";
  switch (method) {
    case "ApplyJob":
    case "UndoRollout": {
      const what = answer.changed === true ? `${dry}${r.dryRun === true ? "would apply" : "applied"} revision ${String(job.revision)}` : `${dry}unchanged at revision ${String(job.revision)}`;
      return method === "UndoRollout" ? `undo to revision ${String(answer.undoOf)}: ${what}` : what;
    }
    case "ApplyJobs": {
      const results = Array.isArray(answer.results) ? (answer.results as unknown[]).map(fields) : [];
      return `${dry}${results.map((result) => `${String(fields(result.job).name)} ${result.changed === true ? `revision ${String(fields(result.job).revision)}` : "unchanged"}`).join(", ")}`;
    }
    case "TriggerJob": {
      const shards = Array.isArray(r.shards) && r.shards.length > 0 ? `shards ${r.shards.join(",")}` : "every shard";
      const ids = Array.isArray(answer.executionIds) ? answer.executionIds.length : 0;
      return `triggered ${shards}: ${ids} execution${ids === 1 ? "" : "s"}${typeof r.parameter === "string" && r.parameter !== "" ? `, parameter ${JSON.stringify(r.parameter)}` : ""}`;
    }
    case "CancelExecution":
      return `cancel: now ${String(answer.state ?? "")}${typeof r.reason === "string" && r.reason !== "" ? `, reason ${JSON.stringify(r.reason)}` : ""}`;
    case "DisableShard":
    case "EnableShard":
      return `shard ${String(r.shard)} ${method === "DisableShard" ? "disabled" : "enabled"}`;
    case "PromoteRollout":
      return r.full === true ? "rollout promoted past every remaining step" : "rollout promoted past its current step";
    default:
      return {
        DeleteJob: "deleted",
        PauseJob: "paused",
        ResumeJob: "resumed",
        DrainAgent: "drained (cordoned)",
        UncordonAgent: "uncordoned",
        AbortRollout: "rollout aborted",
        RetryRollout: "rollout retried",
      }[method] ?? "done";
  }
}
