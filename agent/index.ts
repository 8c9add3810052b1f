/**
 * The Shardline agent: connects to a controller, holds the shards it is given, and runs their
 * executions with the handlers it declares. See docs/protocol.md for the stream it speaks.
 */
export {
  defineHandlers,
  defineListeners,
  LeaseLostError,
  loadHandlerModule,
  loadHandlers,
  type ExecutionListeners,
  type ExecutionOutcome,
  type ExecutionOutcomeState,
  type FireShardOutcome,
  type Handler,
  type HandlerContext,
  type HandlerMap,
  type HandlerModule,
  type LeaseLostReason,
} from "./sdk.js";
export { Agent, type AgentEvents, type AgentState, type SessionInfo, type ShardView } from "./runtime/agent.js";
export { type AgentOptions, type Clock } from "./runtime/agent-options.js";
export { startAgentHttpServer, type AgentHttpServer } from "./runtime/agent-http.js";
export { MetricsRegistry } from "../shared/telemetry/metrics.js";
