import type { Logger } from "../../shared/logging.js";
import type { CoreConfig } from "../core/config.js";
import { ControllerCore } from "../core/controller-core.js";
import type { ExecutionTracing } from "../core/execution-tracing.js";
import type { EtcdLeadership } from "../store/etcd/etcd-leadership.js";
import type { RetentionPolicy, Store } from "../store/store.js";
import { adminService } from "./admin-service.js";
import { AgentSessions } from "./agent-sessions.js";
import type { ControllerMetrics } from "./controller-metrics.js";
import { CoreDriver } from "./core-driver.js";
import { AuditTrail, auditEvent } from "./audit-trail.js";
import { KubeJobSource, type KubeJobsOptions } from "./kube-jobs.js";
import { WatchHub } from "./watch-hub.js";
import { FailureNotifier, type FailureNotifierSettings } from "./failure-notifier.js";
import type { Leadership } from "./leadership.js";
import type { StoreConnection } from "./store-connection.js";
import type { Part } from "./supervisor.js";

/** How often finished executions past the retention are deleted. */
const PRUNE_EVERY_MS = 60_000;

/** What a leader is made of: the core, its driver and everything around them. */
export interface LeaderParts {
  config: CoreConfig;
  tracing: ExecutionTracing;
  logger: Logger;
  metrics: ControllerMetrics;
  /** With etcd: the leadership this controller won; its lease bounds the agent leases granted. */
  leadership: EtcdLeadership | undefined;
  failureWebhooks: FailureNotifierSettings | undefined;
  customStrategies: ReadonlyMap<string, unknown>;
  maxJobs: number;
  retention: RetentionPolicy;
  /** The store failed: the controller must stop, so that nothing is sent that is not durable. */
  onFatal: (error: Error) => void;
  /** The address clients reach this controller at (the status a Watch streams). */
  address: () => string;
  /** The --trace-url-template, or "". */
  traceUrlTemplate: string;
  /** --jobs-from kubernetes: the ShardedJobs this leader follows; absent, none. */
  kubeJobs?: KubeJobsOptions;
}

/** What runs only while this controller leads: the core and everything around it. */
export interface Leading {
  core: ControllerCore;
  sessions: AgentSessions;
  admin: Record<string, unknown>;
  store: Store;
  /** The audit trail of this leadership: the admin calls answered while it leads. */
  audit: AuditTrail;
  /** Stops the core and closes the agents' streams: nothing more is decided or sent. */
  halt(reason: string): void;
  /**
   * Then waits for what is under way (commits, failure webhooks) and closes the store. On etcd
   * it first records how long the agent leases it granted still run, measured at halt: the next
   * leader waits that long before giving their shards to others. Resolves false when that could
   * not be recorded: the leadership must then run out rather than be resigned.
   */
  close(): Promise<boolean>;
}

/**
 * Opens the store and leads from its snapshot: the core, its driver, the agents' sessions, the
 * admin service, failure webhooks and history pruning, started in that order; `halt` and `close`
 * stop them in reverse.
 */
