import type { StrategyName } from "../../../shared/manifest/job-spec.js";
import { balanced, oddEven, roundRobin } from "./balanced.js";
import { sticky } from "./sticky.js";
import type { ShardingStrategy } from "./strategy.js";

export type { ShardingAgent, ShardingInput, ShardingStrategy } from "./strategy.js";
export { balanced, javaStringHashCode, oddEven, roundRobin } from "./balanced.js";
export { spreadSticky, sticky, type TopologyOf } from "./sticky.js";

const STRATEGY_BY_NAME: Readonly<Record<StrategyName, ShardingStrategy>> = {
  sticky,
  balanced,
  "odd-even": oddEven,
  "round-robin": roundRobin,
};

/** The strategy a job's spec.strategy names. */
export function strategyFor(name: StrategyName): ShardingStrategy {
  return STRATEGY_BY_NAME[name];
}
