import { randomUUID } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** A Kubernetes object as the fake stores it: plain JSON. */
export type KubeObject = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: KubeMetadata;
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
};

export interface KubeMetadata {
  name: string;
  namespace: string;
  uid: string;
  resourceVersion: string;
  creationTimestamp: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }[];
  deletionTimestamp?: string;
  finalizers?: string[];
  [field: string]: unknown;
}

/** One request the fake answered, for tests to check what the client asked for. */
export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** The request's JSON body, when it had one. */
  body?: unknown;
  /** When it arrived, Unix ms. */
  at: number;
  /** The bearer token it came with: which client (kubeconfig) made it. */
  token: string;
}

type Resource = "jobs" | "pods" | "shardedjobs";
type EventType = "ADDED" | "MODIFIED" | "DELETED";

interface StoredEvent {
  rv: number;
  resource: Resource;
  type: EventType;
  object: KubeObject;
  /** The object before a MODIFIED, to turn it into ADDED or DELETED for selectors it enters or leaves. */
  previous?: KubeObject;
}

interface Watcher {
  resource: Resource;
  namespace: string;
  selector: Requirement[];
  response: ServerResponse;
  timer: NodeJS.Timeout | undefined;
}

/** One term of a label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`. */
interface Requirement {
  key: string;
  op: "=" | "!=" | "exists" | "!exists";
  value?: string;
}

/** How a test finishes a pod. */
export interface PodEnd {
  /** The log of the container (replaces what was written). Default: what was written so far. */
  log?: string;
  /** The container's exit code. Default 0 for success, 1 for failure. */
  exitCode?: number;
  /** The container's termination reason. Default Completed for success, Error for failure. */
  containerReason?: string;
}

/** How a test fails a Job. */
export interface JobFailure extends PodEnd {
  /** The Job's Failed condition's reason. Default BackoffLimitExceeded. */
  reason?: string;
  /** Its message. Default "Job has reached the specified backoff limit". */
  message?: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/**
 * A FAKE Kubernetes API server. No real one can run here (no cluster, no kube-apiserver binary,
 * no container engine), so the Kubernetes executor's tests talk to this one, over real HTTP on
 * 127.0.0.1, through @kubernetes/client-node's KubeConfig like any cluster.
 *
 * It implements only the endpoints the executor uses, with the API server's semantics for them:
 * Jobs (create, get, list, watch, merge-patch, delete with propagationPolicy) and pods (list,
 * watch, get, log). Every object and list carries a resourceVersion from one counter; creating
 * an existing name answers 409 AlreadyExists; watches stream ADDED/MODIFIED/DELETED from a
 * resourceVersion (objects entering or leaving a label selector are ADDED or DELETED for it),
 * and one older than the kept history gets the 410 Expired error event; deleting a Job with
 * Background or Foreground propagation deletes its pods (Foreground keeps the Job, with a
 * deletionTimestamp, until they are gone), Orphan leaves them.
 *
 * It runs no containers and no Job controller: a test moves Jobs and pods through their states
 * with startPod(), writeLog(), succeed() and fail(). stop() and restart() take the server away
 * and bring it back on the same port with the same objects (and, like a restarted API server,
 * without the event history: a watch resumed from before gets 410).
 */
export class FakeKubeApiServer {
  readonly requests: RecordedRequest[] = [];
  readonly #objects: Record<Resource, Map<string, KubeObject>> = { jobs: new Map(), pods: new Map(), shardedjobs: new Map() };
  /** Events (events.k8s.io/v1) posted, as created. */
  readonly events: KubeObject[] = [];
  readonly #logs = new Map<string, Map<string, string>>();
  /** Nodes by name (cluster-scoped; only GET is served). */
  readonly #nodes = new Map<string, KubeObject>();
  /** While set, list answers wait for it (holdLists). */
  #listGate: Promise<void> | undefined;
  /** Resources the token may not read or write: requests to them get 403 Forbidden. */
  readonly #forbidden = new Set<string>();
  readonly #watchers = new Set<Watcher>();
  readonly #sockets = new Set<Socket>();
  #history: StoredEvent[] = [];
  /** Watches from a resourceVersion below this one get 410: that part of the history is gone. */
  #oldestRv = 1;
  #rv = 1;
  #server: Server | undefined;
  #port = 0;
  #podSuffix = 0;
  /** How long a deleted pod stays, with its deletionTimestamp, before it is gone. */
  podTerminationMs = 0;
  readonly #token: string;
  /** More tokens it takes (kubeconfig's `token`), so that tests tell clients apart by the requests' tokens. */
  readonly #otherTokens = new Set<string>();
  readonly #maxHistory: number;

  private constructor(options: { token: string; maxHistory: number }) {
    this.#token = options.token;
    this.#maxHistory = options.maxHistory;
  }

  /**
   * Starts the fake on 127.0.0.1 and a free port. `token` is the bearer token it requires
   * (default a random one; kubeconfig() carries it). `maxHistory` is how many events it keeps
   * for watches to resume from.
   */
  static async start(options: { token?: string; maxHistory?: number } = {}): Promise<FakeKubeApiServer> {
    const fake = new FakeKubeApiServer({ token: options.token ?? randomUUID(), maxHistory: options.maxHistory ?? 10_000 });
    await fake.#listen(0);
    return fake;
  }

