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
import { FailureNotifier, type FailureNotifierSettings } from "./failure-notifier.js";

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
}

/** What runs only while this controller leads: the core and everything around it. */
export interface Leading {
  core: ControllerCore;
  sessions: AgentSessions;
  admin: Record<string, unknown>;
  store: Store;
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
  const admin = adminService(core, driver, store, customStrategies, { maxJobs }) as Record<string, unknown>;
  let leasesEndWithin: number | undefined;
  const pruneTimer = setInterval(() => {
    store.prune(retention, Date.now()).catch((error: unknown) => logger.warn({ err: error }, "pruning execution history failed"));
  }, PRUNE_EVERY_MS);
  pruneTimer.unref();
  await driver.start();
  return {
    core,
    sessions,
    admin,
    store,
    halt: (reason) => {
      leasesEndWithin = core.leasesEndWithin(Date.now());
      clearInterval(pruneTimer);
      unsubscribeRenewed();
      driver.stop();
      sessions.closeAll(reason);
    },
    close: async () => {
      await driver.idle();
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
