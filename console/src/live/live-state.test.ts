import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ControllerStatusSchema, ShardStatusSchema, WatchResponseSchema, type WatchResponse } from "../../../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentSchema, ExecutionSchema, ExecutionState, JobSchema } from "../../../shared/gen/shardline/v1/types_pb.js";
import { LiveState, shardKey } from "./live-state.js";

const job = (name: string) => create(JobSchema, { name, specJson: JSON.stringify({ shards: 2, timeZone: "UTC" }) });
const agent = (id: string) => create(AgentSchema, { id });
const shard = (jobName: string, n: number, owner: string) => create(ShardStatusSchema, { job: jobName, shard: n, agent: owner });
const execution = (jobName: string, n: number, fire: number, state: ExecutionState, attempt = 1) =>
  create(ExecutionSchema, { id: `${jobName}/${fire}/${n}/${attempt}`, job: jobName, shard: n, fireTimeUnixMs: BigInt(fire), attempt, state });
const message = (fields: MessageInitShape<typeof WatchResponseSchema>): WatchResponse => create(WatchResponseSchema, fields);

describe("LiveState, the console's copy of a watch", () => {
  it("builds the snapshot over several messages and is synced only at the message that says so", () => {
    const state = new LiveState();
    state.apply(message({ cursor: "1", jobs: [job("rollup")], agents: [agent("w-1")] }));
    expect(state.synced).toBe(false);
    state.apply(message({ cursor: "2", synced: true, shards: [shard("rollup", 0, "w-1"), shard("rollup", 1, "")] }));
    expect(state.synced).toBe(true);
    expect(state.cursor).toBe("2");
    expect([...state.jobs.keys()]).toEqual(["rollup"]);
    expect(state.shards.get(shardKey("rollup", 1))?.agent).toBe("");
    expect(state.version).toBe(2);
  });

  it("applies changes whole, and removals after the upserts of the same message", () => {
    const state = new LiveState();
    state.apply(message({ synced: true, agents: [agent("w-1"), agent("w-2")], shards: [shard("rollup", 0, "w-1")] }));
    state.apply(message({ shards: [shard("rollup", 0, "w-2")], removedAgents: ["w-1"] }));
    expect(state.shards.get(shardKey("rollup", 0))?.agent).toBe("w-2");
    expect([...state.agents.keys()]).toEqual(["w-2"]);
    // An agent changed and forgotten in one message is gone.
    state.apply(message({ agents: [agent("w-2")], removedAgents: ["w-2"] }));
    expect(state.agents.size).toBe(0);
  });

  it("drops a deleted job's shards with it, even those the watch did not list as removed", () => {
    const state = new LiveState();
    state.apply(message({ synced: true, jobs: [job("rollup"), job("sweep")], shards: [shard("rollup", 0, "w-1"), shard("rollup", 1, "w-1"), shard("sweep", 0, "w-1")] }));
    state.apply(message({ deletedJobs: ["rollup"], removedShards: [{ job: "rollup", shard: 0 }] }));
    expect([...state.jobs.keys()]).toEqual(["sweep"]);
    expect([...state.shards.keys()]).toEqual([shardKey("sweep", 0)]);
  });

  it("drops everything it had on a reset, and keeps the cursor the reset message brings", () => {
    const state = new LiveState();
    state.apply(message({ cursor: "7", synced: true, jobs: [job("rollup")], agents: [agent("w-1")], executions: [execution("rollup", 0, 1000, ExecutionState.SUCCEEDED)] }));
    state.apply(message({ cursor: "r1", reset: true, jobs: [job("sweep")] }));
    expect(state.synced).toBe(false);
    expect([...state.jobs.keys()]).toEqual(["sweep"]);
    expect(state.agents.size).toBe(0);
    expect(state.executions.size).toBe(0);
    expect(state.cursor).toBe("r1");
  });

  it("reads the controller's clock from its status, so that lease countdowns do not depend on this browser's", () => {
    const state = new LiveState();
    state.apply(message({ status: create(ControllerStatusSchema, { term: 3n, timeUnixMs: 10_000n }) }), 4_000);
    expect(state.clockOffsetMs).toBe(6_000);
    expect(state.controllerNow(5_000)).toBe(11_000);
    expect(state.status?.term).toBe(3n);
  });

  it("tells its listeners after each message", () => {
    const state = new LiveState();
    let heard = 0;
    const stop = state.subscribe(() => heard++);
    state.apply(message({}));
    state.apply(message({}));
    stop();
    state.apply(message({}));
    expect(heard).toBe(2);
  });

  it("gives a job's shards in order, and the finished runs of its newest fire that has any", () => {
    const state = new LiveState();
    state.apply(
      message({
        synced: true,
        shards: [shard("rollup", 1, "w-1"), shard("rollup", 0, "w-2")],
        executions: [
          execution("rollup", 0, 2000, ExecutionState.PENDING),
          execution("rollup", 0, 1000, ExecutionState.FAILED, 1),
          execution("rollup", 0, 1000, ExecutionState.SUCCEEDED, 2),
          execution("rollup", 1, 1000, ExecutionState.FAILED),
          execution("rollup", 1, 500, ExecutionState.SUCCEEDED),
        ],
      }),
    );
    expect(state.shardsOfJob("rollup").map((s) => s.shard)).toEqual([0, 1]);
    expect(state.lastFinishedFire("rollup").map((e) => e.id).sort()).toEqual(["rollup/1000/0/2", "rollup/1000/1/1"]);
    expect(state.lastFinishedFire("other")).toEqual([]);
  });

  it("colours a shard by its run before when its latest is only dispatched ahead of its fire instant", () => {
    const state = new LiveState();
    const withRun = (run: ReturnType<typeof execution>) => create(ShardStatusSchema, { job: "rollup", shard: 0, agent: "w-1", lastExecution: run });
    const ahead = (fire: number) => create(ExecutionSchema, { ...execution("rollup", 0, fire, ExecutionState.PENDING), agent: "w-1" });
    state.apply(message({ synced: true, shards: [withRun(ahead(1000))] }));
    // Nothing seen before it: the pending run is all there is.
    expect(state.shownRun(state.shards.get(shardKey("rollup", 0))!)?.id).toBe("rollup/1000/0/1");
    state.apply(message({ shards: [withRun(execution("rollup", 0, 1000, ExecutionState.FAILED))] }));
    state.apply(message({ shards: [withRun(ahead(2000))] }));
    expect(state.shownRun(state.shards.get(shardKey("rollup", 0))!)?.state).toBe(ExecutionState.FAILED);
    // A pending run that waits for something (no owner, no slot) is shown as it is.
    const waiting = create(ExecutionSchema, { ...execution("rollup", 0, 3000, ExecutionState.PENDING), waitingReason: "shard 0 has no owner" });
    state.apply(message({ shards: [withRun(waiting)] }));
    expect(state.shownRun(state.shards.get(shardKey("rollup", 0))!)?.id).toBe("rollup/3000/0/1");
  });
});
