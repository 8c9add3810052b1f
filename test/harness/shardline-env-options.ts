import type { ControllerOptions } from "../../controller/shell/controller.js";

/** What every kind of test world takes. */
export interface ShardlineTestEnvOptions {
  /** Names the world's temporary directory (`shardline-NAME-…`) and its etcd key prefix. */
  name: string;
  /**
   * The agents' handler module: CHAOS_HANDLERS or RECORDING_HANDLERS (shardline-env.ts, the
   * default), whose runs append to the world's record file (SHARDLINE_TEST_RECORD), or any other.
   */
  handlers?: string;
  /** Environment of every agent besides SHARDLINE_TEST_RECORD, e.g. SHARDLINE_TEST_WORK_MS. */
  agentEnv?: Record<string, string>;
  /** More flags for every controller process, e.g. a retention far above what a test makes. */
  controllerArgs?: string[];
}

/** One controller process on a SQLite file in the world's directory. */
export interface SingleControllerOptions extends ShardlineTestEnvOptions {
  /** The address it listens on: 127.0.0.1 unless given, e.g. the host end of a network namespace's link. */
  host?: string;
}

/** One controller in the test's own process (so the test can hand it a logger), with agent processes. */
export interface InProcessControllerOptions extends Omit<ShardlineTestEnvOptions, "controllerArgs"> {
  controller: ControllerOptions;
  /** What it logged, for the output printed when the test failed. */
  log?: () => string;
}

/** What startAgent() adds for one agent process. */
export interface AgentOptions {
  /** Environment besides the world's. */
  env?: Record<string, string>;
  /** A command to run it under, e.g. `ip netns exec NS`. */
  prefix?: string[];
  /** More flags, e.g. --wait-for-id. */
  args?: string[];
}