export async function startLeading(store: Store, parts: LeaderParts): Promise<Leading> {
  const { config, tracing, logger, metrics, leadership, failureWebhooks, customStrategies, maxJobs, retention, onFatal } = parts;
  const snapshot = await store.open();
  const core = new ControllerCore(config, snapshot, Date.now(), tracing);
  const driver = new CoreDriver(core, store, logger, (error) => {
    logger.fatal({ err: error }, "the store failed; stopping so that nothing is sent that is not durable");
    onFatal(error instanceof Error ? error : new Error(String(error)));
  });
  metrics.lead(snapshot);
  const unsubscribeMetrics = driver.onApplied(metrics.observe);
  const sessions = new AgentSessions(core, driver, logger);
  // On etcd no agent lease may outlive this controller's own leadership lease: the next leader
  // is elected only once that lease ended, and then owes no agent of this one a wait. And
  // nothing is sent once this controller cannot be sure it still leads.
  let unsubscribeRenewed = (): void => {};
  if (leadership !== undefined) {
    const elected = leadership;
    core.limitLeases(elected.actUntil, Date.now());
    unsubscribeRenewed = elected.onRenewed((actUntil) => driver.post((now) => core.limitLeases(actUntil, now)));
    driver.deliver = (messages, closes) => {
      if (elected.isLeader()) sessions.deliver(messages, closes);
    };
  } else {
    driver.deliver = sessions.deliver;
  }
  const notifier = new FailureNotifier({ ...failureWebhooks, core, store, logger });
  const unsubscribeNotifier = driver.onEvent(notifier.onEvent);
  const watchHub = new WatchHub({ core, driver, store, logger, address: parts.address, traceUrlTemplate: parts.traceUrlTemplate });
  const audit = new AuditTrail(store, logger, (record) => watchHub.note(auditEvent(record)));
  const admin = adminService(core, driver, store, customStrategies, { maxJobs, watchHub }) as Record<string, unknown>;
  let leasesEndWithin: number | undefined;
  const pruneTimer = setInterval(() => {
    store.prune(retention, Date.now()).catch((error: unknown) => logger.warn({ err: error }, "pruning execution history failed"));
  }, PRUNE_EVERY_MS);
  pruneTimer.unref();
  await driver.start();
  const kubeJobs = parts.kubeJobs === undefined ? undefined : new KubeJobSource(parts.kubeJobs, core, driver, logger, customStrategies);
  kubeJobs?.start();
  return {
    core,
    sessions,
    admin,
    audit,
    store,
    halt: (reason) => {
      leasesEndWithin = core.leasesEndWithin(Date.now());
      clearInterval(pruneTimer);
      unsubscribeRenewed();
      kubeJobs?.stop();
      watchHub.stop(reason);
      driver.stop();
      sessions.closeAll(reason);
    },
    close: async () => {
      await driver.idle();
      await audit.idle();
      unsubscribeMetrics();
      unsubscribeNotifier();
      // Before the store closes: the notifier reads failed executions from it.
      await notifier.stop();
      let handedOver = true;
      if (leasesEndWithin !== undefined && store.handOver !== undefined) {
        handedOver = await store.handOver(leasesEndWithin).then(
          () => true,
          (error: unknown) => {
            logger.warn({ err: error }, "could not record the agents' leases for the next leader; not resigning, the leadership runs out instead");
            return false;
          },
        );
      }
      await store.close();
      return handedOver;
    },
  };
}

/** What the driver part needs besides what a leader is made of. */
export interface DriverPartOptions extends Omit<LeaderParts, "leadership"> {
  /** Where the store lives: the driver opens it each time it leads. */
  store: StoreConnection;
  /** When to lead. */
  leadership: Leadership;
}

/**
 * The driver part: leads (startLeading) once the leadership says so, from the store it opens
 * then. Halting stops deciding and closes the agents' streams at once; stopping waits for what
 * is under way and closes the store, noting whether the next leader was handed the agents' leases.
 */
export class DriverPart implements Part {
  readonly name = "driver";
  /** Resolves with the term once this controller leads. */
  readonly elected: Promise<number>;
  readonly #options: DriverPartOptions;
  #electedWith: (term: number) => void = () => {};
  #leading: Leading | undefined;
  /** The leader halted, which stop() closes. */
  #halted: Leading | undefined;
  #halting = false;
  /** True while nothing is owed to the next leader: never led, or led and handed over. */
  #handedOver = true;

  constructor(options: DriverPartOptions) {
    this.#options = options;
    this.elected = new Promise<number>((resolve) => (this.#electedWith = resolve));
  }

  /** The leader's parts while this controller leads (undefined from halt on). */
  get leading(): Leading | undefined {
    return this.#leading;
  }

  /**
   * After stop: whether the next leader knows how long this one's agent leases still run, so the
   * leadership may be resigned. False while a leader halted has not been closed.
   */
  get handedOver(): boolean {
    return this.#handedOver;
  }

  start(): Promise<void> {
    return this.#options.leadership.lead((term) => this.#lead(term));
  }

  async #lead(term: number | undefined): Promise<void> {
    const { store, leadership, ...parts } = this.#options;
    const led = await startLeading(store.open(term), { ...parts, leadership: leadership.election });
    if (this.#halting) {
      // Halted while it opened the store: nothing was sent; closed as stop() would have.
      led.halt("the controller is shutting down");
      await led.close();
      return;
    }
    this.#leading = led;
    this.#electedWith(led.core.term);
  }

  halt(): void {
    this.#halting = true;
    this.#halted = this.#leading;
    this.#leading = undefined;
    if (this.#halted === undefined) return;
    this.#handedOver = false;
    this.#halted.halt("the controller is shutting down");
  }

  async stop(): Promise<void> {
    const halted = this.#halted;
    this.#halted = undefined;
    if (halted !== undefined) this.#handedOver = await halted.close();
  }
}
