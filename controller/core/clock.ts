/**
 * Time: timers due at `now` (fires, leases, retries, the startup grace, a replaced process's
 * fence, an unknown run's disconnect grace).
 */
import { FIRE_COMPLETE_SHARD } from "./store-port.js";
import { type TimerKind } from "./timer-queue.js";
import type { CoreState } from "./core-state.js";
import * as Agents from "./agents.js";
import * as DisconnectGrace from "./disconnect-grace.js";
import * as Fires from "./fires.js";
import * as Executions from "./executions.js";
import * as FireComplete from "./fire-complete.js";
import * as Placement from "./placement.js";
import * as Rollouts from "./rollouts.js";

/** Runs every timer due at or before `now`. */
export function tick(core: CoreState, now: number): void {
  advance(core, now);
}

export function advance(core: CoreState, now: number): void {
  if (now > core.now) core.now = now;
  // Fires held back by an earlier batch's budget go first, in the order they fell due.
  let next = 0;
  while (next < core.heldFires.length && core.fireBudget > 0) onTimer(core, core.heldFires[next++]!);
  if (next > 0) core.heldFires = core.heldFires.slice(next);
  for (;;) {
    const timer = core.timers.popDue(core.now);
    if (timer === undefined) return;
    // Past the batch's budget a fire waits for the next batch; every other timer runs.
    if (timer.kind === "fire" && core.fireBudget <= 0) core.heldFires.push(timer);
    else onTimer(core, timer);
  }
}

export function onTimer(core: CoreState, timer: TimerKind): void {
  switch (timer.kind) {
    case "fire": {
      const job = core.jobs.get(timer.job);
      if (job === undefined || job.fireToken !== timer.token || job.nextFire !== timer.fireTime) return;
      Fires.scheduledFire(core, job, timer.fireTime);
      return;
    }
    case "lease": {
      const agent = core.agents.get(timer.agent);
      if (agent === undefined || agent.incarnation !== timer.incarnation) return;
      agent.leaseTimerArmed = false;
      if (agent.leaseExpiry > core.now) {
        Agents.armLeaseTimer(core, agent);
        return;
      }
      Agents.expireLease(core, agent);
      return;
    }
    case "retry": {
      if (timer.shard === FIRE_COMPLETE_SHARD) {
        FireComplete.dispatchFireCompletes(core);
        return;
      }
      const shard = core.jobs.get(timer.job)?.shards[timer.shard];
      if (shard !== undefined) Executions.dispatchShard(core, shard);
      return;
    }
    case "startup-grace":
      Placement.agentsChanged(core);
      return;
    case "inherited": {
      const agent = core.agents.get(timer.agent);
      if (agent?.inherited === undefined || agent.incarnation !== timer.incarnation || agent.inherited.until > core.now) return;
      Agents.endInheritedFence(core, agent);
      return;
    }
    case "unknown-run":
      DisconnectGrace.graceOver(core, timer.executionId);
      return;
    case "rollout": {
      core.rolloutTimers.delete(timer.job);
      const job = core.jobs.get(timer.job);
      if (job !== undefined) Rollouts.advance(core, job);
      return;
    }
  }
}
