import http, { type OutgoingHttpHeaders } from "node:http";
import https from "node:https";
import { setTimeout as sleep } from "node:timers/promises";
import { ShardlineError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logging.js";
import { resolveHeaders } from "../../shared/security/env-reference.js";
import type { JobSpec } from "../../shared/manifest/job-spec.js";
import type { CoreEvent } from "../core/messages.js";
import { executionView } from "../../shared/execution-view.js";
import { traceLogFields } from "./fire-tracing.js";
import { RepeatedWarnings } from "./repeated-warnings.js";
import { executionToProto } from "./proto-mapping.js";
import type { RolloutState, Store } from "../store/store.js";

/** Delivery settings; the defaults are what a controller uses, tests shrink them. */
export interface FailureNotifierSettings {
  /** Attempts per delivery, the first included. Default 5. */
  maxAttempts?: number;
  /** The wait before the second attempt; it doubles before each next one. Default 1,000 ms. */
  initialBackoffMs?: number;
  /** How long one attempt may take, connection to the end of the response. Default 10,000 ms. */
  attemptTimeoutMs?: number;
  /** Webhook deliveries under way at once (waits between attempts included); past it the oldest is dropped. Default 100. */
  maxInFlight?: number;
}

/** What a FailureNotifier reads and where it logs. */
export interface FailureNotifierOptions extends FailureNotifierSettings {
  /** The jobs; jobRecord is undefined for a deleted one. */
  core: { jobRecord(name: string): { spec: JobSpec; rollout?: RolloutState } | undefined };
  /** Where the failed execution is read from; events are published after its commit. */
  store: Pick<Store, "getExecution">;
  logger: Logger;
}


/** The core events that may be a failure, and the states that make them one. */
const FAILURE_STATES: Readonly<Record<string, readonly string[]>> = {
  "execution.finished": ["failed", "timed-out"],
  "execution.lost": ["lost"],
  "execution.misfired": ["misfired"],
};

/** States an execution.finished event carries that are never a failure: no store read for them. */
const NOT_FAILURES = new Set(["succeeded", "cancelled"]);

/** One webhook delivery under way. */
interface Delivery {
  job: string;
  /** What it reports, for the logs: "execution ID", or "the rollout of revision N". */
  subject: string;
  /** Log fields that name it. */
  fields: Record<string, unknown>;
  controller: AbortController;
  /** Why it was abandoned, once it was. */
  abandoned?: "dropped" | "stopping";
}

/**
 * Acts on failed executions (spec.onFailure): failed or timed out, lost, or misfired. A job with
 * `onFailure.webhook` gets the execution POSTed to it as JSON, retried with exponential backoff
 * until a 2xx answer or the last attempt; any other job gets a warn line. Deliveries live only in
 * this process: a controller that stops or restarts abandons those under way, and they are not
 * resumed.
 */
export class FailureNotifier {
  readonly #options: FailureNotifierOptions;
  readonly #log: Logger;
  readonly #maxAttempts: number;
  readonly #initialBackoffMs: number;
  readonly #attemptTimeoutMs: number;
  readonly #maxInFlight: number;
  /** Webhook deliveries in the order they began, so the oldest is the first. */
  readonly #deliveries = new Set<Delivery>();
  /** Every piece of work started (store reads included), so stop() can wait for all of it. */
  readonly #tasks = new Set<Promise<void>>();
  readonly #idleWaiters: (() => void)[] = [];
  #stopped = false;
  /** Warn lines for jobs without a webhook: one cause repeating on every fire is one line a minute. */
  readonly #warnings: RepeatedWarnings;

  constructor(options: FailureNotifierOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: "failure-notifier" });
    this.#warnings = new RepeatedWarnings(this.#log);
    this.#maxAttempts = options.maxAttempts ?? 5;
    this.#initialBackoffMs = options.initialBackoffMs ?? 1_000;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? 10_000;
    this.#maxInFlight = options.maxInFlight ?? 100;
  }

  /** Give this to CoreDriver.onEvent. */
  readonly onEvent = (event: CoreEvent): void => {
    if (this.#stopped) return;
    if (event.type === "rollout.aborted" && event.job !== undefined) {
      this.#rolloutAborted(event.job, event);
      return;
    }
    const failures = FAILURE_STATES[event.type];
    const { job, executionId } = event;
    if (failures === undefined || job === undefined || executionId === undefined) return;
    if (event.type === "execution.finished" && event.state !== undefined && NOT_FAILURES.has(event.state)) return;
    // The spec as it is now: the job may be deleted or changed by the time the store answers.
    const spec = this.#options.core.jobRecord(job)?.spec;
    const task = this.#handle(job, executionId, failures, spec).catch((error: unknown) =>
      this.#log.error({ err: error, job, execution: executionId }, "could not act on a failed execution"),
    );
    this.#track(task);
  };

  /** Resolves once nothing is under way. */
  idle(): Promise<void> {
    if (this.#tasks.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Abandons every delivery under way (each logged) and resolves once nothing is left running. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const delivery of this.#deliveries) this.#abandon(delivery, "stopping");
    await this.idle();
    this.#warnings.flush();
  }

  async #handle(job: string, executionId: string, failures: readonly string[], spec: JobSpec | undefined): Promise<void> {
    const execution = await this.#options.store.getExecution(executionId);
    if (execution === undefined || !failures.includes(execution.state)) return;
    const webhook = spec?.onFailure?.webhook;
    if (webhook === undefined || this.#stopped) {
      const why = execution.error ? `: ${execution.error}` : "";
      this.#warnings.warn(
        `${job}\n${execution.state}\n${execution.error ?? ""}`,
        { job, execution: executionId, shard: execution.shard, agent: execution.agent, state: execution.state, error: execution.error, ...traceLogFields(execution.traceContext) },
        `execution ${executionId} of job ${job} ${execution.state}${why}`,
        (count) => `${count} more execution${count === 1 ? "" : "s"} of job ${job} ${execution.state} for the same reason in the last minute${why}`,
      );
      return;
    }
    await this.#send({ job, subject: `execution ${executionId}`, fields: { execution: executionId }, controller: new AbortController() }, webhook, JSON.stringify(executionView(executionToProto(execution))));
  }

  /**
   * A rollout was aborted (by an analysis gate or by hand): the job's webhook gets it as JSON
   * (`{"event": "rollout.aborted", "job", "time", "message", "stableRevision", "targetRevision",
   * "reason"}`, told apart from an execution by `event`); a job without one, a warn line.
   */
  #rolloutAborted(job: string, event: CoreEvent): void {
    const record = this.#options.core.jobRecord(job);
    const spec = record?.spec;
    const rollout = record?.rollout;
    const webhook = spec?.onFailure?.webhook;
    if (webhook === undefined) {
      this.#log.warn({ job, stableRevision: rollout?.stableRevision, targetRevision: rollout?.targetRevision, reason: rollout?.reason }, event.message);
      return;
    }
    const body = {
      event: "rollout.aborted",
      job,
      time: new Date(event.time).toISOString(),
      message: event.message,
      ...(rollout === undefined ? {} : { stableRevision: rollout.stableRevision, targetRevision: rollout.targetRevision, reason: rollout.reason ?? "" }),
    };
    const subject = `the rollout of revision ${rollout?.targetRevision ?? "?"}`;
    const task = this.#send({ job, subject, fields: { rollout: rollout?.targetRevision }, controller: new AbortController() }, webhook, JSON.stringify(body)).catch((error: unknown) =>
      this.#log.error({ err: error, job }, "could not report an aborted rollout"),
    );
    this.#track(task);
  }

  /** Delivers one webhook POST, counted among those under way (the oldest dropped past the limit). */
  async #send(delivery: Delivery, webhook: { url: string; headers: Record<string, string> }, body: string): Promise<void> {
    this.#deliveries.add(delivery);
    if (this.#deliveries.size > this.#maxInFlight) {
      const oldest = this.#deliveries.values().next().value;
      if (oldest !== undefined) this.#abandon(oldest, "dropped");
    }
    try {
      await this.#deliver(delivery, webhook, body);
    } finally {
      this.#deliveries.delete(delivery);
    }
  }

  /** POSTs until a 2xx answer, the last attempt, or the delivery is abandoned. */
  async #deliver(delivery: Delivery, webhook: { url: string; headers: Record<string, string> }, body: string): Promise<void> {
    const { signal } = delivery.controller;
    const fields = { job: delivery.job, ...delivery.fields, url: redacted(webhook.url) };
    let last = "";
    for (let attempt = 1; attempt <= this.#maxAttempts; attempt++) {
      if (attempt > 1) {
        try {
          await sleep(this.#initialBackoffMs * 2 ** (attempt - 2), undefined, { signal });
        } catch {
          return this.#abandoned(delivery, last);
        }
      }
      try {
        const headers = resolveHeaders(webhook.headers, process.env, "spec.onFailure.webhook.headers");
        const status = await post(webhook.url, headers, body, this.#attemptTimeoutMs, signal);
        if (status >= 200 && status < 300) {
          this.#log.debug({ ...fields, attempt, status }, "failure webhook delivered");
          return;
        }
        last = `HTTP ${status}`;
      } catch (error) {
        if (signal.aborted) return this.#abandoned(delivery, last);
        last = error instanceof Error ? error.message : String(error);
      }
      this.#log.debug({ ...fields, attempt, last }, "failure webhook attempt failed");
    }
    this.#log.error(
      { ...fields, attempts: this.#maxAttempts, lastStatus: last },
      `failure webhook for job ${delivery.job}, ${delivery.subject} gave up after ${this.#maxAttempts} attempts; last: ${last}`,
    );
  }

  #abandon(delivery: Delivery, why: "dropped" | "stopping"): void {
    delivery.abandoned ??= why;
    delivery.controller.abort(new ShardlineError("unavailable", why));
    // A dropped delivery frees its place at once; its task only has to notice.
    this.#deliveries.delete(delivery);
  }

  #abandoned(delivery: Delivery, last: string): void {
    const fields = { job: delivery.job, ...delivery.fields, lastStatus: last || undefined };
    if (delivery.abandoned === "dropped") {
      this.#log.error(fields, `failure webhook for job ${delivery.job}, ${delivery.subject} dropped: more than ${this.#maxInFlight} deliveries under way`);
    } else {
      this.#log.warn(fields, `failure webhook for job ${delivery.job}, ${delivery.subject} abandoned: the controller is stopping`);
    }
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    void task.finally(() => {
      this.#tasks.delete(task);
      if (this.#tasks.size === 0) for (const resolve of this.#idleWaiters.splice(0)) resolve();
    });
  }
}


