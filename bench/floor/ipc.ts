/**
 * What the transport floor's processes say to each other over their IPC channels: the bench
 * process commands the echo controller and the floor agent processes, and they report back.
 * Every child also reports `failed` when something it cannot recover from happens (a stream
 * closing under work, a message it did not expect), and the run stops on it.
 */

/** To the echo controller. */
export type EchoCommand =
  /** Sends one fire of `shards` executions, each agent its round-robin share; `agents` must be connected. */
  | { type: "trigger"; shards: number; agents: number }
  | { type: "tally" }
  | { type: "stop" };

/** From the echo controller. */
export type EchoReport =
  | { type: "listening"; address: string }
  /** Every execution of fire number `trigger` (from 0) came back terminal, the last at `at` (Unix ms). */
  | { type: "completed"; trigger: number; executions: number; at: number }
  | { type: "tally"; tally: EchoTally }
  | { type: "failed"; reason: string }
  | { type: "stopped" };

/** What the echo controller has seen since it started. */
export interface EchoTally {
  /** Agents welcomed and still connected. */
  agents: number;
  /** Executions sent in Dispatch messages. */
  dispatched: number;
  /** Dispatch messages sent (a dispatch split by dispatchParts counts each part). */
  dispatchMessages: number;
  /** Executions whose terminal update came back. */
  completed: number;
  /** Terminal updates in a state other than SUCCEEDED. */
  unsuccessful: number;
  /** Updates that named no outstanding execution: unknown ids, or a second terminal update. */
  strays: number;
  /** ExecutionUpdates messages received. */
  updateMessages: number;
  heartbeatsAcked: number;
}

/** To a floor agent process. */
export type FloorAgentCommand =
  | { type: "start"; controller: string; ids: string[] }
  | { type: "count" }
  | { type: "stop" };

/** From a floor agent process. */
export type FloorAgentReport =
  /** Every agent of the process was welcomed. */
  | { type: "welcomed"; agents: number }
  | { type: "count"; count: FloorAgentCount }
  | { type: "failed"; reason: string }
  | { type: "stopped" };

/** What the agents of one floor agent process have done, summed. */
export interface FloorAgentCount {
  /** ExecutionContexts received in Dispatch messages. */
  received: number;
  /** Terminal updates sent back. */
  echoed: number;
  dispatchMessages: number;
  /** ExecutionUpdates messages sent. */
  updateMessages: number;
  heartbeatsSent: number;
  acksReceived: number;
}
