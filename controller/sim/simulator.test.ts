import { describe, expect, it } from "vitest";
import { DEFAULT_CORE_CONFIG } from "../core/config.js";
import { simulateMany } from "./scenario.js";
import { InvariantViolation, type Scenario, World } from "./world.js";

/** Fixed, so a failure in CI replays exactly; `npm run simulate` picks a new seed each run. */
const SEED = 20261130;

function run(scenario: Scenario, config = DEFAULT_CORE_CONFIG): void {
  new World(scenario, config).run();
}

describe("the deterministic simulator", () => {
  it("keeps the invariants of docs/architecture.md through 2,000 random fault schedules", () => {
    const result = simulateMany(2000, SEED);
    expect(result.failure).toBeUndefined();
    expect(result.seeds).toBe(2000);
  }, 300_000);

  it("catches a broken invariant and shrinks it: with no lease margin and an agent clock running slow, two agents own one shard", () => {
    const noMargin = { ...DEFAULT_CORE_CONFIG, leaseMarginMs: -100 };
    const scenario: Scenario = { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 1750 }, { kind: "partition", agent: 0 }, { kind: "advance", ms: 4000 }] };
    expect(() => run(scenario, noMargin)).toThrow(InvariantViolation);
    expect(() => run(scenario)).not.toThrow();
  });

  // Each of these broke an invariant before the fix the note names; they stay as regressions.
  const regressions: [string, Scenario][] = [
    [
      "a reconnecting agent's report of a finished run frees its shard for the next fire, which is not taken for a run missing from its Hello",
      { seed: 618125569, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 2750 }, { kind: "drop", agent: 0 }] },
    ],
    [
      "a shard cut off by a smaller shard count and added back stays fenced for its disconnected owner",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 1 }, { kind: "drop", agent: 1 }, { kind: "edit", job: 1, shards: 1 }, { kind: "edit", job: 1, shards: 2 }] },
    ],
    [
      "a lost run of a removed shard ends cancelled, not lost without a re-run",
      { seed: 3, drifts: [0, 0, 0], steps: [{ kind: "edit", job: 0, shards: 4 }, { kind: "advance", ms: 2000 }, { kind: "drop", agent: 1 }, { kind: "edit", job: 0, shards: 1 }] },
    ],
    [
      "a fenced agent claims nothing, so a restarted controller cannot hand its stale shards out twice",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 1750 }, { kind: "drop", agent: 0 }, { kind: "advance", ms: 1800 }, { kind: "failover" }] },
    ],
    [
      "an agent whose clock runs slow has fenced itself before its shards move",
      { seed: 7, drifts: [0, 0, -5.551115123125784e-17], steps: [{ kind: "advance", ms: 1750 }, { kind: "drop", agent: 2 }] },
    ],
    [
      "under a leader's bounded leases, a slow agent's lease ends in the controller's view when it ends on the agent, which fences instead of refusing dispatches forever",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "slow", agent: 0 }, { kind: "advance", ms: 289 }, { kind: "advance", ms: 211 }], leaderLeases: true },
    ],
    [
      "a leader that steps down on purpose, its agents' leases still running, makes the next one wait them out",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 1 }, { kind: "resign" }], leaderLeases: true },
    ],
    [
      "a fire queued behind a run restored for an agent that never came back starts once that run is lost, not at the shard's next fire",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 2891 }, { kind: "failover" }, { kind: "advance", ms: 3828 }], leaderLeases: true },
    ],
    [
      "a second process under a connected agent's id is refused and sent nothing, and the agent keeps its shards",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 1500 }, { kind: "impostor", agent: 0 }, { kind: "advance", ms: 3000 }] },
    ],
    [
      "a restarted process takes a lost agent's id over at once, its predecessor's shards fenced until that one's lease ends",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 1500 }, { kind: "crash", agent: 1 }, { kind: "impostor", agent: 1 }, { kind: "restart", agent: 1 }, { kind: "advance", ms: 4000 }] },
    ],
    [
      "a shard being moved away from an agent that crashed moves once the old lease ends, after a new process took the id over",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "crash", agent: 0 }, { kind: "advance", ms: 1000 }] },
    ],
    [
      "a leader that steps down still within its predecessor's leases passes them on",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "partition", agent: 0 }, { kind: "resign" }, { kind: "resign" }], leaderLeases: true },
    ],
    [
      "a deleted job applied again cannot give a shard to a second agent while its disconnected owner holds it",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 1 }, { kind: "delete", job: 1 }, { kind: "drop", agent: 0 }, { kind: "edit", job: 1, shards: 1 }] },
    ],
    [
      "a deleted job applied again fires after the deleted one's last fire, never reusing an execution id",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 1750 }, { kind: "delete", job: 1 }, { kind: "edit", job: 1, shards: 1 }] },
    ],
    [
      "an agent lists a run dispatched ahead and not started yet in its Hello, so a restarted controller does not run that fire a second time beside it (found by real-process chaos before the simulator ran the real agent core)",
      { seed: 14, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 2702 }, { kind: "advance", ms: 3048 }, { kind: "failover" }] },
    ],
    [
      "a delayed report that reaches the controller the instant its agent's lease expires there is ignored, as the shell ignores it, and its stream is closed",
      { seed: 1880026922, drifts: [0, 0, 0], steps: [{ kind: "advance", ms: 2500 }, { kind: "delay", agent: 1, ms: 786 }, { kind: "advance", ms: 3055 }, { kind: "advance", ms: 3046 }] },
    ],
    [
      "a daemon shard whose run was lost across a failover, on an agent other than its new owner, runs again on the owner",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "partition", agent: 0 }, { kind: "failover" }], leaderLeases: true, daemons: true },
    ],
    [
      "a restarted controller sends no run to an agent that said Goodbye, so a refused run does not come back to it without end",
      {
        seed: 293426482,
        drifts: [0, 0, 0],
        steps: [{ kind: "advance", ms: 2500 }, { kind: "partition", agent: 0 }, { kind: "advance", ms: 2050 }, { kind: "drain", agent: 1 }, { kind: "resign" }],
        daemons: true,
      },
    ],
    [
      "a fire whose runs and completion hook keep timing out is accounted for once its retries are over, even when that is past the usual settling time",
      {
        seed: 26507677,
        drifts: [0, 0, 0],
        steps: [
          { kind: "advance", ms: 2191 },
          { kind: "delete", job: 1 },
          { kind: "slow", agent: 0 },
          { kind: "advance", ms: 3485 },
          { kind: "advance", ms: 2637 },
          { kind: "advance", ms: 3891 },
          { kind: "stall", ms: 4274 },
          { kind: "partition", agent: 1 },
          { kind: "advance", ms: 2047 },
          { kind: "advance", ms: 3134 },
        ],
        leaderLeases: false,
        daemons: true,
        graceMs: 0,
      },
    ],
    [
      "a Dispatch that crosses a leaving agent's Goodbye on a slow link runs on that agent, which releases nothing before the controller has read the Goodbye",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "delay", agent: 0, ms: 150 }, { kind: "advance", ms: 800 }, { kind: "drain", agent: 0 }] },
    ],
    [
      "an agent asked to leave while its Hello waits for a stalled controller waits for the Welcome and says Goodbye, rather than leave shards and runs to its lease",
      { seed: 0, drifts: [0, 0, 0], steps: [{ kind: "stall", ms: 749 }, { kind: "drain", agent: 0 }], daemons: true, graceMs: 0, fireBudget: 1 },
    ],
  ];
  for (const [name, scenario] of regressions) {
    it(name, () => {
      expect(() => run(scenario)).not.toThrow();
    });
  }
});
