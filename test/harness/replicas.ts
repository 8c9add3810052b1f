import { ADMIN_MAX_RECEIVE_BYTES } from "../../cli/commands/admin.js";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { type CallOptions, createClient } from "../../shared/grpc/index.js";
import { freePortOn, plaintextOn } from "./addresses.js";
import { type AdminClient, CLI, waitFor } from "./processes.js";
import { TrackedProcess } from "./tracked-process.js";

/**
 * A controller replica on an etcd store: a fixed gRPC address, restartable on it, each run of it
 * a TrackedProcess (so a test can SIGKILL, SIGSTOP and read its log).
 */
export class ControllerReplica {
  process: TrackedProcess | undefined;
  /** Every process this replica ran, oldest first. */
  readonly incarnations: TrackedProcess[] = [];

  constructor(
    readonly name: string,
    readonly host: string,
    readonly port: number,
    /** `etcd://HOST:PORT/PREFIX`, the same for every replica of a set. */
    readonly store: string,
    readonly extraArgs: string[] = [],
  ) {}

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** Starts a new process of this replica and resolves once its log says it serves (leading or following). */
  async start(): Promise<TrackedProcess> {
    const http = await freePortOn(this.host);
    const args = ["controller", "--listen", this.address, "--http", `${this.host}:${http}`, "--store", this.store, ...plaintextOn(this.host), ...this.extraArgs];
    const started = new TrackedProcess(this.name, process.execPath, [CLI, ...args]);
    this.process = started;
    this.incarnations.push(started);
    await waitFor(`${this.name} to serve`, async () => {
      if (!started.running) throw new Error(`${this.name} exited:\n${started.output}`);
      return started.logged("controller serving on", started.startedAt) === undefined ? undefined : true;
    });
    return started;
  }

  /** True while the current process runs and is not frozen. */
  get live(): boolean {
    return this.process !== undefined && this.process.running && this.process.frozenSince === undefined;
  }

  /** The term the current process leads in, once its log says `leading (term N)`. */
  leadingTerm(): number | undefined {
    const line = this.process?.logged("leading (term ", 0);
    const match = line === undefined ? null : /^leading \(term (\d+)\)/.exec(line.msg);
    return match === null ? undefined : Number(match[1]);
  }

  /** What the current process's log said when it began to serve: the leader it followed, if any. */
  servedAs(): { following: boolean; leader: string | undefined } | undefined {
    const line = this.process?.logged("controller serving on", 0);
    if (line === undefined) return undefined;
    const following = /following until elected \(leader: ([^)]+)\)/.exec(line.msg);
    if (following === null) return { following: false, leader: undefined };
    return { following: true, leader: following[1] === "none yet" ? undefined : following[1] };
  }
}

/** Replicas of one controller on one etcd store. */
export class ControllerReplicaSet {
  constructor(readonly replicas: readonly ControllerReplica[]) {}

  /** `HOST:PORT,HOST:PORT,...` for `--controller` of agents and the CLI. */
  get addresses(): string {
    return this.replicas.map((r) => r.address).join(",");
  }

  /** Every process any replica ran. */
  get incarnations(): TrackedProcess[] {
    return this.replicas.flatMap((r) => r.incarnations);
  }

  /** The live replica that leads in the highest term its log names, if any. */
  currentLeader(): { replica: ControllerReplica; term: number } | undefined {
    let best: { replica: ControllerReplica; term: number } | undefined;
    for (const replica of this.replicas) {
      const term = replica.live ? replica.leadingTerm() : undefined;
      if (term !== undefined && (best === undefined || term > best.term)) best = { replica, term };
    }
    return best;
  }

  /** Waits for a live replica to lead in exactly `term`. */
  leaderIn(term: number, timeoutMs = 20_000): Promise<ControllerReplica> {
    return waitFor(`a replica to lead in term ${term}`, async () => this.replicas.find((r) => r.live && r.leadingTerm() === term), timeoutMs);
  }

  /** Waits for a live replica to lead in a term above `afterTerm`. */
  leaderAfter(afterTerm: number, timeoutMs = 20_000): Promise<{ replica: ControllerReplica; term: number }> {
    return waitFor(
      `a replica to lead in a term above ${afterTerm}`,
      async () => {
        const leader = this.currentLeader();
        return leader !== undefined && leader.term > afterTerm ? leader : undefined;
      },
      timeoutMs,
    );
  }

  /** Stops every replica's current process (SIGTERM, then SIGKILL). */
  async stop(): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.process?.stop()));
  }

  /** An admin client of the set that follows the leader, as the CLI does. */
  admin(deadlineMs = 5000): ReplicaSetAdmin {
    return new ReplicaSetAdmin(
      this.replicas.map((r) => r.address),
      deadlineMs,
    );
  }
}

/** How many times one call follows a follower's `shardline-leader` trailer. */
const MAX_LEADER_HOPS = 3;

/**
 * An AdminService client of several replicas: a call goes to the last address that answered; a
 * follower's refusal naming the leader sends it there, and an address that does not answer
 * (killed, frozen, no leader yet) passes it to the next. For the reads a test polls with, which
 * may safely be asked twice.
 */
export class ReplicaSetAdmin {
  readonly #clients = new Map<string, AdminClient>();
  #address: string;

  constructor(
    readonly addresses: readonly string[],
    readonly deadlineMs: number,
  ) {
    this.#address = addresses[0]!;
  }

  /** The address the last call was answered from (the leader, as far as this client knows). */
  get address(): string {
    return this.#address;
  }

  async call<T>(request: (admin: AdminClient) => Promise<T>): Promise<T> {
    let hops = 0;
    let passed = 0;
    for (;;) {
      try {
        return await request(this.#client(this.#address));
      } catch (error) {
        if (!(error instanceof ShardlineError) || error.code !== "unavailable") throw error;
        const leader = error.details.leader;
        if (leader !== undefined && hops < MAX_LEADER_HOPS) {
          hops++;
          this.#address = leader;
          continue;
        }
        if (++passed >= this.addresses.length) throw error;
        const at = this.addresses.indexOf(this.#address);
        this.#address = this.addresses[(at + 1) % this.addresses.length]!;
      }
    }
  }

  /**
   * The same as an AdminClient: each unary call goes through call() (so it reaches the leader,
   * wherever it is); a streaming call goes to the address the last call was answered from.
   */
  asClient(): AdminClient {
    const client: Record<string, unknown> = { close: () => this.close() };
    for (const method of AdminService.methods) {
      const name = method.localName as keyof AdminClient;
      client[name] =
        method.methodKind === "unary"
          ? (request: unknown, options?: CallOptions) => this.call((admin) => (admin[name] as (r: unknown, o?: CallOptions) => Promise<unknown>)(request, options))
          : (...args: unknown[]) => (this.#client(this.#address)[name] as (...a: unknown[]) => unknown)(...args);
    }
    return client as unknown as AdminClient;
  }

  close(): void {
    for (const client of this.#clients.values()) client.close();
    this.#clients.clear();
  }

  #client(address: string): AdminClient {
    let client = this.#clients.get(address);
    if (client === undefined) {
      // As the CLI does: a listing with full result and error texts can pass gRPC's default 4 MiB.
      client = createClient(AdminService, address, { deadlineMs: this.deadlineMs, maxReceiveMessageBytes: ADMIN_MAX_RECEIVE_BYTES });
      this.#clients.set(address, client);
    }
    return client;
  }
}
