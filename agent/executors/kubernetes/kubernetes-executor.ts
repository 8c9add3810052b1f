import { fromJsonString } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { ExecutionContextSchema, type ExecutionContext } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { attachTraceContext } from "../../../shared/telemetry/log-fields.js";
import { Backoff } from "../../runtime/backoff.js";
import { RunReports, runLogFields, type AbortState, type ExecutionRun, type Executor, type ReportOptions, type StopState } from "../execution-run.js";
import { tailUtf8, trimLineBreaks, withTail } from "../output-tail.js";
import { buildJob, containerSummary, jobNameFor, jobOutcome, unreportedSelector, type JobOutcome, type KubernetesRunConfig, type OwnerPod } from "./job-manifest.js";
import { ANNOTATIONS, LABELS } from "./job-names.js";
import { JobWatch } from "./job-watch.js";
import { KubeApiError, paths, type KubeClient, type KubeList, type KubeObject } from "./kube-client.js";
import { podStart } from "./pod-start.js";

/** What a KubernetesExecutor needs from the agent. */
export interface KubernetesExecutorOptions extends ReportOptions {
  /** The agent's id: on every Job it creates (label and annotation), and how a restarted agent finds them. */
  agentId: string;
  /** Parent of each execution's logger. */
  logger: Logger;
  /** The API server, through the agent's Kubernetes configuration. */
  client: KubeClient;
  /** Where the Jobs are created: the agent's namespace. */
  namespace: string;
  /** The spec.kubernetes of an execution; undefined when it has none (the execution fails). */
  configOf: (context: ExecutionContext) => KubernetesRunConfig | undefined;
  /** The agent's own pod: the owner of its Jobs, so that they go when it goes. Default none. */
  owner?: OwnerPod;
  /**
   * How long a stopped execution (timeout, cancel, fence, drain) waits for its deleted Job's pods
   * to be gone before it reports anyway. Default STOP_WAIT_MS.
   */
  stopWaitMs?: number;
  /** Bounds of the jittered waits between retries of a request the API server did not answer. Default 200 ms to 10 s. */
  retry?: { initialMs: number; maxMs: number };
  /** How long each watch of the Jobs stays open (see JobWatchOptions.watchSeconds). */
  watchSeconds?: { min: number; max: number };
  /** A number in [0, 1) for jitter. Default Math.random. */
  random?: () => number;
  /** How often the pods of a Job not started yet are looked at (see startTimeoutSeconds). Default 5 s. */
  startCheckMs?: number;
}

/**
 * The longest a stop waits for the Job and its pods to be gone, by default: a pod's default
 * termination grace (30 s). The agent's pod needs this much more than its drain grace to stop.
 */
export const STOP_WAIT_MS = 30_000;

/** How many lines of the pod's log are fetched for the tail; the report keeps their last bytes. */
const LOG_TAIL_LINES = 200;

/**
 * Runs executions as Kubernetes batch/v1 Jobs, made from the job's spec.kubernetes pod template
 * in the agent's namespace.
 *
 * Each execution's Job has a name derived from the execution id (see jobNameOf), labels for the
 * job, shard, fire time, attempt and agent, and the execution context in its containers'
 * environment (the SHARDLINE_* variables a script gets, and TRACEPARENT). The run reports RUNNING
 * once the Job exists, then follows it through one shared watch of the agent's Jobs: a Complete
 * Job is SUCCEEDED with the tail of its pod's log as the result; a Failed one is FAILED with the
 * Job's reason, the container's exit and the log tail. A pod that cannot start (an image that
 * cannot be pulled, a missing Secret, no node for it) fails the run after the config's
 * startTimeoutSeconds, with the reason, or at once when it never could (InvalidImageName).
 * A timeout, cancel, fence or drain deletes
 * the Job with Foreground propagation and reports once it and its pods are gone (at most
 * stopWaitMs later), as a script's stop waits for its processes. A create answered 409 (the Job
 * already exists: the same execution dispatched again, or an agent restarted) adopts the Job
 * instead. recover() lists the Jobs a previous process of this agent created and did not report,
 * so that the agent can run them again: their start adopts the Job (a finished one reports its
 * outcome at once).
 *
 * While the API server cannot be reached, requests are retried with backoff, and the watch
 * resumes from its last resourceVersion (or lists again after 410 Gone); a Job that ended
 * meanwhile is reported once the API server answers again.
 */
