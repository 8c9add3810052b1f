import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../shared/logging.js";
import { MetricsRegistry } from "../../shared/telemetry/metrics.js";
import { DEFAULT_CORE_CONFIG } from "../core/config.js";
import { NO_TRACING } from "../core/execution-tracing.js";
import { ControllerMetrics } from "./controller-metrics.js";
import { DriverPart } from "./leading.js";
import { SingleWriter } from "./leadership.js";
import { SqliteFile } from "./store-connection.js";

const MANIFEST = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: rollup}
spec:
  shards: 2
  handler: work
`;

describe("DriverPart", () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "shardline-driver-part-"));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function driverPart(): DriverPart {
    const fatal = (error: Error): void => {
      throw error;
    };
    return new DriverPart({
      store: new SqliteFile(join(dir, "state.db")),
      leadership: new SingleWriter(),
      config: DEFAULT_CORE_CONFIG,
      tracing: NO_TRACING,
      logger: silentLogger(),
      metrics: new ControllerMetrics(new MetricsRegistry({ serviceName: "driver-part-test" }), { core: () => undefined, sessions: () => undefined }),
      failureWebhooks: undefined,
      address: () => "127.0.0.1:7070",
      traceUrlTemplate: "",
      customStrategies: new Map(),
      maxJobs: 100,
      retention: { maxPerJob: 10, maxAgeMs: 60_000, revisionsPerJob: 10 },
      onFatal: fatal,
    });
  }

  it("leads from the store it opens, under the file's next term, once the leadership says so", async () => {
    const driver = driverPart();
    expect(driver.leading).toBeUndefined();
    await driver.start();
    expect(driver.leading?.core.term).toBe(1);
    expect(await driver.elected).toBe(1);
    driver.halt();
    await driver.stop();
  });

  it("stops deciding when halted, and closes the store when stopped, so the next leader reads all of it in the next term", async () => {
    const first = driverPart();
    await first.start();
    const admin = first.leading!.admin as { applyJob(request: { manifest: string }): Promise<unknown> };
    await admin.applyJob({ manifest: MANIFEST });
    first.halt();
    expect(first.leading).toBeUndefined();
    // A leader halted owes the next one its agents' leases until it is closed.
    expect(first.handedOver).toBe(false);
    await first.stop();
    expect(first.handedOver).toBe(true);

    const next = driverPart();
    await next.start();
    try {
      expect(next.leading?.core.term).toBe(2);
      expect(next.leading?.core.listJobs().map((job) => job.record.name)).toEqual(["rollup"]);
    } finally {
      next.halt();
      await next.stop();
    }
  });

  it("has nothing to hand over when it never led", async () => {
    const driver = driverPart();
    driver.halt();
    await driver.stop();
    expect(driver.handedOver).toBe(true);
  });
});
