import http, { type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import type { ExecutionContext, HttpExecutor as HttpConfig } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import {
  RunReports,
  executionPayload,
  type AbortState,
  type ExecutionRun,
  type Executor,
  type ReportOptions,
  type StopState,
} from "../execution-run.js";
import { OutputTail, trimLineBreaks, withTail } from "../output-tail.js";
import { resolveHeaders } from "../../../shared/security/env-reference.js";

/** What an HttpExecutor needs from the agent. */
export interface HttpExecutorOptions extends ReportOptions {
  /** The agent's id, for the default JSON body. */
  agentId: string;
}

/** The header that names the execution, so an endpoint can tell a retry from a new fire. */
export const EXECUTION_ID_HEADER = "x-shardline-execution-id";

/**
 * The header that carries the execution's fencing token in decimal (Shardline-Fencing-Token;
 * node:http writes names in lower case, and HTTP header names are case-insensitive): an endpoint
 * refuses a request whose token is below the greatest it has acted on for the shard
 * (docs/fencing.md).
 */
export const FENCING_TOKEN_HEADER = "shardline-fencing-token";

/**
 * The header that carries the job revision the execution runs, in decimal (Shardline-Revision):
 * while a rollout is under way an endpoint can tell the two revisions' calls apart.
 */
export const REVISION_HEADER = "shardline-revision";

/**
 * Runs executions as one HTTP request each: spec.http's method, URL, headers and body (the
 * execution context as JSON when the body is empty), with the execution's id, fencing token and
 * revision in headers of their own. A 2xx status is SUCCEEDED with the tail of
 * the response body as the result; any other status is FAILED (redirects are not followed).
 *
 * Each request gets a connection of its own, so its two timeouts mean what they say: the
 * connect timeout runs from the request until the TCP connection is up (name lookup included),
 * the read timeout is the longest silence allowed once connected, until the response has fully
 * arrived (a TLS handshake counts as reading). A timeout of 0 is none. The execution's own timeout, a cancel, or a
 * fence abort the request, and the state is reported at once: once the socket is destroyed,
 * nothing of the request is left running here.
 */
export class HttpExecutor implements Executor {
  readonly #options: HttpExecutorOptions;

  constructor(options: HttpExecutorOptions) {
    this.#options = options;
  }

  /** Prepares one execution; call start() on the result to run it. */
  create(context: ExecutionContext): ExecutionRun {
    return new HttpRun(context, this.#options);
  }
}

class HttpRun implements ExecutionRun {
  readonly #reports: RunReports;
  readonly #body = new OutputTail();
  #request: ClientRequest | undefined;
  #started = false;
  #timeoutTimer: NodeJS.Timeout | undefined;
  #connectTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly context: ExecutionContext,
    private readonly options: HttpExecutorOptions,
  ) {
    this.#reports = new RunReports(context, options);
  }

  get finished(): boolean {
    return this.#reports.finished;
  }

  start(traceContext: Readonly<Record<string, string>> = this.context.traceContext): void {
    if (this.#started || this.#reports.finished) return;
    this.#started = true;
    const config = this.context.http;
    let url: URL;
    try {
      url = new URL(config?.url ?? "");
    } catch {
      this.#finish(ExecutionState.FAILED, { error: `the execution names no valid http or https URL: ${JSON.stringify(config?.url ?? "")}` });
      return;
    }
    if (config === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
      this.#finish(ExecutionState.FAILED, { error: `the execution names no valid http or https URL: ${JSON.stringify(url.href)}` });
      return;
    }
    // Never the query or credentials: they may hold secrets, and errors end up in the history.
    const target = `${config.method || "POST"} ${url.origin}${url.pathname}`;
    let outgoing: { body: string; headers: OutgoingHttpHeaders };
    try {
      outgoing = this.#outgoing(config, traceContext);
    } catch (error) {
      this.#finish(ExecutionState.FAILED, { error: errorText(error) });
      return;
    }
    const { body, headers } = outgoing;

    this.#reports.running();
    const { timeoutMs } = this.context;
    if (timeoutMs > 0) {
      this.#timeoutTimer = setTimeout(() => this.#abort(ExecutionState.TIMED_OUT, `timed out after ${timeoutMs} ms`), timeoutMs);
    }
    const send = url.protocol === "https:" ? https.request : http.request;
    let request: ClientRequest;
    try {
      // agent: false: a fresh connection per execution, so the connect timeout measures a connect.
      request = send(url, { method: config.method || "POST", headers, agent: false });
    } catch (error) {
      // Headers Node refuses (a line break in a value, say) throw here.
      this.#finish(ExecutionState.FAILED, { error: `${target} could not be sent: ${errorText(error)}` });
      return;
    }
    this.#request = request;
    request.on("socket", (socket) => this.#onSocket(socket, config, target));
    if (config.readTimeoutMs > 0) {
      // node:http arms this on the socket once it is connected: any silence longer ends the request.
      request.setTimeout(config.readTimeoutMs, () => {
        this.#finish(ExecutionState.FAILED, { error: `read timeout: ${target} sent nothing for ${config.readTimeoutMs} ms` });
        request.destroy();
      });
    }
    request.on("response", (response) => this.#onResponse(response, target));
    request.on("error", (error) => this.#finish(ExecutionState.FAILED, { error: `network error: ${target} failed: ${errorText(error)}` }));
    request.end(body);
  }

  stop(state: StopState, reason: string): void {
    this.#abort(state, reason);
  }

  #abort(state: AbortState, reason: string): void {
    if (this.#reports.finished) return;
    this.#finish(state, { error: reason });
    this.#request?.destroy();
  }

  /** Arms the connect timeout until the connection is up. */
  #onSocket(socket: Socket, config: HttpConfig, target: string): void {
    if (!socket.connecting || config.connectTimeoutMs === 0) return;
    this.#connectTimer = setTimeout(() => {
      this.#finish(ExecutionState.FAILED, { error: `connect timeout: no connection for ${target} within ${config.connectTimeoutMs} ms` });
      this.#request?.destroy();
    }, config.connectTimeoutMs);
    socket.once("connect", () => clearTimeout(this.#connectTimer));
  }

  #onResponse(response: IncomingMessage, target: string): void {
    const status = response.statusCode ?? 0;
    response.on("data", (chunk: Buffer) => this.#body.push(chunk));
    response.on("end", () => {
      const max = this.#reports.maxBytes;
      if (status >= 200 && status < 300) this.#finish(ExecutionState.SUCCEEDED, { result: trimLineBreaks(this.#body.text(max)) });
      else this.#finish(ExecutionState.FAILED, { error: withTail(`HTTP ${status}`, this.#body.text(), max) });
    });
    // A connection cut mid-body: the response closes without having completed.
    response.on("error", (error) => this.#finish(ExecutionState.FAILED, { error: `network error: ${target} failed during the response: ${errorText(error)}` }));
    response.on("close", () => {
      if (!response.complete) this.#finish(ExecutionState.FAILED, { error: `network error: ${target} closed the connection before the response ended` });
    });
  }

  /** The body and headers to send: the context as JSON when the spec gives no body. */
  #outgoing(config: HttpConfig, traceContext: Readonly<Record<string, string>>): { body: string; headers: OutgoingHttpHeaders } {
    const headers: OutgoingHttpHeaders = {};
    // ${env:NAME} values come from this agent's environment, so no secret need sit in the manifest.
    for (const [name, value] of Object.entries(resolveHeaders(config.headers, process.env, "spec.http.headers"))) headers[name.toLowerCase()] = value;
    let body = config.body;
    if (body === "") {
      body = executionPayload(this.context, this.options.agentId);
      headers["content-type"] ??= "application/json";
    }
    headers["content-length"] = String(Buffer.byteLength(body));
    // After the spec's headers: a manifest cannot pass itself off as another execution or owner.
    headers[EXECUTION_ID_HEADER] = this.context.executionId;
    headers[FENCING_TOKEN_HEADER] = String(this.context.fencingToken);
    headers[REVISION_HEADER] = String(this.context.revision);
    // W3C trace context: the endpoint's spans become children of the execution's span.
    const { traceparent, tracestate } = traceContext;
    if (traceparent) headers.traceparent = traceparent;
    if (traceparent && tracestate) headers.tracestate = tracestate;
    return { body, headers };
  }

  #finish(state: ExecutionState, fields: { error?: string; result?: string }): void {
    clearTimeout(this.#timeoutTimer);
    clearTimeout(this.#connectTimer);
    this.#reports.finish(state, fields);
  }
}

function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as NodeJS.ErrnoException).code;
  return code && !error.message.includes(code) ? `${code}: ${error.message}` : error.message;
}
