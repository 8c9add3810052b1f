import type { Server as HttpServer } from "node:http";
import type { Server } from "@grpc/grpc-js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentService } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { addService, createServer, listen, shutdown } from "../../shared/grpc/index.js";
import { createLogger, type Logger } from "../../shared/logging.js";
import { VERSION } from "../../shared/version.js";
import { DEFAULT_CORE_CONFIG } from "../core/config.js";
import { ControllerCore } from "../core/controller-core.js";
import { loadCustomStrategies, type StrategyModule } from "../core/sharding/custom-strategy.js";
import { openStore } from "../store/open-store.js";
import type { RetentionPolicy } from "../store/store.js";
import { adminService } from "./admin-service.js";
import { AgentSessions } from "./agent-sessions.js";
import { CoreDriver } from "./core-driver.js";
import { FailureNotifier, type FailureNotifierSettings } from "./failure-notifier.js";
import { splitHostPort, startHttpServer } from "./http-server.js";

/** How to run a controller. */
export interface ControllerOptions {
  /** gRPC address for agents and admin clients; default 127.0.0.1:7070. */
  listen: string;
  /** HTTP address for /healthz and /readyz; default 127.0.0.1:7071. */
  http: string;
  /** `sqlite:PATH` (default `sqlite:./shardline.db`). */
  store: string;
  heartbeatIntervalMs?: number;
  leaseTtlMs?: number;
  logLevel?: string;
  /** Finished executions kept; default 1,000 per job and 7 days. */
  retention?: RetentionPolicy;
  /**
   * `--strategy NAME=MODULE`: user modules loaded and validated before anything starts, for jobs
   * with `spec.strategy: custom:NAME`. A module that fails validation fails the start.
   */
  strategies?: readonly StrategyModule[];
  logger?: Logger;
  /** How failure webhooks (spec.onFailure.webhook) are retried; tests shorten the waits. */
  failureWebhooks?: FailureNotifierSettings;
}

/** A controller that is serving. */
export interface RunningController {
  grpcAddress: string;
  httpAddress: string;
  term: number;
  /** Resolves once the controller has stopped serving and closed its store. */
  stop(): Promise<void>;
  /** Resolves when the controller stops for a reason of its own (a store failure). */
  readonly failed: Promise<Error>;
}

const RETENTION_DEFAULT: RetentionPolicy = { maxPerJob: 1000, maxAgeMs: 7 * 24 * 3600 * 1000 };
const PRUNE_EVERY_MS = 60_000;

/** Opens the store, starts the core and serves gRPC and HTTP until stopped. */
export async function startController(options: ControllerOptions): Promise<RunningController> {
  const logger = options.logger ?? createLogger({ name: "controller", level: options.logLevel });
  splitHostPort(options.listen, "--listen");
  const customStrategies = await loadCustomStrategies(options.strategies ?? []);
  const config = {
    ...DEFAULT_CORE_CONFIG,
    customStrategies,
    ...(options.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: options.heartbeatIntervalMs }),
    ...(options.leaseTtlMs === undefined ? {} : { leaseTtlMs: options.leaseTtlMs }),
  };
  const store = openStore(options.store);
  const snapshot = await store.open();
  let failWith: (error: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => (failWith = resolve));
  const core = new ControllerCore(config, snapshot, Date.now());
  let stopping: Promise<void> | undefined;
  const driver = new CoreDriver(core, store, logger, (error) => {
    logger.fatal({ err: error }, "the store failed; stopping so that nothing is sent that is not durable");
    void stop().then(() => failWith(error instanceof Error ? error : new Error(String(error))));
  });
  const sessions = new AgentSessions(core, driver, logger);
  driver.deliver = sessions.deliver;
  const notifier = new FailureNotifier({ ...options.failureWebhooks, core, store, logger });
  const unsubscribeNotifier = driver.onEvent(notifier.onEvent);

  let grpcServer: Server | undefined;
  let httpServer: HttpServer | undefined;
  let pruneTimer: NodeJS.Timeout | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (pruneTimer !== undefined) clearInterval(pruneTimer);
      driver.stop();
      sessions.closeAll("the controller is shutting down");
      if (grpcServer !== undefined) await shutdown(grpcServer, 1000);
      if (httpServer !== undefined) await new Promise<void>((resolve) => httpServer!.close(() => resolve()));
      await driver.idle();
      unsubscribeNotifier();
      // Before the store closes: the notifier reads failed executions from it.
      await notifier.stop();
      await store.close();
      logger.info("controller stopped");
    })();
    return stopping;
  };

  try {
    grpcServer = createServer();
    const onError = (error: unknown, method: string): void => logger.error({ err: error, method }, "internal error in a call");
    addService(grpcServer, AgentService, { connect: sessions.connect }, { onError });
    addService(grpcServer, AdminService, adminService(core, driver, store, customStrategies), { onError });
    const port = await listen(grpcServer, options.listen);
    const host = splitHostPort(options.listen, "--listen").host;
    const grpcAddress = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    const http = await startHttpServer(options.http, {
      ready: async () => stopping === undefined && (await store.listExecutions({ limit: 1 }), true),
    });
    httpServer = http.server;
    await driver.start();
    const retention = options.retention ?? RETENTION_DEFAULT;
    pruneTimer = setInterval(() => {
      store.prune(retention, Date.now()).catch((error: unknown) => logger.warn({ err: error }, "pruning execution history failed"));
    }, PRUNE_EVERY_MS);
    pruneTimer.unref();
    logger.info(
      { grpc: grpcAddress, http: http.address, store: options.store, term: core.term, version: VERSION, strategies: [...customStrategies.keys()] },
      `controller serving on ${grpcAddress} (term ${core.term})`,
    );
    return { grpcAddress, httpAddress: http.address, term: core.term, stop, failed };
  } catch (error) {
    await stop();
    throw error;
  }
}
