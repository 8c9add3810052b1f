import { FIRE_COMPLETE_SHARD } from "./store-port.js";

/**
 * The deterministic id of an execution: the same job, fire instant, shard and attempt always
 * give the same id, so a fire recorded once can never be dispatched as a second, different run.
 * Job names are DNS-1123 labels, so "/" cannot occur inside a part. A fire's completion hook run
 * has "complete" where the shard goes.
 */
export function executionId(job: string, fireTime: number, shard: number, attempt: number): string {
  return `${job}/${fireTime}/${shard === FIRE_COMPLETE_SHARD ? "complete" : shard}/${attempt}`;
}

