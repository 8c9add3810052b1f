import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { createInterface } from "node:readline";
import type { KubeConfig } from "@kubernetes/client-node";

/** One event of a watch stream. */
export interface WatchEvent<T = KubeObject> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";
  object: T;
}

/** The part of every Kubernetes object the executor reads. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

/** A list answer: its items and the resourceVersion to watch from. */
export interface KubeList<T = KubeObject> {
  metadata: { resourceVersion?: string };
  items: T[];
}

/**
 * An error from the API server (its HTTP code, and the Status reason and message it sent), or a
 * failure to reach it (code 0). `retryable` says whether the same request may succeed later.
 */
export class KubeApiError extends Error {
  override readonly name = "KubeApiError";
  constructor(
    /** The HTTP status code; 0 when no answer came (connection refused, reset, timed out). */
    readonly code: number,
    /** The Status reason (AlreadyExists, NotFound, Expired, Forbidden...), or the network error's code. */
    readonly reason: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /**
   * True for what an API server going away and coming back looks like: no answer, 429 (it
   * sheds load), 5xx. Client errors (400 to 428) are answers and stay what they are.
   */
  get retryable(): boolean {
    return this.code === 0 || this.code === 429 || this.code >= 500;
  }
}

/** One request to the API server. */
export interface KubeRequest {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  /** The path below the server URL, e.g. /apis/batch/v1/namespaces/default/jobs. */
  path: string;
  query?: Record<string, string | number | boolean | undefined>;
  /** Sent as JSON. */
  body?: unknown;
  /** Default application/json; a PATCH says which patch it is. */
  contentType?: string;
}

/** What a KubeClient needs besides the configuration. */
export interface KubeClientOptions {
  /** A request (not a watch) that has not completed after this long fails as unanswered. Default 30 s. */
  requestTimeoutMs?: number;
}

/**
 * A small client of the Kubernetes REST API over node:http(s), authenticated by
 * @kubernetes/client-node's KubeConfig (in-cluster service account, KUBECONFIG, exec plugins,
 * client certificates: whatever the configuration says, refreshed per request).
 *
 * Not client-node's typed APIs: their serializer keeps only the fields its model knows, so a pod
 * template field newer than the library would be dropped without a word; and a watch needs its
 * own idle timeout, abort and error mapping, which client-node's Watch does not give.
 */
export class KubeClient {
  readonly #config: KubeConfig;
  readonly #requestTimeoutMs: number;
  #agent: { key: string; agent: http.Agent } | undefined;