export class KubernetesExecutor implements Executor {
  readonly #options: KubernetesExecutorOptions;
  readonly #watch: JobWatch;
  /** Jobs recover() found, by execution id, until their run starts (or stops). */
  readonly #recovered = new Map<string, KubeObject>();

  constructor(options: KubernetesExecutorOptions) {
    this.#options = options;
    this.#watch = new JobWatch({
      client: options.client,
      namespace: options.namespace,
      selector: unreportedSelector(options.agentId),
      logger: options.logger.child({ executor: "kubernetes", namespace: options.namespace }),
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.watchSeconds ? { watchSeconds: options.watchSeconds } : {}),
      ...(options.random ? { random: options.random } : {}),
    });
  }

  /** The namespace Jobs are created in. */
  get namespace(): string {
    return this.#options.namespace;
  }

  /** Prepares one execution; call start() on the result to run it. */
  create(context: ExecutionContext): ExecutionRun {
    return new KubernetesRun(context, this.#options, this.#watch, this.#recovered);
  }

  /**
   * The executions whose Jobs a previous process of this agent created and did not report:
   * their contexts, oldest first. Create and start a run for each (as for a dispatch, under the
   * assignment the context names) to adopt its Job: it reports RUNNING, then the Job's outcome.
   * A run stopped instead (the shard is no longer this agent's) deletes the Job. Throws
   * KubeApiError when the Jobs cannot be listed.
   */
  async recover(): Promise<ExecutionContext[]> {
    const { client, namespace, agentId, logger } = this.#options;
    const list = await client.json<KubeList>({ method: "GET", path: paths.jobs(namespace), query: { labelSelector: unreportedSelector(agentId) } });
    const found: { context: ExecutionContext; created: string }[] = [];
    for (const job of list.items) {
      const annotations = job.metadata.annotations ?? {};
      // The agent label may be a hash of a long id: the annotation says whose Job it is.
      if (annotations[ANNOTATIONS.agentId] !== agentId) continue;
      let context: ExecutionContext;
      try {
        context = fromJsonString(ExecutionContextSchema, annotations[ANNOTATIONS.executionContext] ?? "");
      } catch (error) {
        logger.warn({ err: error, job: job.metadata.name }, "a Job of this agent carries no readable execution context; left alone");
        continue;
      }
      if (context.executionId !== annotations[ANNOTATIONS.executionId] || jobNameFor(context) !== job.metadata.name) {
        logger.warn({ job: job.metadata.name }, "a Job of this agent names another execution than its context; left alone");
        continue;
      }
      this.#recovered.set(context.executionId, job);
      found.push({ context, created: job.metadata.creationTimestamp ?? "" });
    }
    found.sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
    return found.map((entry) => entry.context);
  }

  /** Stops watching; runs still going are no longer followed. */
  close(): void {
    this.#watch.close();
  }
}

/** A run ends by deleting its Job when aborted, or when its pod cannot start (FAILED). */
type EndState = AbortState | ExecutionState.FAILED;

/** A stop under way: the state it will be reported with, and why. */
interface Stopping {
  state: EndState;
  reason: string;
  /** The log tail read when the stop began, while the pods still exist. */
  tail: Promise<string>;
  deadline: NodeJS.Timeout | undefined;
}

class KubernetesRun implements ExecutionRun {
  readonly #options: KubernetesExecutorOptions;
  readonly #watch: JobWatch;
  readonly #recovered: Map<string, KubeObject>;
  readonly #log: Logger;
  readonly #reports: RunReports;
  readonly #backoff: Backoff;
  readonly #name: string;
  #started = false;
  /** How long the Job's pod may take to start a container; 0 for no limit. */
  #startTimeoutMs = 0;
  /** The Job exists and is this execution's: created, or adopted. */
  #adopted: KubeObject | undefined;
  /** The outcome is known and its report is being put together: a stop no longer changes it. */
  #concluding = false;
  #stopping: Stopping | undefined;
  #unfollow: (() => void) | undefined;
  #timeoutTimer: NodeJS.Timeout | undefined;
  /** The next look at the pods of a Job not started yet. */
  #startTimer: NodeJS.Timeout | undefined;
  /** Wakes a retry wait, so a stop need not wait for it. */
  #wake: (() => void) | undefined;

