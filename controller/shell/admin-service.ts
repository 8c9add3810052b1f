import { ShardlineError } from "../../shared/errors.js";
import type { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import { ExecutionState } from "../../shared/gen/shardline/v1/types_pb.js";
import type { ServiceImpl } from "../../shared/grpc/index.js";
import { parseManifest } from "../../shared/manifest/index.js";
import type { ControllerCore } from "../core/controller-core.js";
import { checkStrategyLoaded } from "../core/sharding/custom-strategy.js";
import type { CoreEvent } from "../core/messages.js";
import type { ExecutionQuery, Store } from "../store/store.js";
import type { CoreDriver } from "./core-driver.js";
import { agentToProto, executionToProto, jobToProto, stateFromProto, stateToProto, toNumber } from "./proto-mapping.js";

const MAX_LIMIT = 10_000;
const MAX_MANIFEST_BYTES = 256 * 1024;
/** A watcher that falls this far behind is cut off rather than buffering without bound. */
const MAX_EVENTS_QUEUED = 10_000;

/**
 * AdminService: reads come from the core's state and the store; writes go through the core.
 * `customStrategies` are the names loaded with --strategy, which a job's `custom:NAME` must be.
 */
export function adminService(
  core: ControllerCore,
  driver: CoreDriver,
  store: Store,
  customStrategies: ReadonlyMap<string, unknown> = new Map(),
): Partial<ServiceImpl<typeof AdminService>> {
  return {
    async applyJob(request) {
      if (Buffer.byteLength(request.manifest) > MAX_MANIFEST_BYTES) {
        throw ShardlineError.invalid("manifest", `${Buffer.byteLength(request.manifest)} bytes`, `at most ${MAX_MANIFEST_BYTES} bytes`);
      }
      const { spec, manifest } = parseManifest(request.manifest);
      checkStrategyLoaded(spec.strategy, customStrategies);
      const { changed } = await driver.run((now) => core.applyJob(spec.name, spec, manifest, now));
      return { job: jobToProto(core.getJob(spec.name)), changed };
    },

    async getJob(request) {
      return { job: jobToProto(core.getJob(request.name)) };
    },

    async listJobs() {
      return { jobs: core.listJobs().map(jobToProto) };
    },

    async deleteJob(request) {
      await driver.run((now) => core.deleteJob(request.name, now));
      return {};
    },

    async triggerJob(request) {
      const parameter = request.parameter === "" ? undefined : request.parameter;
      const fired = await driver.run((now) => core.triggerJob(request.name, request.shards, parameter, now));
      return { fireTimeUnixMs: BigInt(fired.fireTime), executionIds: fired.executionIds };
    },

    async pauseJob(request) {
      await driver.run((now) => core.pauseJob(request.name, now));
      return {};
    },

    async resumeJob(request) {
      await driver.run((now) => core.resumeJob(request.name, now));
      return {};
    },

    async listAgents() {
      return { agents: core.listAgents().map(agentToProto) };
    },

    async drainAgent(request) {
      await driver.run((now) => core.drainAgent(request.id, now));
      return {};
    },

    async uncordonAgent(request) {
      await driver.run((now) => core.uncordonAgent(request.id, now));
      return {};
    },

    async listAssignments(request) {
      return {
        assignments: core.listAssignments(request.job).map((a) => ({
          job: a.job,
          shard: a.shard,
          agent: a.agent,
          term: BigInt(a.term),
          generation: BigInt(a.generation),
          revoking: a.revoking,
        })),
      };
    },

    async listExecutions(request) {
      if (request.limit > MAX_LIMIT) throw ShardlineError.invalid("limit", request.limit, `0 (meaning 100) to ${MAX_LIMIT}`);
      const query: ExecutionQuery = { limit: request.limit === 0 ? 100 : request.limit };
      if (request.job !== "") query.job = request.job;
      if (request.agent !== "") query.agent = request.agent;
      if (request.state !== ExecutionState.UNSPECIFIED) query.state = stateFromProto(request.state, "state");
      if (request.shard !== undefined) query.shard = request.shard;
      if (request.sinceUnixMs !== 0n) query.since = toNumber(request.sinceUnixMs, "since_unix_ms");
      if (request.untilUnixMs !== 0n) query.until = toNumber(request.untilUnixMs, "until_unix_ms");
      await driver.idle();
      const executions = await store.listExecutions(query);
      const positions = core.queuePositions();
      return { executions: executions.map((e) => executionToProto(e, positions.get(e.id))) };
    },

    async getExecution(request) {
      await driver.idle();
      const execution = await store.getExecution(request.id);
      if (execution === undefined) {
        throw new ShardlineError("not-found", `execution ${JSON.stringify(request.id)} not found`, { field: "id", value: request.id });
      }
      return { execution: executionToProto(execution, core.queuePositions().get(execution.id)) };
    },

    async cancelExecution(request) {
      if (core.openExecution(request.id) === undefined) {
        await driver.idle();
        const finished = await store.getExecution(request.id);
        if (finished === undefined) {
          throw new ShardlineError("not-found", `execution ${JSON.stringify(request.id)} not found`, { field: "id", value: request.id });
        }
        throw new ShardlineError("failed-precondition", `execution ${request.id} already finished: ${finished.state}`, {
          field: "id",
          value: request.id,
        });
      }
      const state = await driver.run((now) => core.cancelExecution(request.id, request.reason.slice(0, 1024), now));
      return { state: stateToProto(state) };
    },

    async disableShard(request) {
      await driver.run((now) => core.disableShard(request.job, request.shard, now));
      return {};
    },

    async enableShard(request) {
      await driver.run((now) => core.enableShard(request.job, request.shard, now));
      return {};
    },

    async watchEvents(request, stream, context) {
      await new Promise<void>((resolve) => {
        const unsubscribe = driver.onEvent((event: CoreEvent) => {
          if (request.job !== "" && event.job !== request.job) return;
          const sent = stream.send({
            timeUnixMs: BigInt(event.time),
            type: event.type,
            job: event.job ?? "",
            shard: event.shard ?? 0,
            agent: event.agent ?? "",
            executionId: event.executionId ?? "",
            message: event.message,
          });
          if (!sent || stream.queued > MAX_EVENTS_QUEUED) finish();
        });
        const finish = (): void => {
          unsubscribe();
          resolve();
        };
        if (context.signal.aborted) finish();
        context.signal.addEventListener("abort", finish, { once: true });
      });
    },
  };
}