  constructor(config: KubeConfig, options: KubeClientOptions = {}) {
    this.#config = config;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /** The API server's URL. */
  get server(): string {
    return this.#config.getCurrentCluster()?.server ?? "";
  }

  /** Sends a request and parses the JSON answer; throws KubeApiError for anything but 2xx. */
  async json<T>(request: KubeRequest): Promise<T> {
    const text = await this.text(request);
    return JSON.parse(text) as T;
  }

  /** Sends a request and returns the answer's text; throws KubeApiError for anything but 2xx. */
  async text(request: KubeRequest): Promise<string> {
    const response = await this.#send(request, this.#requestTimeoutMs);
    const body = await readAll(response, request).catch((error: unknown) => {
      throw networkError(error, request);
    });
    const code = response.statusCode ?? 0;
    if (code < 200 || code >= 300) throw statusError(code, body, request);
    return body;
  }

  /**
   * Watches a collection: `onEvent` gets each ADDED, MODIFIED, DELETED or BOOKMARK event.
   * Resolves when the server ends the stream (its timeoutSeconds ran out) or `signal` aborts;
   * rejects with KubeApiError when the watch fails: an HTTP error, an ERROR event (410 Expired:
   * the resourceVersion is too old, list again), a cut connection, or silence longer than
   * `idleTimeoutMs`.
   */
  async watch(path: string, query: KubeRequest["query"], idleTimeoutMs: number, signal: AbortSignal, onEvent: (event: WatchEvent) => void): Promise<void> {
    const request: KubeRequest = { method: "GET", path, query: { ...query, watch: 1 } };
    const response = await this.#send(request, idleTimeoutMs, signal);
    const code = response.statusCode ?? 0;
    if (code < 200 || code >= 300) throw statusError(code, await readAll(response, request).catch(() => ""), request);
    await new Promise<void>((resolve, reject) => {
      let failed = false;
      const fail = (error: KubeApiError): void => {
        if (failed) return;
        failed = true;
        response.destroy();
        reject(error);
      };
      const lines = createInterface({ input: response, crlfDelay: Infinity });
      lines.on("line", (line) => {
        if (failed || line.trim() === "") return;
        let event: { type?: string; object?: unknown };
        try {
          event = JSON.parse(line) as { type?: string; object?: unknown };
        } catch {
          fail(new KubeApiError(0, "BadWatchEvent", `the watch of ${path} sent a line that is not JSON: ${line.slice(0, 200)}`));
          return;
        }
        if (event.type === "ERROR") {
          const status = (event.object ?? {}) as { code?: number; reason?: string; message?: string };
          fail(new KubeApiError(status.code ?? 500, status.reason ?? "Unknown", `the watch of ${path} failed: ${status.message ?? "an ERROR event"}`));
          return;
        }
        if (event.type === "ADDED" || event.type === "MODIFIED" || event.type === "DELETED" || event.type === "BOOKMARK") {
          onEvent({ type: event.type, object: event.object as KubeObject });
        }
      });
      // readline passes its input's errors on: the same cut connection as the response's own.
      lines.on("error", (error) => fail(networkError(error, request)));
      response.on("error", (error) => fail(networkError(error, request)));
      // An aborted request ends with an error above; a clean end is the server's timeout.
      response.on("end", () => {
        if (!failed) resolve();
      });
      response.on("close", () => {
        if (signal.aborted) resolve();
        else if (!response.complete) fail(new KubeApiError(0, "ECONNRESET", `the watch of ${path} was cut`));
      });
    });
  }

  async #send(request: KubeRequest, timeoutMs: number, signal?: AbortSignal): Promise<IncomingMessage> {
    const url = this.#url(request);
    const body = request.body === undefined ? undefined : JSON.stringify(request.body);
    const options: https.RequestOptions = {
      method: request.method,
      headers: {
        accept: "application/json",
        ...(body === undefined ? {} : { "content-type": request.contentType ?? "application/json", "content-length": String(Buffer.byteLength(body)) }),
      },
    };
    try {
      // Credentials are applied per request: a service account token or an exec plugin's rotates.
      await this.#config.applyToHTTPSOptions(options);
    } catch (error) {
      throw new KubeApiError(0, "Config", `cannot authenticate to ${url.origin}: ${errorText(error)}`, { cause: error });
    }
    options.agent = this.#keepAliveAgent(url, options);
    return new Promise<IncomingMessage>((resolve, reject) => {
      const transport = url.protocol === "https:" ? https : http;
      const outgoing = transport.request(url, { ...options, ...(signal === undefined ? {} : { signal }) }, resolve);
      // node:http measures socket inactivity: for a watch, the longest silence allowed.
      outgoing.setTimeout(timeoutMs, () => outgoing.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: "ETIMEDOUT" })));
      outgoing.on("error", (error) => reject(networkError(error, request)));
      outgoing.end(body);
    });
  }

  #url(request: KubeRequest): URL {
    const server = this.server;
    if (server === "") throw new KubeApiError(0, "Config", "the Kubernetes configuration names no cluster");
    const url = new URL(server.replace(/\/+$/, "") + request.path);
    for (const [key, value] of Object.entries(request.query ?? {})) if (value !== undefined) url.searchParams.set(key, String(value));
    return url;
  }

  /**
   * One keep-alive agent with the configuration's TLS settings, instead of the fresh agent
   * client-node makes per call: executions come in bursts, and a TLS handshake per request
   * would cost more than the request. A proxy agent is used as it is.
   */
  #keepAliveAgent(url: URL, options: https.RequestOptions): http.Agent | undefined {
    if (this.#config.getCurrentCluster()?.proxyUrl) return options.agent as http.Agent | undefined;
    if (url.protocol !== "https:") {
      if (this.#agent?.key !== "http:") this.#agent = { key: "http:", agent: new http.Agent({ keepAlive: true }) };
      return this.#agent.agent;
    }
    const { ca, cert, key, rejectUnauthorized, servername } = options;
    const fingerprint = [ca, cert, key, rejectUnauthorized, servername].map((part) => String(part)).join("|");
    if (this.#agent?.key !== fingerprint) {
      this.#agent?.agent.destroy();
      this.#agent = { key: fingerprint, agent: new https.Agent({ keepAlive: true, ca, cert, key, servername, ...(rejectUnauthorized === undefined ? {} : { rejectUnauthorized }) }) };
    }
    return this.#agent.agent;
  }

  /** Closes idle connections. */
  close(): void {
    this.#agent?.agent.destroy();
    this.#agent = undefined;
  }
}

/** Builds the path of a namespaced collection or object, e.g. jobsPath("ns") or podPath("ns", "p", "log"). */
export const paths = {
  jobs: (namespace: string): string => `/apis/batch/v1/namespaces/${encodeURIComponent(namespace)}/jobs`,
  job: (namespace: string, name: string): string => `/apis/batch/v1/namespaces/${encodeURIComponent(namespace)}/jobs/${encodeURIComponent(name)}`,
  pods: (namespace: string): string => `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`,
  podLog: (namespace: string, name: string): string => `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}/log`,
  node: (name: string): string => `/api/v1/nodes/${encodeURIComponent(name)}`,
};

async function readAll(response: IncomingMessage, request: KubeRequest): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  if (!response.complete) throw new KubeApiError(0, "ECONNRESET", `${request.method} ${request.path}: the answer was cut`);
  return Buffer.concat(chunks).toString("utf8");
}

/** The KubeApiError for a non-2xx answer, from the Status the API server sends. */
function statusError(code: number, body: string, request: KubeRequest): KubeApiError {
  let status: { reason?: string; message?: string } = {};
  try {
    status = JSON.parse(body) as typeof status;
  } catch {
    status = { message: body.slice(0, 500) };
  }
  const message = status.message || `HTTP ${code}`;
  return new KubeApiError(code, status.reason ?? `HTTP${code}`, `${request.method} ${request.path}: ${code} ${status.reason ?? ""}: ${message}`.replace(" : ", ": "));
}

function networkError(error: unknown, request: KubeRequest): KubeApiError {
  if (error instanceof KubeApiError) return error;
  const code = (error as NodeJS.ErrnoException).code ?? (error as Error).name;
  return new KubeApiError(0, code ?? "Error", `${request.method} ${request.path}: no answer from the API server: ${errorText(error)}`, { cause: error });
}

function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as NodeJS.ErrnoException).code;
  return code && !error.message.includes(code) ? `${code}: ${error.message}` : error.message;
}