  /** The server's URL, e.g. http://127.0.0.1:40123. */
  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** The current resourceVersion. */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Open watch streams, for a test waiting for a client to (re)establish one. */
  get watchCount(): number {
    return this.#watchers.size;
  }

  /**
   * A kubeconfig for this server, as YAML, with `namespace` as the context's namespace. Written
   * to `path` when given (for KUBECONFIG).
   */
  async kubeconfig(namespace: string, path?: string, token = this.#token): Promise<string> {
    if (token !== this.#token) this.#otherTokens.add(token);
    const text = [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      // Plain HTTP on loopback: client-node accepts an http server only with TLS verification off.
      `- name: fake\n  cluster: {server: "${this.url}", insecure-skip-tls-verify: true}`,
      `users:\n- name: fake\n  user: {token: "${token}"}`,
      `contexts:\n- name: fake\n  context: {cluster: fake, user: fake, namespace: ${namespace}}`,
      "current-context: fake",
      "",
    ].join("\n");
    if (path !== undefined) await writeFile(path, text);
    return text;
  }

  /** Adds or replaces a Node with these labels. */
  setNode(name: string, labels: Record<string, string>): void {
    this.#nodes.set(name, {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name, namespace: "", uid: randomUUID(), resourceVersion: String(++this.#rv), creationTimestamp: timestamp(), labels: { ...labels } },
    });
  }

  /** From now on, requests for `resource` (e.g. "nodes") are answered 403, as RBAC would. */
  forbid(resource: string): void {
    this.#forbidden.add(resource);
  }

  /**
   * Creates or updates a ShardedJob as kubectl apply would: a new one gets generation 1; a
   * change of its spec (or labels) bumps the generation; its status is kept.
   */
  applyShardedJob(namespace: string, manifest: { metadata: { name: string; labels?: Record<string, string> }; spec: Record<string, unknown> }): KubeObject {
    const key = `${namespace}/${manifest.metadata.name}`;
    const stored = this.#objects.shardedjobs.get(key);
    if (stored === undefined) {
      const created: KubeObject = {
        apiVersion: "shardline.dev/v1",
        kind: "ShardedJob",
        metadata: { name: manifest.metadata.name, namespace, uid: randomUUID(), resourceVersion: "", creationTimestamp: timestamp(), generation: 1, ...(manifest.metadata.labels === undefined ? {} : { labels: { ...manifest.metadata.labels } }) },
        spec: clone(manifest.spec),
      };
      return this.#write("shardedjobs", created, "ADDED");
    }
    if (JSON.stringify(stored.spec) === JSON.stringify(manifest.spec) && JSON.stringify(stored.metadata.labels ?? {}) === JSON.stringify(manifest.metadata.labels ?? {})) return clone(stored);
    const generation = (stored.metadata.generation ?? 1) + 1;
    return this.#write("shardedjobs", { ...stored, metadata: { ...stored.metadata, generation, labels: { ...manifest.metadata.labels } }, spec: clone(manifest.spec) }, "MODIFIED");
  }

  /** Deletes a ShardedJob as kubectl delete would: at once without finalizers, else marked deleting until they are removed. */
  deleteShardedJob(namespace: string, name: string): void {
    const stored = this.#objects.shardedjobs.get(`${namespace}/${name}`);
    if (stored === undefined) return;
    if ((stored.metadata.finalizers ?? []).length === 0) this.#remove("shardedjobs", stored);
    else if (stored.metadata.deletionTimestamp === undefined) this.#write("shardedjobs", { ...stored, metadata: { ...stored.metadata, deletionTimestamp: timestamp() } }, "MODIFIED");
  }

