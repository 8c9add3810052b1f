import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ListAssignmentsResponseSchema } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentSchema, AgentState, ExecutionSchema, ExecutionState, JobSchema } from "../../../shared/gen/shardline/v1/types_pb.js";
import { reconnectDelayMs } from "./live-feed.js";
import { LiveState, shardKey } from "./live-state.js";
import { snapshotFromLists } from "./unary-snapshot.js";

describe("following the controller", () => {
  it("waits 0.5 s, then twice as long after each failure up to 10 s, spread by ±20%", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 20].map((attempt) => reconnectDelayMs(attempt, 0.5))).toEqual([500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
    expect(reconnectDelayMs(0, 0)).toBe(400);
    expect(reconnectDelayMs(5, 0.999)).toBeLessThanOrEqual(12_000);
  });

  it("makes a whole snapshot from the unary lists for a controller without Watch: every shard, its owner or why none, its latest run", () => {
    const job = create(JobSchema, { name: "rollup", specJson: JSON.stringify({ shards: 3 }), disabledShards: [2] });
    const agents = [create(AgentSchema, { id: "w-1", state: AgentState.READY }), create(AgentSchema, { id: "w-2", state: AgentState.LOST })];
    const assignments = create(ListAssignmentsResponseSchema, {
      assignments: [{ job: "rollup", shard: 0, agent: "w-1", revoking: true }],
      unassigned: [{ job: "rollup", shard: 1, reason: "no connected agent declares handler \"x\"" }],
    });
    const run = (fire: number, shard: number, attempt: number, state: ExecutionState) => create(ExecutionSchema, { id: `rollup/${fire}/${shard}/${attempt}`, job: "rollup", shard, fireTimeUnixMs: BigInt(fire), attempt, state });
    const executions = [run(2000, 0, 1, ExecutionState.LOST), run(2000, 0, 2, ExecutionState.RUNNING), run(1000, 0, 1, ExecutionState.SUCCEEDED), run(1000, 1, 1, ExecutionState.FAILED)];
    const snapshot = snapshotFromLists({ jobs: [job], agents, assignments, executions }, "127.0.0.1:7071", 5000);
    expect(snapshot).toMatchObject({ reset: true, synced: true });
    expect(snapshot.status).toMatchObject({ agentsConnected: 1, agentsLost: 1, jobs: 1, shards: 3, shardsUnassigned: 1, term: 0n });

    const state = new LiveState();
    state.apply(snapshot);
    expect(state.shards.get(shardKey("rollup", 0))).toMatchObject({ agent: "w-1", revoking: true, lastExecution: { id: "rollup/2000/0/2" } });
    expect(state.shards.get(shardKey("rollup", 1))).toMatchObject({ agent: "", unassignedReason: 'no connected agent declares handler "x"', lastExecution: { id: "rollup/1000/1/1" } });
    expect(state.shards.get(shardKey("rollup", 2))).toMatchObject({ disabled: true });
    expect(state.shards.get(shardKey("rollup", 2))?.lastExecution).toBeUndefined();
  });
});
