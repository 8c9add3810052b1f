import { ShardlineError } from "../../shared/errors.js";
import { AdminService, ListExecutionsResponseSchema } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { ExecutionSchema, ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import { encodeRepeatedInSlices, type ServiceImpl } from "../../shared/grpc/index.js";
import { parseManifest, type ParsedManifest } from "../../shared/manifest/index.js";
import { readDocument } from "../../shared/manifest/read-document.js";
import { VERSION } from "../../shared/version.js";
import { MANIFEST_LIMIT_TEXT, MANIFEST_SIZE_ADVICE, MAX_MANIFEST_BYTES } from "../../shared/manifest/manifest-limits.js";
import type { ControllerCore } from "../core/controller-core.js";
import { checkStrategyLoaded } from "../core/sharding/custom-strategy.js";
import { ADMIN_METHOD_ROLES, roleAllows } from "../../shared/security/roles.js";
import type { ExecutionQuery, Store } from "../store/store.js";
import type { CoreDriver } from "./core-driver.js";
import { callerName, callerOf } from "./authorization.js";
import { shardedJobOf } from "./kube-jobs.js";
import { eventToProto, type WatchHub } from "./watch-hub.js";
import { agentToProto, executionToProto, jobToProto, revisionToProto, rolloutToProto, stateFromProto, stateToProto, toNumber } from "./proto-mapping.js";
import { executionLogsService } from "./execution-logs-service.js";

const MAX_LIMIT = 10_000;
/** A watcher that falls this far behind is cut off rather than buffering without bound. */
const MAX_EVENTS_QUEUED = 10_000;

/** Default of AdminServiceOptions.maxJobs (the controller's --max-jobs). */
export const DEFAULT_MAX_JOBS = 10_000;

/** Default of AdminServiceOptions.maxHistoryReads. */
export const DEFAULT_MAX_HISTORY_READS = 2;

/** Options of adminService. */
export interface AdminServiceOptions {
  /**
   * Reads of the execution history (ListExecutions, GetExecution, CancelExecution of a finished
   * one) served at once, from the store query to the encoded answer; the others wait their turn,
   * in order. Without a bound, a flood of 10,000-row listings starves firing twice over: the
   * store's one thread serves commits and reads in the order they come, and a fire is dispatched
   * only once its commit is done; and each listing costs the event loop about 150 ms of decoding,
   * converting, encoding and garbage collection. Default 2: a commit waits behind two reads at
   * most, and the event loop runs at most two listings' slices between its other work, while one
   * listing is encoded as the next is read.
   */
  maxHistoryReads?: number;
  /** Jobs held at most: applying a new one past it is refused with RESOURCE_EXHAUSTED. Default DEFAULT_MAX_JOBS. */
  maxJobs?: number;
  /** Serves Watch; without it, Watch is refused as not implemented. */
  watchHub?: WatchHub;
}

/**
 * AdminService: reads come from the core's state and the store; writes go through the core.
 * `customStrategies` are the names loaded with --strategy, which a job's `custom:NAME` must be.
 * How many calls are served at once is bounded where the service is added (addService's
 * maxConcurrentCalls); past it a call is answered RESOURCE_EXHAUSTED.
 */
export function adminService(
  core: ControllerCore,
  driver: CoreDriver,
  store: Store,
  customStrategies: ReadonlyMap<string, unknown> = new Map(),
  options: AdminServiceOptions = {},
): Partial<ServiceImpl<typeof AdminService>> {
  const historyReads = new TurnTaking(options.maxHistoryReads ?? DEFAULT_MAX_HISTORY_READS, "maxHistoryReads");
  /** A job as the API shows it, with its rollout. */
  const jobOf = (name: string) => jobToProto(core.getJob(name), core.rollout(name));
  const rolloutOf = (job: string) => ({ rollout: rolloutToProto(core.rollout(job)) });
  const maxJobs = options.maxJobs ?? DEFAULT_MAX_JOBS;
  /** What an apply would do, changing nothing. */
  const preview = ({ spec, manifest }: ParsedManifest) => {
    const { view, changed, warnings } = core.previewApply(spec.name, spec, manifest);
    return { job: jobToProto(view), changed, warnings };
  };
  return {
    ...executionLogsService(driver, store, historyReads),
    async applyJob(request, context) {
      const parsed = checkedManifest(request.manifest, customStrategies, core);
      const { spec, manifest } = parsed;
      checkRoomFor([spec.name], core, maxJobs);
      if (request.dryRun) return preview(parsed);
      const appliedBy = callerName(context);
      const { changed } = await driver.run((now) => core.applyJob(spec.name, spec, manifest, now, { appliedBy }));
      return { job: jobOf(spec.name), changed, warnings: core.applyWarnings(spec.name) };
    },

    async applyJobs(request, context) {
      const count = request.manifests.length;
      if (count < 1 || count > MAX_MANIFESTS_AT_ONCE) throw ShardlineError.invalid("manifests", `${count} manifests`, `1 to ${MAX_MANIFESTS_AT_ONCE}`);
      // Every manifest is checked before anything is applied: all or nothing.
      const parsed = request.manifests.map((text, index) => {
        try {
          return checkedManifest(text, customStrategies, core);
        } catch (error) {
          throw inManifest(error, index, undefined);
        }
      });
      const names = parsed.map(({ spec }) => spec.name);
      names.forEach((name, index) => {
        const first = names.indexOf(name);
        if (first !== index) throw ShardlineError.invalid(`manifests[${index}].metadata.name`, name, `each job once; manifests[${first}] names it too`);
      });
      checkRoomFor(names, core, maxJobs);
      if (request.dryRun) return { results: parsed.map(preview) };
      const appliedBy = callerName(context);
      // One step: one batch, committed as one durable write.
      const changed = await driver.run((now) => parsed.map(({ spec, manifest }) => core.applyJob(spec.name, spec, manifest, now, { appliedBy }).changed));
      return { results: names.map((name, index) => ({ job: jobOf(name), changed: changed[index]!, warnings: core.applyWarnings(name) })) };
    },

    async listAuditRecords(request) {
      if (request.limit > MAX_LIMIT) throw ShardlineError.invalid("limit", request.limit, `0 (meaning 100) to ${MAX_LIMIT}`);
      if (store.listAudit === undefined) return { records: [] };
      await driver.idle();
      const records = await store.listAudit({
        limit: request.limit === 0 ? 100 : request.limit,
        ...(request.sinceUnixMs === 0n ? {} : { since: toNumber(request.sinceUnixMs, "since_unix_ms") }),
        ...(request.caller === "" ? {} : { caller: request.caller }),
        ...(request.target === "" ? {} : { target: request.target }),
      });
      return {
        records: records.map(({ time, caller, role, peer, method, target, summary, outcome, error }) => ({ timeUnixMs: BigInt(time), caller, role, peer, method, target, summary, outcome, error })),
      };
    },

    async getVersion() {
      return { version: VERSION, api: AdminService.typeName.replace(/\.AdminService$/, "") };
    },

    async getJob(request) {
      return { job: jobOf(request.name) };
    },

    async listJobs() {
      return { jobs: core.listJobs().map((view) => jobToProto(view, core.rollout(view.record.name))) };
    },

    async deleteJob(request) {
      refuseManaged(core, request.name, "deleted");
      await driver.run((now) => core.deleteJob(request.name, now));
      return {};
    },

    async triggerJob(request) {
      const parameter = request.parameter === "" ? undefined : request.parameter;
      const fired = await driver.run((now) => core.triggerJob(request.name, request.shards, parameter, now));
      return { fireTimeUnixMs: BigInt(fired.fireTime), executionIds: fired.executionIds };
    },

    async pauseJob(request) {
      await driver.run((now) => core.pauseJob(request.name, now));
      return {};
    },

    async resumeJob(request) {
      await driver.run((now) => core.resumeJob(request.name, now));
      return {};
    },

    async listAgents() {
      return { agents: core.listAgents().map(agentToProto) };
    },

    async drainAgent(request) {
      await driver.run((now) => core.drainAgent(request.id, now));
      return {};
    },

    async uncordonAgent(request) {
      await driver.run((now) => core.uncordonAgent(request.id, now));
      return {};
    },

    async listAssignments(request) {
      return {
        assignments: core.listAssignments(request.job).map((a) => ({
          job: a.job,
          shard: a.shard,
          agent: a.agent,
          term: BigInt(a.term),
          generation: BigInt(a.generation),
          revoking: a.revoking,
        })),
        unassigned: core.listUnassigned(request.job),
      };
    },

    async listExecutions(request, context) {
      if (request.limit > MAX_LIMIT) throw ShardlineError.invalid("limit", request.limit, `0 (meaning 100) to ${MAX_LIMIT}`);
      const query: ExecutionQuery = { limit: request.limit === 0 ? 100 : request.limit };
      if (request.job !== "") query.job = request.job;
      if (request.agent !== "") query.agent = request.agent;
      if (request.state !== ExecutionState.UNSPECIFIED) query.state = stateFromProto(request.state, "state");
      if (request.shard !== undefined) query.shard = request.shard;
      if (request.sinceUnixMs !== 0n) query.since = toNumber(request.sinceUnixMs, "since_unix_ms");
      if (request.untilUnixMs !== 0n) query.until = toNumber(request.untilUnixMs, "until_unix_ms");
      await driver.idle();
      return historyReads.run(context.signal, async () => {
        const executions = await store.listExecutions(query);
        const positions = core.queuePositions();
        // Up to 10,000 of them: encoded in slices, so that the event loop keeps firing meanwhile.
        return encodeRepeatedInSlices(ListExecutionsResponseSchema, "executions", ExecutionSchema, executions, (e) =>
          executionToProto(e, positions.get(e.id), e.state === "pending" || e.state === "unknown" ? core.waitingReason(e.id) : undefined),
        );
      });
    },

    async getExecution(request, context) {
      await driver.idle();
      const execution = await historyReads.run(context.signal, () => store.getExecution(request.id));
      if (execution === undefined) {
        throw new ShardlineError("not-found", `execution ${JSON.stringify(request.id)} not found`, { field: "id", value: request.id });
      }
      return { execution: executionToProto(execution, core.queuePositions().get(execution.id), core.waitingReason(execution.id)) };
    },

    async cancelExecution(request, context) {
      if (core.openExecution(request.id) === undefined) {
        await driver.idle();
        const finished = await historyReads.run(context.signal, () => store.getExecution(request.id));
        if (finished === undefined) {
          throw new ShardlineError("not-found", `execution ${JSON.stringify(request.id)} not found`, { field: "id", value: request.id });
        }
        throw new ShardlineError("failed-precondition", `execution ${request.id} already finished: ${finished.state}`, {
          field: "id",
          value: request.id,
        });
      }
      const state = await driver.run((now) => core.cancelExecution(request.id, request.reason.slice(0, 1024), now));
      return { state: stateToProto(state) };
    },

    async disableShard(request) {
      await driver.run((now) => core.disableShard(request.job, request.shard, now));
      return {};
    },

    async enableShard(request) {
      await driver.run((now) => core.enableShard(request.job, request.shard, now));
      return {};
    },

    async getRollout(request) {
      return rolloutOf(request.job);
    },

    async promoteRollout(request, context) {
      const by = callerName(context);
      await driver.run((now) => core.promoteRollout(request.job, request.full, by, now));
      return rolloutOf(request.job);
    },

    async abortRollout(request, context) {
      const by = callerName(context);
      await driver.run((now) => core.abortRollout(request.job, by, now));
      return rolloutOf(request.job);
    },

    async retryRollout(request, context) {
      const by = callerName(context);
      await driver.run((now) => core.retryRollout(request.job, by, now));
      return rolloutOf(request.job);
    },

    async undoRollout(request, context) {
      const name = request.job;
      refuseManaged(core, name, "undone");
      core.getJob(name);
      // Every revision applied so far is in the store before it is read.
      await driver.idle();
      const to = request.toRevision === 0n ? await previousRevision(core, store, name) : toNumber(request.toRevision, "to_revision");
      const record = await store.getRevision(name, to);
      if (record === undefined) {
        throw new ShardlineError(
          "not-found",
          `revision ${to} of job ${name} not found: the controller keeps each job's newest revisions (--revision-history) and those still in use; run "shardline rollout history ${name}" to list them`,
          { field: "to_revision", value: String(to) },
        );
      }
      const { spec, manifest } = manifestOf(record.manifest, name, to);
      checkStrategyLoaded(spec.strategy, customStrategies);
      const appliedBy = callerName(context);
      const { changed } = await driver.run((now) => {
        // Deleted while the revision was read: an undo never creates a job.
        core.getJob(name);
        return core.applyJob(name, spec, manifest, now, { appliedBy, undoOf: to });
      });
      return { job: jobOf(name), undoOf: BigInt(to), changed, warnings: core.applyWarnings(name) };
    },

    async listRevisions(request) {
      core.getJob(request.job);
      await driver.idle();
      const revisions = await store.listRevisions(request.job);
      return { revisions: revisions.map(revisionToProto) };
    },

    async watch(request, stream, context) {
      if (options.watchHub === undefined) throw new ShardlineError("failed-precondition", "Watch is not served by this controller");
      await options.watchHub.watch(request, stream, context);
    },

    async whoAmI(_request, context) {
      const caller = callerOf(context);
      const role = caller?.role ?? "admin";
      const allowedMethods = Object.entries(ADMIN_METHOD_ROLES)
        .filter(([, needed]) => roleAllows(role, needed))
        .map(([method]) => method)
        .sort();
      return { name: caller?.name ?? "", role, allowedMethods, tokensRequired: caller !== undefined };
    },

    async watchEvents(request, stream, context) {
      await new Promise<void>((resolve) => {
        const unsubscribe = driver.onEvent((event) => {
          if (request.job !== "" && event.job !== request.job) return;
          const sent = stream.send(eventToProto(event));
          if (!sent || stream.queued > MAX_EVENTS_QUEUED) finish();
        });
        const finish = (): void => {
          unsubscribe();
          resolve();
        };
        if (context.signal.aborted) finish();
        context.signal.addEventListener("abort", finish, { once: true });
      });
    },
  };
}

/** The most manifests one ApplyJobs takes. */
export const MAX_MANIFESTS_AT_ONCE = 100;

/**
 * Refuses to change through the admin API a job that follows a ShardedJob of the API server
 * (--jobs-from kubernetes): the object is where it is managed.
 */
function refuseManaged(core: ControllerCore, name: string, what: string): void {
  const from = shardedJobOf(name);
  if (from === undefined || !core.jobCount(name).exists) return;
  throw new ShardlineError(
    "failed-precondition",
    `job ${name} follows the ShardedJob ${from.name} in namespace ${from.namespace}, and is managed there: it cannot be ${what} here; change the object instead (kubectl edit shardedjob ${from.name} -n ${from.namespace}, or your GitOps repository)`,
    { field: "metadata.name", value: name },
  );
}

/** A manifest as ApplyJob checks it before anything changes: its size, its fields, its strategy. */
function checkedManifest(text: string, customStrategies: ReadonlyMap<string, unknown>, core?: ControllerCore): ParsedManifest {
  if (Buffer.byteLength(text) > MAX_MANIFEST_BYTES) {
    throw ShardlineError.invalid("manifest", `${Buffer.byteLength(text)} bytes`, `at most ${MANIFEST_LIMIT_TEXT}; ${MANIFEST_SIZE_ADVICE}`);
  }
  // A ShardedJob's job (NAMESPACE.NAME) is refused for where it is managed, not for its dot.
  if (core !== undefined) refuseManaged(core, rawName(text), "applied");
  const parsed = parseManifest(text);
  checkStrategyLoaded(parsed.spec.strategy, customStrategies);
  return parsed;
}

/** metadata.name as a manifest's text says it, before any check; "" when it says none that reads. */
function rawName(text: string): string {
  try {
    const document = readDocument(text) as { metadata?: { name?: unknown } } | null;
    return typeof document?.metadata?.name === "string" ? document.metadata.name : "";
  } catch {
    return "";
  }
}

/** Refuses jobs past --max-jobs: those of `names` not held yet must fit. */
function checkRoomFor(names: readonly string[], core: ControllerCore, maxJobs: number): void {
  const added = names.filter((name) => !core.jobCount(name).exists).length;
  const { total } = core.jobCount();
  if (added === 0 || total + added <= maxJobs) return;
  if (added === 1) throw new ShardlineError("resource-exhausted", `manifest: this controller holds ${total} jobs, its most (--max-jobs); delete one or raise the limit`);
  throw new ShardlineError(
    "resource-exhausted",
    `manifests: this controller holds ${total} jobs and ${maxJobs} at most (--max-jobs), so ${added} new ones do not fit; nothing was applied; delete some or raise the limit`,
  );
}

/** An error about one of ApplyJobs' manifests, naming it by its position (and job, when known). */
function inManifest(error: unknown, index: number, job: string | undefined): unknown {
  if (!(error instanceof ShardlineError)) return error;
  const where = `manifests[${index}]${job === undefined ? "" : ` (job ${job})`}`;
  const details = error.details.field === undefined ? error.details : { ...error.details, field: `manifests[${index}].${error.details.field}` };
  return new ShardlineError(error.code, `${where}: ${error.message}; nothing was applied`, details, { cause: error });
}

/**
 * The revision `rollout undo` goes back to by default: the rollout's stable revision while a
 * rollout is in progress or aborted (what every shard ran before it), else the newest revision
 * kept below the current one.
 */
async function previousRevision(core: ControllerCore, store: Store, name: string): Promise<number> {
  const rollout = core.rollout(name);
  if (rollout.phase === "progressing" || rollout.phase === "paused" || rollout.phase === "aborted") return rollout.stableRevision;
  const previous = (await store.listRevisions(name)).find((revision) => revision.revision < rollout.currentRevision);
  if (previous === undefined) {
    throw new ShardlineError(
      "not-found",
      `job ${name} has no revision kept before its current revision ${rollout.currentRevision} to go back to; run "shardline rollout history ${name}" to list the revisions kept`,
      { field: "to_revision", value: "0" },
    );
  }
  return previous.revision;
}

/**
 * A kept revision's manifest, parsed as an apply parses it. One that no longer passes (a
 * revision from before a stricter check) cannot be undone to: it says so, with why.
 */
function manifestOf(text: string, job: string, revision: number): ReturnType<typeof parseManifest> {
  try {
    return parseManifest(text);
  } catch (error) {
    if (!(error instanceof ShardlineError) || error.code !== "invalid-argument") throw error;
    throw new ShardlineError("failed-precondition", `revision ${revision} of job ${job} no longer passes this controller's checks: ${error.message}; apply a corrected manifest instead`, error.details, {
      cause: error,
    });
  }
}

/**
 * Lets at most `limit` tasks run at once; the others wait their turn, first come first served. A
 * waiter whose call ends (its signal aborts: cancelled, deadline passed) leaves the line.
 */
class TurnTaking {
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(
    readonly limit: number,
    name: string,
  ) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw ShardlineError.invalid(name, limit, "an integer of at least 1");
  }

  async run<T>(signal: AbortSignal, task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.limit) await this.#turn(signal);
    else this.#running++;
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      // The place passes straight to the next waiter, so no newcomer can jump the line.
      if (next === undefined) this.#running--;
      else next();
    }
  }

  #turn(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiting.splice(this.#waiting.indexOf(go), 1);
        reject(signal.reason);
      };
      const go = (): void => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      signal.throwIfAborted();
      this.#waiting.push(go);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}