  constructor(
    readonly context: ExecutionContext,
    options: KubernetesExecutorOptions,
    watch: JobWatch,
    recovered: Map<string, KubeObject>,
  ) {
    this.#options = options;
    this.#watch = watch;
    this.#recovered = recovered;
    this.#name = jobNameFor(context);
    this.#log = options.logger.child({ ...runLogFields(context), kubernetesJob: this.#name });
    this.#reports = new RunReports(context, options);
    this.#backoff = new Backoff({ ...(options.retry ?? { initialMs: 200, maxMs: 10_000 }), ...(options.random ? { random: options.random } : {}) });
  }

  get finished(): boolean {
    return this.#reports.finished;
  }

  start(traceContext: Readonly<Record<string, string>> = this.context.traceContext): void {
    if (this.#started || this.#stopping || this.#reports.finished) return;
    this.#started = true;
    // Lines logged outside the execution's span (a timeout, a stop) still name its trace.
    attachTraceContext(this.#log, traceContext);
    const recovered = this.#recovered.get(this.context.executionId);
    this.#recovered.delete(this.context.executionId);
    let job: KubeObject | undefined;
    const config = this.#options.configOf(this.context);
    this.#startTimeoutMs = (config?.startTimeoutSeconds ?? 0) * 1000;
    if (recovered === undefined) {
      if (config === undefined) {
        this.#finish(ExecutionState.FAILED, { error: "the execution names no Kubernetes pod template (spec.kubernetes)" });
        return;
      }
      try {
        job = buildJob(this.context, config, { agentId: this.#options.agentId, namespace: this.#options.namespace, traceContext, ...(this.#options.owner ? { owner: this.#options.owner } : {}) });
      } catch (error) {
        this.#finish(ExecutionState.FAILED, { error: `cannot make Job ${this.#name}: ${errorText(error)}` });
        return;
      }
    }
    this.#unfollow = this.#watch.follow(this.#name, (seen) => this.#observe(seen));
    const { timeoutMs } = this.context;
    if (timeoutMs > 0) {
      // An adopted Job's time runs from its creation, not from this process's start.
      const created = recovered === undefined ? Date.now() : Date.parse(recovered.metadata.creationTimestamp ?? "") || Date.now();
      const remaining = Math.max(0, created + timeoutMs - Date.now());
      this.#timeoutTimer = setTimeout(() => this.#abort(ExecutionState.TIMED_OUT, `timed out after ${timeoutMs} ms`), remaining);
    }
    void this.#create(job);
  }

  stop(state: StopState, reason: string): void {
    this.#abort(state, reason);
  }

  /** Creates the Job (or, with `job` undefined, reads the one that exists), retrying while the API server does not answer. */
  async #create(job: KubeObject | undefined): Promise<void> {
    const { client, namespace } = this.#options;
    let toCreate = job;
    while (!this.#reports.finished) {
      // A stop while creating: a create sent earlier may have made the Job without its answer arriving.
      if (this.#stopping) return this.#deleteJob();
      try {
        if (toCreate !== undefined) {
          const created = await client.json<KubeObject>({ method: "POST", path: paths.jobs(namespace), body: toCreate });
          this.#log.info("created the Kubernetes Job");
          return this.#adopt(created, true);
        }
        const existing = await client.json<KubeObject>({ method: "GET", path: paths.job(namespace, this.#name) });
        const owner = existing.metadata.annotations?.[ANNOTATIONS.executionId];
        if (owner !== this.context.executionId) {
          const whose = owner === undefined ? "was not made by Shardline" : `runs another execution (${owner})`;
          this.#finish(ExecutionState.FAILED, { error: `a Job named ${this.#name} already exists in namespace ${namespace} and ${whose}` });
          return;
        }
        this.#log.info("adopted the Kubernetes Job, which already existed");
        return this.#adopt(existing, false);
      } catch (error) {
        if (!(error instanceof KubeApiError)) throw error;
        // Stopped meanwhile: whatever the answer, the next round deletes what may exist.
        if (this.#stopping) continue;
        if (error.code === 409 && toCreate !== undefined) {
          // Already created: by this execution before (an agent restarted, a dispatch repeated), if its annotation says so.
          toCreate = undefined;
          continue;
        }
        if (error.code === 404 && toCreate === undefined) {
          if (job === undefined) {
            this.#finish(ExecutionState.FAILED, { error: `the Job ${this.#name} this agent created before it restarted is gone` });
            return;
          }
          toCreate = job;
          continue;
        }
        if (!error.retryable) {
          const hint = error.code === 403 ? ` (the agent's service account needs create, get, list, watch, delete and patch on jobs in namespace ${namespace})` : "";
          this.#finish(ExecutionState.FAILED, { error: `Kubernetes refused the Job ${this.#name}: ${error.message}${hint}` });
          return;
        }
        await this.#retryWait(error, "the API server did not answer; retrying");
      }
    }
  }

  /** The Job exists and is this execution's: RUNNING, then its state as the watch sees it. */
  #adopt(job: KubeObject, created: boolean): void {
    if (this.#reports.finished) return;
    this.#backoff.reset();
    this.#watch.observe(job);
    this.#adopted = job;
    const since = created ? undefined : Date.parse(job.metadata.creationTimestamp ?? "");
    this.#reports.running(since === undefined || Number.isNaN(since) ? undefined : since);
    if (this.#stopping) return void this.#deleteJob();
    // The watch may have seen a later state of it before this answer arrived.
    const latest = this.#watch.get(this.#name);
    this.#observe(latest !== undefined && latest.metadata.uid === job.metadata.uid ? latest : job);
    // An adopted Job's pod has had since the Job's creation to start, as with the timeout.
    void this.#checkStart(since === undefined || Number.isNaN(since) ? Date.now() : since, "");
  }

  /**
   * Looks at the Job's pods until a container starts: an image that can never be pulled fails
   * the execution at once, and a pod still not started startTimeoutSeconds after the Job was
   * made (ImagePullBackOff, a missing Secret, unschedulable) fails it with the reason, deleting
   * the Job as a timeout does. Kubernetes itself would leave such a pod Pending for ever.
   */
  async #checkStart(since: number, reported: string): Promise<void> {
    if (this.#reports.finished || this.#stopping || this.#concluding) return;
    const { client, namespace, startCheckMs = 5_000 } = this.#options;
    let why = reported;
    try {
      const pods = await client.json<KubeList>({ method: "GET", path: paths.pods(namespace), query: { labelSelector: `${LABELS.execution}=${this.#name}` } });
      if (this.#reports.finished || this.#stopping || this.#concluding) return;
      const start = podStart(pods.items);
      if (start.kind === "started") return;
      if (start.kind === "hopeless") return this.#abort(ExecutionState.FAILED, `the Job's pod can never start: ${start.why}`);
      if (start.why !== "" && start.why !== why) this.#log.warn({ why: start.why }, "the Kubernetes Job's pod is not starting");
      why = start.why || why;
      if (this.#startTimeoutMs > 0 && Date.now() - since >= this.#startTimeoutMs) {
        const seconds = Math.round(this.#startTimeoutMs / 1000);
        return this.#abort(ExecutionState.FAILED, `the Job's pod did not start within ${seconds} s (spec.kubernetes.startTimeoutSeconds): ${why || "it stayed Pending"}`);
      }
    } catch (error) {
      if (!(error instanceof KubeApiError)) throw error;
      this.#log.warn({ err: error }, "could not list the Job's pods to see whether it started; looking again later");
    }
    const untilLimit = this.#startTimeoutMs > 0 ? Math.max(0, since + this.#startTimeoutMs - Date.now()) : startCheckMs;
    this.#startTimer = setTimeout(() => void this.#checkStart(since, why), Math.min(startCheckMs, untilLimit));
  }

  /** A state of the Job, or undefined once it is gone. */
  #observe(job: KubeObject | undefined): void {
    if (this.#reports.finished || this.#adopted === undefined || this.#concluding) return;
    if (job !== undefined && job.metadata.uid !== undefined && this.#adopted.metadata.uid !== undefined && job.metadata.uid !== this.#adopted.metadata.uid) return;
    const stopping = this.#stopping;
    if (stopping !== undefined) {
      if (job === undefined) void this.#stopConfirmed(stopping, "");
      return;
    }
    if (job === undefined || job.metadata.deletionTimestamp !== undefined) {
      this.#finish(ExecutionState.FAILED, { error: `the Job ${this.#name} was deleted before it finished, by someone other than this agent` });
      return;
    }
    this.#adopted = job;
    const outcome = jobOutcome(job);
    if (outcome !== undefined) void this.#conclude(job, outcome);
  }

  /** The Job ended: reports it with the pod's log tail, then marks the Job reported. */
  async #conclude(job: KubeObject, outcome: JobOutcome): Promise<void> {
    this.#concluding = true;
    clearTimeout(this.#timeoutTimer);
    clearTimeout(this.#startTimer);
    const container = job.metadata.annotations?.[ANNOTATIONS.logContainer] ?? "";
    const pod = await this.#pod(outcome.state === "succeeded" ? "Succeeded" : "Failed").catch((error: unknown) => {
      this.#log.warn({ err: error }, "could not list the Job's pods for its log");
      return undefined;
    });
    const logContainer = container || firstContainer(pod);
    const tail = pod === undefined ? "" : await this.#logTail(pod, logContainer);
    // The pod's log tail is the execution's log too: the Job's pod writes it, not the agent.
    this.#reports.log.write("pod", tail);
    const max = this.#reports.maxBytes;
    if (outcome.state === "succeeded") {
      this.#finish(ExecutionState.SUCCEEDED, { result: trimLineBreaks(tail) });
    } else {
      const summary = containerSummary(pod, logContainer);
      const why = `${outcome.reason}${outcome.message ? `: ${outcome.message}` : ""}`;
      this.#finish(ExecutionState.FAILED, { error: withTail(`the Job ${this.#name} failed: ${why}${summary ? `; ${summary}` : ""}`, tail, max) });
    }
    await this.#markReported();
  }

  /** Starts stopping; the report waits until the Job is gone. The first stop wins; an outcome already known wins over it. */
  #abort(state: EndState, reason: string): void {
    if (this.#reports.finished || this.#stopping || this.#concluding) return;
    clearTimeout(this.#timeoutTimer);
    clearTimeout(this.#startTimer);
    const recovered = !this.#started && this.#recovered.has(this.context.executionId);
    if (!this.#started && !recovered) {
      // Never started: there is no Job.
      this.#finish(state, { error: reason });
      return;
    }
    this.#recovered.delete(this.context.executionId);
    this.#log.info({ reason }, "stopping: deleting the Kubernetes Job and its pods");
    const waitMs = this.#options.stopWaitMs ?? STOP_WAIT_MS;
    const stopping: Stopping = { state, reason, tail: this.#stopTail(), deadline: undefined };
    this.#stopping = stopping;
    stopping.deadline = setTimeout(() => void this.#stopConfirmed(stopping, `; it was not seen gone within ${waitMs} ms`), waitMs);
    this.#wake?.();
    if (recovered) {
      // Stopped before it was started again: the Job from before the restart is still there.
      this.#unfollow = this.#watch.follow(this.#name, (seen) => this.#observe(seen));
      this.#adopted = { metadata: { name: this.#name } };
      void this.#deleteJob();
    } else if (this.#adopted !== undefined) {
      void this.#deleteJob();
    }
    // Otherwise the create loop, woken above, deletes what it may have created.
  }

  /** Deletes the Job with Foreground propagation, retrying while the API server does not answer. */
  async #deleteJob(): Promise<void> {
    const { client, namespace } = this.#options;
    const stopping = this.#stopping!;
    while (!this.#reports.finished) {
      try {
        await client.json({ method: "DELETE", path: paths.job(namespace, this.#name), query: { propagationPolicy: "Foreground" } });
        // Foreground: the Job stays, with a deletionTimestamp, until its pods are gone; the watch
        // tells when. A create whose answer was lost made it: follow it from here.
        this.#adopted ??= { metadata: { name: this.#name } };
        return;
      } catch (error) {
        if (!(error instanceof KubeApiError)) throw error;
        if (error.code === 404) return void this.#stopConfirmed(stopping, "");
        if (!error.retryable) {
          return void this.#stopConfirmed(stopping, `; the Job ${this.#name} could not be deleted: ${error.message}`);
        }
        await this.#retryWait(error, "could not delete the Job; retrying");
      }
    }
  }

  async #stopConfirmed(stopping: Stopping, note: string): Promise<void> {
    if (this.#reports.finished || this.#concluding) return;
    this.#concluding = true;
    // The tail was read while the pods were there; a read still under way gets a moment more.
    const tail = await Promise.race([stopping.tail, new Promise<string>((resolve) => setTimeout(() => resolve(""), 1_000))]);
    if (note !== "") this.#log.warn({ namespace: this.#options.namespace }, `the Kubernetes Job may still be there${note}`);
    const deleted = note === "" ? `; the Job ${this.#name} and its pods were deleted` : note;
    this.#finish(stopping.state, { error: withTail(`${stopping.reason}${deleted}`, tail, this.#reports.maxBytes) });
  }

  /** The log tail at the start of a stop, "" when there is none to read. */
  async #stopTail(): Promise<string> {
    try {
      const pod = await this.#pod(undefined);
      if (pod === undefined) return "";
      const container = this.#adopted?.metadata.annotations?.[ANNOTATIONS.logContainer] || firstContainer(pod);
      return await this.#logTail(pod, container);
    } catch {
      return "";
    }
  }

  /** The Job's latest pod, preferring one in `phase`. */
  async #pod(phase: "Succeeded" | "Failed" | undefined): Promise<KubeObject | undefined> {
    const { client, namespace } = this.#options;
    const pods = await client.json<KubeList>({ method: "GET", path: paths.pods(namespace), query: { labelSelector: `${LABELS.execution}=${this.#name}` } });
    const newestFirst = [...pods.items].sort((a, b) => ((a.metadata.creationTimestamp ?? "") < (b.metadata.creationTimestamp ?? "") ? 1 : -1));
    return newestFirst.find((pod) => (pod.status as { phase?: string } | undefined)?.phase === phase) ?? newestFirst[0];
  }

  /** The last bytes of a container's log; "" (and a warning) when it cannot be read. */
  async #logTail(pod: KubeObject, container: string): Promise<string> {
    try {
      const text = await this.#options.client.text({
        method: "GET",
        path: paths.podLog(this.#options.namespace, pod.metadata.name),
        query: { ...(container ? { container } : {}), tailLines: LOG_TAIL_LINES },
      });
      return tailUtf8(text, this.#reports.maxBytes);
    } catch (error) {
      this.#log.warn({ err: error, pod: pod.metadata.name }, "could not read the pod's log");
      return "";
    }
  }

  /** Labels the Job reported, so a restarted agent does not adopt it again; the TTL then removes it. */
  async #markReported(): Promise<void> {
    const { client, namespace } = this.#options;
    for (let attempt = 1; ; attempt++) {
      try {
        await client.json({
          method: "PATCH",
          path: paths.job(namespace, this.#name),
          contentType: "application/merge-patch+json",
          body: { metadata: { labels: { [LABELS.reported]: "true" } } },
        });
        return;
      } catch (error) {
        if (error instanceof KubeApiError && error.code === 404) return;
        if (attempt >= 3 || !(error instanceof KubeApiError) || !error.retryable) {
          this.#log.warn({ err: error }, "could not label the Job reported; a restart of this agent would report it again");
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, this.#backoff.next()));
      }
    }
  }

  /** Waits before a retry; a stop cuts the wait short. */
  async #retryWait(error: KubeApiError, message: string): Promise<void> {
    const waitMs = this.#backoff.next();
    this.#log.warn({ err: error, waitMs }, message);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
  }

  #finish(state: ExecutionState, fields: { error?: string; result?: string }): void {
    clearTimeout(this.#timeoutTimer);
    clearTimeout(this.#startTimer);
    clearTimeout(this.#stopping?.deadline);
    this.#unfollow?.();
    this.#unfollow = undefined;
    this.#reports.finish(state, fields);
  }
}

function firstContainer(pod: KubeObject | undefined): string {
  return ((pod?.spec?.containers ?? []) as { name?: string }[])[0]?.name ?? "";
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