  /** A stored ShardedJob, or undefined. */
  shardedJob(namespace: string, name: string): KubeObject | undefined {
    return clone(this.#objects.shardedjobs.get(`${namespace}/${name}`));
  }

  /**
   * A client's write to a ShardedJob: a merge patch (or replace) of the object (its spec,
   * metadata.labels and metadata.finalizers; removing the last finalizer of an object being
   * deleted deletes it), or of its status subresource (status only, generation unchanged).
   */
  #writeShardedJob(response: ServerResponse, request: IncomingMessage, method: string, namespace: string, name: string, status: boolean, body: unknown): void {
    const stored = this.#objects.shardedjobs.get(`${namespace}/${name}`);
    if (stored === undefined) return sendStatus(response, 404, "NotFound", `shardedjobs.shardline.dev "${name}" not found`, { name, resource: "shardedjobs" });
    let next: KubeObject;
    if (method === "PATCH") {
      if (request.headers["content-type"] !== "application/merge-patch+json") {
        return sendStatus(response, 415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json");
      }
      next = mergePatch(clone(stored), body) as KubeObject;
    } else if (method === "PUT") {
      const given = body as KubeObject;
      if (given.metadata?.resourceVersion !== undefined && given.metadata.resourceVersion !== stored.metadata.resourceVersion) {
        return sendStatus(response, 409, "Conflict", `Operation cannot be fulfilled on shardedjobs.shardline.dev "${name}": the object has been modified; please apply your changes to the latest version and try again`);
      }
      next = clone(given);
    } else {
      return sendStatus(response, 405, "MethodNotAllowed", `${method} is not supported on shardedjobs/${name}`);
    }
    // The status subresource changes the status only; the object's endpoint never changes it.
    const written: KubeObject = status
      ? { ...clone(stored), status: clone(next.status ?? {}) }
      : {
          ...clone(stored),
          spec: clone(next.spec ?? {}),
          metadata: { ...clone(stored.metadata), labels: clone(next.metadata?.labels ?? {}), finalizers: clone(next.metadata?.finalizers ?? []) },
        };
    if (!status && JSON.stringify(written.spec) !== JSON.stringify(stored.spec)) written.metadata.generation = (stored.metadata.generation ?? 1) + 1;
    if (written.metadata.deletionTimestamp !== undefined && (written.metadata.finalizers ?? []).length === 0) {
      this.#remove("shardedjobs", written);
      return sendJson(response, 200, written);
    }
    sendJson(response, 200, this.#write("shardedjobs", written, "MODIFIED"));
  }

  /** A stored Job, or undefined. */
  job(namespace: string, name: string): KubeObject | undefined {
    return clone(this.#objects.jobs.get(`${namespace}/${name}`));
  }

  /** Every stored Job in the namespace, by name. */
  jobs(namespace: string): KubeObject[] {
    return this.#list("jobs", namespace, []);
  }

  /** Every stored pod in the namespace, by name. */
  pods(namespace: string): KubeObject[] {
    return this.#list("pods", namespace, []);
  }

  /** The pods a Job made, oldest first. */
  podsOf(namespace: string, job: string): KubeObject[] {
    return this.pods(namespace)
      .filter((pod) => pod.metadata.labels?.["job-name"] === job)
      .sort((a, b) => (a.metadata.creationTimestamp < b.metadata.creationTimestamp ? -1 : 1));
  }

  /** Takes the server away: every connection is cut, nothing answers. Objects are kept. */
  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    for (const watcher of this.#watchers) clearTimeout(watcher.timer);
    this.#watchers.clear();
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Brings a stopped server back on the same port with the same objects. Like a restarted API
   * server's watch cache, it keeps no events from before (`keepHistory` false): a watch resumed
   * from an older resourceVersion gets 410 Expired and must list again.
   */
  async restart(options: { keepHistory?: boolean } = {}): Promise<void> {
    if (!options.keepHistory) this.compact();
    await this.#listen(this.#port);
  }

  /** Drops the event history, as etcd compaction does: watches from before now get 410. */
  compact(): void {
    this.#history = [];
    this.#oldestRv = this.#rv;
  }

  /** Ends every watch stream cleanly, as the API server does when a watch's timeout runs out. */
  endWatches(): void {
    for (const watcher of [...this.#watchers]) this.#closeWatcher(watcher);
  }

  /**
   * Starts a pod for the Job (as its controller would) and marks the Job active. Returns the
   * pod's name. By default its containers run; `waiting` leaves them Pending with that reason
   * (ImagePullBackOff, InvalidImageName...), `unschedulable` leaves the pod unscheduled.
   */
  startPod(namespace: string, jobName: string, options: { waiting?: { reason: string; message?: string }; unschedulable?: string } = {}): string {
    const job = this.#objects.jobs.get(`${namespace}/${jobName}`);
    if (job === undefined) throw new Error(`fake: no Job ${namespace}/${jobName}`);
    const template = (job.spec?.template ?? {}) as { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: Record<string, unknown> };
    const name = `${jobName}-${(this.#podSuffix++).toString(36).padStart(5, "x")}`;
    const containers = ((template.spec?.containers ?? []) as { name: string }[]).map((c) => c.name);
    const now = timestamp();
    const pod: KubeObject = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name,
        namespace,
        uid: randomUUID(),
        resourceVersion: "",
        creationTimestamp: now,
        labels: { ...template.metadata?.labels },
        annotations: { ...template.metadata?.annotations },
        ownerReferences: [{ apiVersion: "batch/v1", kind: "Job", name: jobName, uid: job.metadata.uid, controller: true, blockOwnerDeletion: true }],
      },
      spec: clone(template.spec ?? {}),
      status: podStatus(containers, now, options),
    };
    this.#write("pods", pod, "ADDED");
    const status: Record<string, unknown> = { ...job.status, active: ((job.status?.active as number | undefined) ?? 0) + 1 };
    status.startTime ??= now;
    this.#write("jobs", { ...job, status }, "MODIFIED");
    return name;
  }

  /** Lets a pod started Pending (startPod's waiting or unschedulable) run its containers. */
  runPod(namespace: string, pod: string): void {
    const stored = this.#objects.pods.get(`${namespace}/${pod}`);
    if (stored === undefined) throw new Error(`fake: no pod ${namespace}/${pod}`);
    this.#write("pods", { ...stored, status: podStatus(containerNames(stored), timestamp(), {}) }, "MODIFIED");
  }

  /** Appends to a container's log (the first container's when none is named). */
  writeLog(namespace: string, pod: string, text: string, container?: string): void {
    const stored = this.#objects.pods.get(`${namespace}/${pod}`);
    if (stored === undefined) throw new Error(`fake: no pod ${namespace}/${pod}`);
    const name = container ?? containerNames(stored)[0]!;
    const logs = this.#logs.get(`${namespace}/${pod}`) ?? new Map<string, string>();
    logs.set(name, (logs.get(name) ?? "") + text);
    this.#logs.set(`${namespace}/${pod}`, logs);
  }

  /** Ends the Job's running pod (one is started first if none runs) with success, and completes the Job. */
  succeed(namespace: string, jobName: string, end: PodEnd = {}): void {
    this.#endPod(namespace, jobName, "Succeeded", { exitCode: 0, containerReason: "Completed", ...end });
    const job = this.#objects.jobs.get(`${namespace}/${jobName}`)!;
    const now = timestamp();
    const status = {
      ...job.status,
      active: 0,
      ready: 0,
      succeeded: ((job.status?.succeeded as number | undefined) ?? 0) + 1,
      completionTime: now,
      conditions: [
        { type: "SuccessCriteriaMet", status: "True", reason: "CompletionsReached", message: "Reached expected number of succeeded pods", lastTransitionTime: now },
        { type: "Complete", status: "True", reason: "CompletionsReached", message: "Reached expected number of succeeded pods", lastTransitionTime: now },
      ],
    };
    this.#write("jobs", { ...job, status }, "MODIFIED");
  }

  /** Ends the Job's running pod (one is started first if none runs) with failure, and fails the Job. */
  fail(namespace: string, jobName: string, failure: JobFailure = {}): void {
    this.#endPod(namespace, jobName, "Failed", { exitCode: 1, containerReason: "Error", ...failure });
    const job = this.#objects.jobs.get(`${namespace}/${jobName}`)!;
    const now = timestamp();
    const reason = failure.reason ?? "BackoffLimitExceeded";
    const message = failure.message ?? "Job has reached the specified backoff limit";
    const status = {
      ...job.status,
      active: 0,
      ready: 0,
      failed: ((job.status?.failed as number | undefined) ?? 0) + 1,
      conditions: [
        { type: "FailureTarget", status: "True", reason, message, lastTransitionTime: now },
        { type: "Failed", status: "True", reason, message, lastTransitionTime: now },
      ],
    };
    this.#write("jobs", { ...job, status }, "MODIFIED");
  }

  /** Deletes a Job as someone else would (kubectl delete, Background propagation). */
  deleteJob(namespace: string, name: string): void {
    const job = this.#objects.jobs.get(`${namespace}/${name}`);
    if (job !== undefined) this.#deleteJob(job, "Background");
  }

  #endPod(namespace: string, jobName: string, phase: "Succeeded" | "Failed", end: Required<Omit<PodEnd, "log">> & { log?: string }): void {
    let pod = this.podsOf(namespace, jobName).find((p) => (p.status as { phase?: string }).phase === "Running");
    if (pod === undefined) pod = this.#objects.pods.get(`${namespace}/${this.startPod(namespace, jobName)}`)!;
    const key = `${namespace}/${pod.metadata.name}`;
    if (end.log !== undefined) {
      const logs = new Map<string, string>();
      logs.set(containerNames(pod)[0]!, end.log);
      this.#logs.set(key, logs);
    }
    const stored = this.#objects.pods.get(key)!;
    const now = timestamp();
    const status = {
      ...stored.status,
      phase,
      containerStatuses: containerNames(stored).map((name, index) => ({
        name,
        ready: false,
        restartCount: 0,
        state: { terminated: { exitCode: index === 0 ? end.exitCode : 0, reason: index === 0 ? end.containerReason : "Completed", startedAt: now, finishedAt: now } },
      })),
    };
    this.#write("pods", { ...stored, status }, "MODIFIED");
    const job = this.#objects.jobs.get(`${namespace}/${jobName}`)!;
    this.#write("jobs", { ...job, status: { ...job.status, active: Math.max(0, ((job.status?.active as number | undefined) ?? 1) - 1) } }, "MODIFIED");
  }

  async #listen(port: number): Promise<void> {
    const server = createServer((request, response) => {
      this.#handle(request, response).catch((error: unknown) => {
        if (!response.headersSent) sendStatus(response, 500, "InternalError", String(error));
      });
    });
    server.on("connection", (socket) => {
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    this.#server = server;
    this.#port = (server.address() as AddressInfo).port;
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "http://fake");
    const query = Object.fromEntries(url.searchParams);
    const text = await readBody(request);
    let body: unknown;
    if (text !== "") {
      try {
        body = JSON.parse(text);
      } catch {
        return sendStatus(response, 400, "BadRequest", "the request body is not JSON");
      }
    }
    const method = request.method ?? "GET";
    const token = (request.headers.authorization ?? "").replace(/^Bearer /, "");
    this.requests.push({ method, path: url.pathname, query, ...(body === undefined ? {} : { body }), at: Date.now(), token });
    if (token !== this.#token && !this.#otherTokens.has(token)) return sendStatus(response, 401, "Unauthorized", "Unauthorized");

    const node = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname);
    const resourceOf = node ? "nodes" : (matchRoute(url.pathname)?.resource ?? "");
    if (this.#forbidden.has(resourceOf)) {
      return sendStatus(response, 403, "Forbidden", `${resourceOf} is forbidden: User "system:serviceaccount:shardline:shardline-agent" cannot ${method.toLowerCase()} resource "${resourceOf}"`);
    }
    if (node) {
      if (method !== "GET") return sendStatus(response, 405, "MethodNotAllowed", `${method} is not supported on nodes`);
      const name = decodeURIComponent(node[1]!);
      const stored = this.#nodes.get(name);
      if (stored === undefined) return sendStatus(response, 404, "NotFound", `nodes "${name}" not found`);
      return sendJson(response, 200, stored);
    }
    const eventsPath = /^\/apis\/events\.k8s\.io\/v1\/namespaces\/([^/]+)\/events$/.exec(url.pathname);
    if (eventsPath && method === "POST") {
      const event = body as KubeObject;
      const stored = { ...clone(event), metadata: { ...clone(event.metadata), namespace: eventsPath[1]!, uid: randomUUID(), resourceVersion: String(++this.#rv), creationTimestamp: timestamp() } };
      this.events.push(stored);
      return sendJson(response, 201, stored);
    }
    const route = matchRoute(url.pathname);
    if (route === undefined) return sendStatus(response, 404, "NotFound", "the server could not find the requested resource");
    const { resource, namespace, name, log } = route;
    if (resource === "shardedjobs" && name !== undefined && method !== "GET") return this.#writeShardedJob(response, request, method, namespace, name, route.status === true, body);
    const watch = query.watch === "1" || query.watch === "true";
    if (log) {
      if (method !== "GET") return sendStatus(response, 405, "MethodNotAllowed", `${method} is not supported on pods/log`);
      return this.#podLog(response, namespace, name!, query);
    }
    if (name === undefined) {
      if (method === "GET" && watch) return this.#watch(response, resource, namespace, query);
      if (method === "GET") return this.#sendList(response, resource, namespace, query);
      if (method === "POST" && resource === "jobs") return this.#createJob(response, namespace, body);
      return sendStatus(response, 405, "MethodNotAllowed", `${method} is not supported on ${resource}`);
    }
    const stored = this.#objects[resource].get(`${namespace}/${name}`);
    if (stored === undefined) return sendStatus(response, 404, "NotFound", `${resourceName(resource)} "${name}" not found`, { name, resource });
    if (method === "GET") return sendJson(response, 200, stored);
    if (method === "DELETE" && resource === "jobs") {
      const policy = query.propagationPolicy ?? (body as { propagationPolicy?: string } | undefined)?.propagationPolicy ?? "Orphan";
      if (policy !== "Orphan" && policy !== "Background" && policy !== "Foreground") {
        return sendStatus(response, 400, "BadRequest", `propagationPolicy: Unsupported value: "${policy}": supported values: "Foreground", "Background", "Orphan"`);
      }
      const after = this.#deleteJob(stored, policy);
      if (after !== undefined) return sendJson(response, 200, after);
      return sendJson(response, 200, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", details: { name, group: "batch", kind: "jobs", uid: stored.metadata.uid } });
    }
    if (method === "PATCH" && resource === "jobs") {
      if (request.headers["content-type"] !== "application/merge-patch+json") {
        return sendStatus(response, 415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json`);
      }
      const patched = mergePatch(clone(stored), body) as KubeObject;
      patched.metadata = { ...patched.metadata, name: stored.metadata.name, namespace, uid: stored.metadata.uid, creationTimestamp: stored.metadata.creationTimestamp };
      const invalid = invalidLabels(patched.metadata.labels);
      if (invalid !== undefined) return sendStatus(response, 422, "Invalid", `Job.batch "${name}" is invalid: ${invalid}`);
      return sendJson(response, 200, this.#write("jobs", patched, "MODIFIED"));
    }
    return sendStatus(response, 405, "MethodNotAllowed", `${method} is not supported on ${resource}/${name}`);
  }

  #createJob(response: ServerResponse, namespace: string, body: unknown): void {
    const job = body as KubeObject | undefined;
    if (job?.kind !== "Job" || job.apiVersion !== "batch/v1") return sendStatus(response, 400, "BadRequest", "the object is not a batch/v1 Job");
    const name = job.metadata?.name;
    const invalid = (field: string, message: string) => sendStatus(response, 422, "Invalid", `Job.batch "${String(name)}" is invalid: ${field}: ${message}`);
    if (job.metadata.namespace !== undefined && job.metadata.namespace !== namespace) {
      return sendStatus(response, 400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
    }
    if (typeof name !== "string" || name.length > 63 || !DNS_LABEL.test(name)) return invalid("metadata.name", `Invalid value: "${String(name)}": must be a DNS-1123 label of at most 63 characters`);
    const labels = invalidLabels(job.metadata.labels);
    if (labels !== undefined) return invalid("metadata.labels", labels);
    const template = job.spec?.template as { metadata?: { labels?: Record<string, string> }; spec?: { containers?: unknown[]; restartPolicy?: string } } | undefined;
    const podLabels = invalidLabels(template?.metadata?.labels);
    if (podLabels !== undefined) return invalid("spec.template.metadata.labels", podLabels);
    if (!Array.isArray(template?.spec?.containers) || template.spec.containers.length === 0) return invalid("spec.template.spec.containers", "Required value");
    const restartPolicy = template.spec.restartPolicy;
    if (restartPolicy !== "Never" && restartPolicy !== "OnFailure") {
      return invalid("spec.template.spec.restartPolicy", `Unsupported value: "${String(restartPolicy)}": supported values: "OnFailure", "Never"`);
    }
    if (this.#objects.jobs.has(`${namespace}/${name}`)) {
      return sendStatus(response, 409, "AlreadyExists", `jobs.batch "${name}" already exists`, { name, resource: "jobs" });
    }
    const uid = randomUUID();
    const controllerLabels = { "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name };
    const created: KubeObject = {
      ...clone(job),
      metadata: { ...clone(job.metadata), name, namespace, uid, resourceVersion: "", creationTimestamp: timestamp(), generation: 1 },
      spec: {
        backoffLimit: 6,
        completions: 1,
        parallelism: 1,
        ...clone(job.spec),
        selector: { matchLabels: { "batch.kubernetes.io/controller-uid": uid } },
        template: { ...clone(template), metadata: { ...clone(template.metadata), labels: { ...template.metadata?.labels, ...controllerLabels } } },
      },
      status: {},
    };
    sendJson(response, 201, this.#write("jobs", created, "ADDED"));
  }

  /** Deletes a Job with a propagation policy; returns the Job when it stays (Foreground) until its pods are gone. */
  #deleteJob(job: KubeObject, policy: "Orphan" | "Background" | "Foreground"): KubeObject | undefined {
    const { namespace, name } = job.metadata;
    const pods = this.podsOf(namespace, name);
    if (policy === "Foreground") {
      if (job.metadata.deletionTimestamp !== undefined) return job;
      const deleting = this.#write("jobs", { ...job, metadata: { ...job.metadata, deletionTimestamp: timestamp(), finalizers: ["foregroundDeletion"] } }, "MODIFIED");
      // The garbage collector works after the request returns.
      setImmediate(() => {
        for (const pod of pods) this.#deletePod(pod);
        this.#removeJobWhenPodsAreGone(namespace, name);
      });
      return deleting;
    }
    this.#remove("jobs", job);
    if (policy === "Background") setImmediate(() => pods.forEach((pod) => this.#deletePod(pod)));
    else for (const pod of pods) this.#write("pods", { ...pod, metadata: { ...pod.metadata, ownerReferences: [] } }, "MODIFIED");
    return undefined;
  }

  #removeJobWhenPodsAreGone(namespace: string, name: string): void {
    const job = this.#objects.jobs.get(`${namespace}/${name}`);
    if (job === undefined || !this.#server) return;
    if (this.podsOf(namespace, name).length > 0) {
      setTimeout(() => this.#removeJobWhenPodsAreGone(namespace, name), 5);
      return;
    }
    this.#remove("jobs", job);
  }

  /** Graceful pod deletion: a deletionTimestamp first, then gone after podTerminationMs. */
  #deletePod(pod: KubeObject): void {
    const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
    const stored = this.#objects.pods.get(key);
    if (stored === undefined || stored.metadata.deletionTimestamp !== undefined) return;
    this.#write("pods", { ...stored, metadata: { ...stored.metadata, deletionTimestamp: timestamp() } }, "MODIFIED");
    setTimeout(() => {
      const current = this.#objects.pods.get(key);
      if (current !== undefined) {
        this.#remove("pods", current);
        this.#logs.delete(key);
      }
    }, this.podTerminationMs);
  }

  #podLog(response: ServerResponse, namespace: string, name: string, query: Record<string, string>): void {
    const pod = this.#objects.pods.get(`${namespace}/${name}`);
    if (pod === undefined) return sendStatus(response, 404, "NotFound", `pods "${name}" not found`, { name, resource: "pods" });
    const names = containerNames(pod);
    const container = query.container ?? (names.length === 1 ? names[0] : undefined);
    if (container === undefined) {
      return sendStatus(response, 400, "BadRequest", `a container name must be specified for pod ${name}, choose one of: [${names.join(" ")}]`);
    }
    if (!names.includes(container)) return sendStatus(response, 400, "BadRequest", `container ${container} is not valid for pod ${name}`);
    let text = this.#logs.get(`${namespace}/${name}`)?.get(container) ?? "";
    if (query.tailLines !== undefined) {
      const lines = text.split(/(?<=\n)/);
      text = lines.slice(Math.max(0, lines.length - Number(query.tailLines))).join("");
    }
    if (query.limitBytes !== undefined) text = Buffer.from(text).subarray(0, Number(query.limitBytes)).toString();
    response.writeHead(200, { "content-type": "text/plain" }).end(text);
  }

  #sendList(response: ServerResponse, resource: Resource, namespace: string, query: Record<string, string>): void {
    const selector = parseSelector(query.labelSelector ?? "");
    if (selector === undefined) return sendStatus(response, 400, "BadRequest", `unable to parse requirement: ${query.labelSelector}`);
    const kind = resource === "jobs" ? "JobList" : resource === "pods" ? "PodList" : "ShardedJobList";
    const apiVersion = resource === "jobs" ? "batch/v1" : resource === "pods" ? "v1" : "shardline.dev/v1";
    // The answer is what the store holds now, even when held back and sent later.
    const list = { kind, apiVersion, metadata: { resourceVersion: String(this.#rv) }, items: this.#list(resource, namespace, selector) };
    const gate = this.#listGate;
    if (gate === undefined) return sendJson(response, 200, list);
    void gate.then(() => sendJson(response, 200, list));
  }

  /**
   * Holds back the answers to lists from now until the returned release is called, each answer
   * being the state at its request: a slow API server, whose list arrives after later writes.
   */
  holdLists(): () => void {
    let release!: () => void;
    this.#listGate = new Promise<void>((resolve) => (release = resolve));
    return () => {
      this.#listGate = undefined;
      release();
    };
  }

  #watch(response: ServerResponse, resource: Resource, namespace: string, query: Record<string, string>): void {
    const selector = parseSelector(query.labelSelector ?? "");
    if (selector === undefined) return sendStatus(response, 400, "BadRequest", `unable to parse requirement: ${query.labelSelector}`);
    const from = query.resourceVersion === undefined || query.resourceVersion === "" || query.resourceVersion === "0" ? undefined : Number(query.resourceVersion);
    response.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    if (from !== undefined && (!Number.isSafeInteger(from) || from < this.#oldestRv)) {
      // What the API server sends for a resourceVersion whose events were compacted away.
      const status = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: `too old resource version: ${query.resourceVersion} (${this.#oldestRv})`, reason: "Expired", code: 410 };
      response.end(`${JSON.stringify({ type: "ERROR", object: status })}\n`);
      return;
    }
    const watcher: Watcher = { resource, namespace, selector, response, timer: undefined };
    if (from === undefined) {
      // No resourceVersion: the current objects, as ADDED, then what changes.
      for (const object of this.#list(resource, namespace, selector)) response.write(`${JSON.stringify({ type: "ADDED", object })}\n`);
    } else {
      for (const event of this.#history) if (event.rv > from) this.#send(watcher, event);
    }
    this.#watchers.add(watcher);
    // A bookmark at once, as the API server sends them now and then to a watch that asked: the
    // resourceVersion a watch resumed from now would start at.
    if (query.allowWatchBookmarks === "true" && resource === "shardedjobs") {
      response.write(`${JSON.stringify({ type: "BOOKMARK", object: { kind: "ShardedJob", apiVersion: "shardline.dev/v1", metadata: { resourceVersion: String(this.#rv) } } })}\n`);
    }
    const timeout = Number(query.timeoutSeconds ?? 0);
    if (timeout > 0) watcher.timer = setTimeout(() => this.#closeWatcher(watcher), timeout * 1000);
    // The response's close, not the request's: the request was read to its end before this, and
    // an IncomingMessage read to its end no longer says when its connection goes (a client killed).
    response.on("close", () => {
      clearTimeout(watcher.timer);
      this.#watchers.delete(watcher);
    });
  }

  #closeWatcher(watcher: Watcher): void {
    clearTimeout(watcher.timer);
    this.#watchers.delete(watcher);
    watcher.response.end();
  }

  /** Sends one event to a watcher, as the event its selector sees. */
  #send(watcher: Watcher, event: StoredEvent): void {
    if (event.resource !== watcher.resource || (watcher.namespace !== "" && event.object.metadata.namespace !== watcher.namespace)) return;
    const now = matches(watcher.selector, event.object.metadata.labels);
    let type: EventType | undefined = now ? event.type : undefined;
    if (event.type === "MODIFIED" && event.previous !== undefined) {
      const before = matches(watcher.selector, event.previous.metadata.labels);
      if (before && !now) type = "DELETED";
      else if (!before && now) type = "ADDED";
    }
    if (type !== undefined) watcher.response.write(`${JSON.stringify({ type, object: event.object })}\n`);
  }

  /** Stores an object under a new resourceVersion and tells the watchers. */
  #write(resource: Resource, object: KubeObject, type: EventType): KubeObject {
    const key = `${object.metadata.namespace}/${object.metadata.name}`;
    const previous = this.#objects[resource].get(key);
    const stored = clone(object);
    stored.metadata.resourceVersion = String(++this.#rv);
    this.#objects[resource].set(key, stored);
    this.#publish({ rv: this.#rv, resource, type, object: clone(stored), ...(previous === undefined ? {} : { previous }) });
    return clone(stored);
  }

  #remove(resource: Resource, object: KubeObject): void {
    const key = `${object.metadata.namespace}/${object.metadata.name}`;
    const stored = this.#objects[resource].get(key);
    if (stored === undefined) return;
    this.#objects[resource].delete(key);
    const gone = clone(stored);
    gone.metadata.resourceVersion = String(++this.#rv);
    this.#publish({ rv: this.#rv, resource, type: "DELETED", object: gone });
  }

  #publish(event: StoredEvent): void {
    this.#history.push(event);
    if (this.#history.length > this.#maxHistory) {
      this.#history.shift();
      this.#oldestRv = this.#history[0]!.rv - 1;
    }
    for (const watcher of this.#watchers) this.#send(watcher, event);
  }

  #list(resource: Resource, namespace: string, selector: Requirement[]): KubeObject[] {
    return [...this.#objects[resource].values()]
      .filter((object) => (namespace === "" || object.metadata.namespace === namespace) && matches(selector, object.metadata.labels))
      .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1))
      .map(clone);
  }
}

function matchRoute(path: string): { resource: Resource; namespace: string; name?: string; log: boolean; status?: boolean } | undefined {
  const all = /^\/apis\/shardline\.dev\/v1\/shardedjobs$/.exec(path);
  // Every namespace's: namespace "" (a list or a watch only).
  if (all) return { resource: "shardedjobs", namespace: "", log: false };
  const sharded = /^\/apis\/shardline\.dev\/v1\/namespaces\/([^/]+)\/shardedjobs(?:\/([^/]+)(\/status)?)?$/.exec(path);
  if (sharded) return { resource: "shardedjobs", namespace: sharded[1]!, ...(sharded[2] === undefined ? {} : { name: sharded[2] }), log: false, status: sharded[3] !== undefined };
  const jobs = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs(?:\/([^/]+))?$/.exec(path);
  if (jobs) return { resource: "jobs", namespace: jobs[1]!, ...(jobs[2] === undefined ? {} : { name: jobs[2] }), log: false };
  const pods = /^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+)(\/log)?)?$/.exec(path);
  if (pods) return { resource: "pods", namespace: pods[1]!, ...(pods[2] === undefined ? {} : { name: pods[2] }), log: pods[3] !== undefined };
  return undefined;
}

/** Parses the equality-based label selectors the fake supports; undefined when malformed. */
function parseSelector(text: string): Requirement[] | undefined {
  if (text.trim() === "") return [];
  const requirements: Requirement[] = [];
  for (const part of text.split(",").map((p) => p.trim())) {
    const match = /^(!)?([^=!\s]+)(?:\s*(==|=|!=)\s*(\S*))?$/.exec(part);
    if (!match) return undefined;
    const [, not, key, op, value] = match;
    if (not !== undefined && op !== undefined) return undefined;
    if (not !== undefined) requirements.push({ key: key!, op: "!exists" });
    else if (op === undefined) requirements.push({ key: key!, op: "exists" });
    else requirements.push({ key: key!, op: op === "!=" ? "!=" : "=", value: value ?? "" });
  }
  return requirements;
}

function matches(selector: Requirement[], labels: Record<string, string> | undefined): boolean {
  return selector.every(({ key, op, value }) => {
    const actual = labels?.[key];
    switch (op) {
      case "=":
        return actual === value;
      case "!=":
        return actual !== value;
      case "exists":
        return actual !== undefined;
      case "!exists":
        return actual === undefined;
    }
  });
}

/** Why a label map would be refused, or undefined when the API server would take it. */
function invalidLabels(labels: Record<string, string> | undefined): string | undefined {
  for (const [key, value] of Object.entries(labels ?? {})) {
    const slash = key.indexOf("/");
    const prefix = slash < 0 ? undefined : key.slice(0, slash);
    const name = slash < 0 ? key : key.slice(slash + 1);
    if ((prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) || name.length > 63 || !LABEL_NAME.test(name)) {
      return `Invalid value: "${key}": name part must consist of alphanumeric characters, '-', '_' or '.', and be at most 63 characters`;
    }
    if (typeof value !== "string" || value.length > 63 || !LABEL_VALUE.test(value)) {
      return `Invalid value: "${String(value)}": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and be at most 63 characters`;
    }
  }
  return undefined;
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const result: Record<string, unknown> = typeof target === "object" && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

function containerNames(pod: KubeObject): string[] {
  return ((pod.spec?.containers ?? []) as { name: string }[]).map((c) => c.name);
}

function resourceName(resource: Resource): string {
  return resource === "jobs" ? "jobs.batch" : resource === "shardedjobs" ? "shardedjobs.shardline.dev" : "pods";
}

function sendJson(response: ServerResponse, code: number, body: unknown): void {
  response.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** A metav1.Status failure, as the API server answers errors. */
function sendStatus(response: ServerResponse, code: number, reason: string, message: string, details?: { name: string; resource: Resource }): void {
  sendJson(response, code, {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(details === undefined ? {} : { details: { name: details.name, group: details.resource === "jobs" ? "batch" : "", kind: details.resource } }),
    code,
  });
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

/** A new pod's status: Running, or Pending on an image, its configuration or scheduling. */
function podStatus(containers: string[], now: string, options: { waiting?: { reason: string; message?: string }; unschedulable?: string }): Record<string, unknown> {
  if (options.unschedulable !== undefined) {
    return { phase: "Pending", conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: options.unschedulable }] };
  }
  if (options.waiting !== undefined) {
    const waiting = { reason: options.waiting.reason, ...(options.waiting.message === undefined ? {} : { message: options.waiting.message }) };
    return { phase: "Pending", startTime: now, containerStatuses: containers.map((name) => ({ name, ready: false, restartCount: 0, state: { waiting } })) };
  }
  return { phase: "Running", startTime: now, containerStatuses: containers.map((name) => ({ name, ready: true, restartCount: 0, state: { running: { startedAt: now } } })) };
}

function timestamp(): string {
  // Kubernetes timestamps have whole seconds; the fake keeps milliseconds so that pods made in
  // one second still sort by age.
  return new Date().toISOString();
}

function clone<T>(value: T): T {
  return value === undefined ? value : (structuredClone(value) as T);
}

/** What RBAC must allow for a request the controller made: `group/resource:verb`. */
export function grantNeeded(request: RecordedRequest): string {
  const match = /^\/apis\/([^/]+)\/v1(?:\/namespaces\/[^/]+)?\/([^/]+)(?:\/([^/]+)(?:\/(status))?)?$/.exec(request.path);
  if (match === null) throw new Error(`a request the RBAC check does not know: ${request.method} ${request.path}`);
  const [, group, resource, name, sub] = match;
  const verb =
    request.method === "GET" ? (request.query.watch !== undefined ? "watch" : name === undefined ? "list" : "get") : request.method === "POST" ? "create" : request.method === "PUT" ? "update" : request.method.toLowerCase();
  return `${group}/${resource}${sub === undefined ? "" : `/${sub}`}:${verb}`;
}
