import type { JobSpec } from "../../shared/manifest/job-spec.js";
import type { ExecutionStateName, JobRecord } from "./store-port.js";
import type { ControllerCore } from "./controller-core.js";
import type { AgentHello, AssignmentRef, ExecutionUpdate } from "./messages.js";
import type { ApplyOptions } from "./job-admin.js";

/**
 * Every input the controller core takes, as one typed union: what an agent's stream says, what an
 * admin command asks, and time passing. The shell calls the facade's methods of the same names;
 * a replay log, the simulator or a fuzz test can drive `ControllerCore.step` with these instead.
 */
export type CoreInput =
  /** A new stream said Hello; `peer` is where it comes from. */
  | { kind: "hello"; session: string; hello: AgentHello; peer?: string }
  | { kind: "heartbeat"; session: string; seq: number }
  | { kind: "execution-updates"; session: string; reports: readonly ExecutionUpdate[] }
  | { kind: "release"; session: string; released: readonly AssignmentRef[] }
  | { kind: "goodbye"; session: string; reason: string }
  | { kind: "stream-closed"; session: string }
  | { kind: "apply-job"; name: string; spec: JobSpec; manifest: string; options?: ApplyOptions }
  | { kind: "delete-job"; name: string }
  | { kind: "pause-job"; name: string }
  | { kind: "resume-job"; name: string }
  | { kind: "trigger-job"; name: string; shards: readonly number[]; parameter?: string }
  | { kind: "cancel-execution"; id: string; reason: string }
  | { kind: "disable-shard"; job: string; shard: number }
  | { kind: "enable-shard"; job: string; shard: number }
  | { kind: "drain-agent"; id: string }
  | { kind: "uncordon-agent"; id: string }
  | { kind: "promote-rollout"; job: string; full: boolean; by: string }
  | { kind: "abort-rollout"; job: string; by: string }
  | { kind: "retry-rollout"; job: string; by: string }
  /** This controller's leadership lease bounds the agent leases it grants (etcd); undefined lifts it. */
  | { kind: "limit-leases"; until: number | undefined }
  /** Time passed: run the timers due. */
  | { kind: "tick" }
  /** The controller could not run for `ms` just before now (it could not read heartbeats meanwhile). */
  | { kind: "stall"; ms: number };

/** What each kind of input answers with. */
interface Outputs {
  "apply-job": { record: JobRecord; changed: boolean };
  "trigger-job": { fireTime: number; executionIds: string[] };
  "cancel-execution": ExecutionStateName;
}

/** The answer to an input: the command's result where it has one, else nothing. */
export type CoreOutput<I extends CoreInput> = I["kind"] extends keyof Outputs ? Outputs[I["kind"]] : void;

/** Runs one input on the core through the facade's method for it. Throws what that method throws. */
export function applyInput(core: ControllerCore, input: CoreInput, now: number): unknown {
  switch (input.kind) {
    case "hello":
      return core.hello(input.session, input.hello, now, input.peer);
    case "heartbeat":
      return core.heartbeat(input.session, input.seq, now);
    case "execution-updates":
      return core.executionUpdates(input.session, input.reports, now);
    case "release":
      return core.release(input.session, input.released, now);
    case "goodbye":
      return core.goodbye(input.session, input.reason, now);
    case "stream-closed":
      return core.streamClosed(input.session, now);
    case "apply-job":
      return core.applyJob(input.name, input.spec, input.manifest, now, input.options);
    case "delete-job":
      return core.deleteJob(input.name, now);
    case "pause-job":
      return core.pauseJob(input.name, now);
    case "resume-job":
      return core.resumeJob(input.name, now);
    case "trigger-job":
      return core.triggerJob(input.name, input.shards, input.parameter, now);
    case "cancel-execution":
      return core.cancelExecution(input.id, input.reason, now);
    case "disable-shard":
      return core.disableShard(input.job, input.shard, now);
    case "enable-shard":
      return core.enableShard(input.job, input.shard, now);
    case "drain-agent":
      return core.drainAgent(input.id, now);
    case "uncordon-agent":
      return core.uncordonAgent(input.id, now);
    case "promote-rollout":
      return core.promoteRollout(input.job, input.full, input.by, now);
    case "abort-rollout":
      return core.abortRollout(input.job, input.by, now);
    case "retry-rollout":
      return core.retryRollout(input.job, input.by, now);
    case "limit-leases":
      return core.limitLeases(input.until, now);
    case "tick":
      return core.tick(now);
    case "stall":
      return core.noteStall(input.ms, now);
  }
}