/**
 * One POST on a connection of its own (nothing is left open between deliveries); resolves with
 * the status once the response has been read, rejects on a network error, the timeout or an abort.
 */
function post(url: string, headers: Record<string, string>, body: string, timeoutMs: number, signal: AbortSignal): Promise<number> {
  return new Promise((resolve, reject) => {
    const outgoing: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) outgoing[name.toLowerCase()] = value;
    // The body is always JSON of a known length, whatever the job's headers say.
    outgoing["content-type"] = "application/json";
    outgoing["content-length"] = String(Buffer.byteLength(body));
    const send = url.startsWith("https:") ? https.request : http.request;
    const request = send(url, { method: "POST", headers: outgoing, agent: false, signal });
    let timer: NodeJS.Timeout | undefined;
    const settle = (outcome: () => void): void => {
      if (timer === undefined) return;
      clearTimeout(timer);
      timer = undefined;
      outcome();
    };
    const fail = (error: Error): void => settle(() => reject(error));
    timer = setTimeout(() => {
      fail(new Error(`no complete answer within ${timeoutMs} ms`));
      request.destroy();
    }, timeoutMs);
    request.on("error", fail);
    request.on("response", (response) => {
      response.resume();
      response.on("end", () => settle(() => resolve(response.statusCode ?? 0)));
      response.on("error", fail);
      response.on("close", () => {
        if (!response.complete) fail(new Error("the connection closed before the answer ended"));
      });
    });
    request.end(body);
  });
}

/** The URL without its query or credentials, which may hold secrets, for the logs. */
function redacted(url: string): string {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname}`;
}
