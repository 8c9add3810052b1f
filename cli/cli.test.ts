import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Server } from "@grpc/grpc-js";
import { ShardlineError } from "../shared/errors.js";
import { AdminService, ShardAssignmentSchema, type ListExecutionsRequest, WatchTopic } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { AgentSchema, AgentState, ExecutionSchema, ExecutionState, JobSchema, RevisionSchema, RolloutStatusSchema, type Job } from "../shared/gen/shardline/v1/types_pb.js";
import { addService, createServer, listen, shutdown } from "../shared/grpc/index.js";
import { runAgent, type AgentModule, type AgentStartOptions } from "./commands/agent.js";
import { runController, type ControllerStartOptions } from "./commands/controller.js";
import { runCli } from "./commands/program.js";
import type { CliIo } from "./output.js";

/** An in-memory CliIo: what a command wrote, plus a way to send it SIGINT or SIGTERM. */
function captureIo(options: { env?: Record<string, string>; stdin?: string } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const listeners = new Set<(signal: NodeJS.Signals) => void>();
  const io: CliIo = {
    stdout: (text) => void out.push(text),
    stderr: (text) => void err.push(text),
    readStdin: () => Promise.resolve(options.stdin ?? ""),
    env: options.env ?? {},
    onSignal(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  return {
    io,
    stdout: () => out.join(""),
    stderr: () => err.join(""),
    signal: (name: NodeJS.Signals) => [...listeners].forEach((listener) => listener(name)),
    listening: () => listeners.size,
  };
}

/** Runs `shardline ARGS` in-process against the scripted controller. */
async function shardline(args: string[], options: { stdin?: string } = {}) {
  const capture = captureIo({ env: { SHARDLINE_CONTROLLER: address }, ...options });
  const code = await runCli(args, capture.io);
  return { code, stdout: capture.stdout(), stderr: capture.stderr() };
}

const T0 = 1_767_225_600_000n; // 2026-01-01T00:00:00Z

function job(name: string, spec: Record<string, unknown>, fields: Omit<MessageInitShape<typeof JobSchema>, "$typeName"> = {}): Job {
  const manifest = `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec: ${JSON.stringify(spec)}\n`;
  return create(JobSchema, { name, manifest, specJson: JSON.stringify({ name, ...spec }), revision: 1n, ...fields });
}

/** billing-rollup's rollout: revision 3 reached the canary, passed its analysis, and waits to be promoted. */
const ROLLOUT = create(RolloutStatusSchema, {
  phase: "paused",
  currentRevision: 3n,
  stableRevision: 2n,
  targetRevision: 3n,
  steps: ["wave: cluster in (canary)", "analysis: at least 2 runs, at most 0 failed", "pause: until promoted", "wave: cluster in (east)"],
  step: 3,
  stepStartedAtUnixMs: T0,
  shardsByRevision: [
    { revision: 2n, shards: [1] },
    { revision: 3n, shards: [0, 2] },
  ],
  windowStartedAtUnixMs: T0,
  target: { runs: 2, failures: 0, p95DurationMs: 1500n },
  stable: { runs: 1, failures: 1 },
  waiting: "paused until promoted (shardline rollout promote)",
});

/** billing-rollup's revisions, newest first: 3 rolls out, 2 undid a change back to 1's spec. */
const REVISIONS = [
  create(RevisionSchema, { job: "billing-rollup", revision: 3n, manifest: "metadata: {name: billing-rollup} # v3", specHash: "c".repeat(64), appliedAtUnixMs: T0 + 3000n, appliedBy: "alice" }),
  create(RevisionSchema, { job: "billing-rollup", revision: 2n, manifest: "metadata: {name: billing-rollup} # v1", specHash: "a".repeat(64), appliedAtUnixMs: T0 + 2000n, appliedBy: "bob", undoOf: 1n }),
  create(RevisionSchema, { job: "billing-rollup", revision: 1n, manifest: "metadata: {name: billing-rollup} # v1", specHash: "a".repeat(64), appliedAtUnixMs: T0 + 1000n }),
];

const JOBS = [
  job("billing-rollup", { schedule: "*/5 * * * * *", timeZone: "Asia/Shanghai", shards: 3, handler: "billing", strategy: "sticky", failover: "fenced" }, {
    nextFireUnixMs: T0 + 5000n,
    lastFireUnixMs: T0,
    revision: 3n,
    rollout: ROLLOUT,
  }),
  job("reindex", { timeZone: "UTC", shards: 1, handler: "reindex", strategy: "balanced", failover: "off" }, { paused: true }),
];

const AGENTS = [
  create(AgentSchema, {
    id: "agent-a",
    labels: { zone: "eu-1" },
    capacity: 2,
    handlers: ["billing", "reindex"],
    version: "0.1.0",
    state: AgentState.READY,
    shards: [
      { job: "billing-rollup", shard: 0 },
      { job: "billing-rollup", shard: 2 },
    ],
    leaseExpiresUnixMs: T0 + 2000n,
    connectedAtUnixMs: T0 - 60_000n,
  }),
  create(AgentSchema, { id: "agent-b", capacity: 1, handlers: ["billing"], version: "0.1.0", state: AgentState.DRAINING, cordoned: true, shards: [{ job: "billing-rollup", shard: 1 }] }),
];

const ASSIGNMENTS = [
  create(ShardAssignmentSchema, { job: "billing-rollup", shard: 0, agent: "agent-a", term: 1n, generation: 4n }),
  create(ShardAssignmentSchema, { job: "billing-rollup", shard: 1, agent: "agent-b", term: 1n, generation: 5n, revoking: true }),
  create(ShardAssignmentSchema, { job: "billing-rollup", shard: 2, agent: "agent-a", term: 1n, generation: 4n }),
];

const EXECUTIONS = [
  create(ExecutionSchema, {
    id: `billing-rollup/${T0}/0/1`,
    job: "billing-rollup",
    shard: 0,
    fireTimeUnixMs: T0,
    attempt: 1,
    agent: "agent-a",
    state: ExecutionState.SUCCEEDED,
    startedAtUnixMs: T0 + 2n,
    finishedAtUnixMs: T0 + 1502n,
    result: '{"rows":12}',
    cause: "schedule",
    revision: 3n,
  }),
  create(ExecutionSchema, {
    id: `billing-rollup/${T0}/1/2`,
    job: "billing-rollup",
    shard: 1,
    fireTimeUnixMs: T0,
    attempt: 2,
    agent: "agent-b",
    state: ExecutionState.TIMED_OUT,
    startedAtUnixMs: T0 + 3n,
    finishedAtUnixMs: T0 + 300_003n,
    error: "timed out after 300 s",
    cause: "failover",
    revision: 2n,
  }),
  create(ExecutionSchema, { id: `billing-rollup/${T0}/2/1`, job: "billing-rollup", shard: 2, fireTimeUnixMs: T0, attempt: 1, state: ExecutionState.PENDING, cause: "schedule" }),
];

/** What the scripted controller was asked, for checking how flags become requests. */
const asked: {
  listExecutions: ListExecutionsRequest[];
  trigger: { name: string; shards: number[]; parameter: string }[];
  drained: string[];
  applied: number;
  rollout: string[];
} = {
  listExecutions: [],
  trigger: [],
  drained: [],
  applied: 0,
  rollout: [],
};

let server: Server;
let address: string;

/**
 * A scripted AdminService: fixed jobs, agents, assignments and executions, NOT_FOUND for unknown
 * names, and an apply that answers by the manifest's name (new-job created, billing-rollup
 * configured, reindex unchanged).
 */
beforeAll(async () => {
  server = createServer();
  const known = (name: string): Job => {
    const found = JOBS.find((candidate) => candidate.name === name);
    if (!found) throw new ShardlineError("not-found", `job "${name}" not found`);
    return found;
  };
  const applyOne = (manifest: string) => {
    const name = /name: ([a-z-]+)/.exec(manifest)?.[1] ?? "";
    if (name === "new-job") return { job: job("new-job", {}, { revision: 1n }), changed: true };
    if (name === "warned-job") {
      return { job: job("warned-job", {}, { revision: 1n }), changed: true, warnings: ["no connected agent runs handler nightly", "spec.schedule fires every second"] };
    }
    if (name === "billing-rollup") return { job: { ...known(name), revision: 4n }, changed: true };
    if (name === "reindex") return { job: known(name), changed: false };
    throw ShardlineError.invalid("metadata.name", name, "a DNS-1123 label");
  };
  addService(server, AdminService, {
    applyJob: async ({ manifest }) => {
      asked.applied++;
      return applyOne(manifest);
    },
    // All or nothing, as the controller does: every manifest is checked before any counts as applied.
    applyJobs: async ({ manifests }) => {
      const results = manifests.map((manifest, index) => {
        try {
          return applyOne(manifest);
        } catch (error) {
          if (!(error instanceof ShardlineError)) throw error;
          throw new ShardlineError(error.code, `manifests[${index}]: ${error.message}; nothing was applied`, error.details);
        }
      });
      asked.applied += manifests.length;
      return { results };
    },
    getJob: async ({ name }) => ({ job: known(name) }),
    listJobs: async () => ({ jobs: JOBS }),
    deleteJob: async ({ name }) => (known(name), {}),
    triggerJob: async (request) => {
      known(request.name);
      asked.trigger.push({ name: request.name, shards: [...request.shards], parameter: request.parameter });
      return { fireTimeUnixMs: T0, executionIds: [`${request.name}/${T0}/0/1`, `${request.name}/${T0}/2/1`] };
    },
    pauseJob: async ({ name }) => (known(name), {}),
    resumeJob: async ({ name }) => (known(name), {}),
    listAgents: async () => ({ agents: AGENTS }),
    drainAgent: async ({ id }) => {
      if (!AGENTS.some((agent) => agent.id === id)) throw new ShardlineError("not-found", `agent "${id}" not found`);
      asked.drained.push(id);
      return {};
    },
    uncordonAgent: async ({ id }) => {
      if (id === "agent-a") throw new ShardlineError("failed-precondition", `agent "${id}" is not cordoned`);
      return {};
    },
    listAssignments: async ({ job: only }) => ({ assignments: ASSIGNMENTS.filter((assignment) => only === "" || assignment.job === only) }),
    listExecutions: async (request) => {
      asked.listExecutions.push(request);
      return { executions: EXECUTIONS };
    },
    getExecution: async ({ id }) => {
      const execution = EXECUTIONS.find((candidate) => candidate.id === id);
      if (!execution) throw new ShardlineError("not-found", `execution "${id}" not found`);
      return { execution };
    },
    getRollout: async ({ job: name }) => ({ rollout: known(name).rollout }),
    promoteRollout: async ({ job: name, full }) => {
      asked.rollout.push(`promote ${name} full=${full}`);
      if (known(name).rollout === undefined) throw new ShardlineError("failed-precondition", `job ${name} has never rolled out a change: nothing to promote`);
      return { rollout: { ...ROLLOUT, phase: "progressing", step: 4, waiting: "" } };
    },
    abortRollout: async ({ job: name }) => {
      asked.rollout.push(`abort ${name}`);
      known(name);
      return { rollout: { ...ROLLOUT, phase: "aborted", reason: "aborted by bob", waiting: "", endedAtUnixMs: T0 + 9000n } };
    },
    retryRollout: async ({ job: name }) => {
      known(name);
      throw new ShardlineError("failed-precondition", `job ${name} has no rollout in progress: nothing to retry`);
    },
    undoRollout: async ({ job: name, toRevision }) => {
      asked.rollout.push(`undo ${name} to=${toRevision}`);
      known(name);
      if (toRevision === 9n) {
        throw new ShardlineError("not-found", `revision 9 of job ${name} not found: ...; run "shardline rollout history ${name}" to list them`);
      }
      const undoOf = toRevision === 0n ? 2n : toRevision;
      return { job: { ...known(name), revision: 4n }, undoOf, changed: undoOf !== 3n, warnings: undoOf === 1n ? ["no connected agent declares handler billing"] : [] };
    },
    listRevisions: async ({ job: name }) => (known(name), { revisions: name === "billing-rollup" ? REVISIONS : [] }),
    watch: async ({ job: only, topics }, stream) => {
      if (topics.includes(WatchTopic.JOBS)) {
        // The snapshot, one job changed, one deleted; then the stream ends.
        stream.send({ cursor: "c.0", jobs: JOBS.slice(0, 2), synced: true });
        stream.send({ cursor: "c.1", jobs: [{ ...JOBS[0]!, paused: true }] });
        stream.send({ cursor: "c.2", deletedJobs: [JOBS[1]!.name] });
      } else {
        const events = [
          { timeUnixMs: T0, type: "agent.joined", agent: "agent-a", message: "agent agent-a joined" },
          { timeUnixMs: T0 + 1n, type: "shard.moved", job: "billing-rollup", shard: 1, agent: "agent-b", message: "" },
        ];
        stream.send({ cursor: "c.0", events: events.filter((event) => only === "" || event.job === only), synced: true });
        stream.send({ cursor: "c.1", events: [{ timeUnixMs: T0 + 2n, type: "job.paused", job: "billing-rollup", message: "job billing-rollup paused" }] });
      }
      await stream.drained();
    },
  });
  address = `127.0.0.1:${await listen(server, "127.0.0.1:0")}`;
});

afterAll(async () => {
  await shutdown(server, 100);
});

describe("shardline get, against a controller on loopback", () => {
  it("prints agents as the JSON contract: id, labels, state, shards and the extra fields", async () => {
    const { code, stdout, stderr } = await shardline(["get", "agents", "-o", "json"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual([
      {
        id: "agent-a",
        labels: { zone: "eu-1" },
        state: "ready",
        shards: [
          { job: "billing-rollup", shard: 0 },
          { job: "billing-rollup", shard: 2 },
        ],
        capacity: 2,
        handlers: ["billing", "reindex"],
        version: "0.1.0",
        cordoned: false,
        leaseExpiresAt: "2026-01-01T00:00:02.000Z",
        connectedAt: "2025-12-31T23:59:00.000Z",
        instanceId: null,
        refusedHellos: 0,
        lastRefusal: null,
      },
      {
        id: "agent-b",
        labels: {},
        state: "draining",
        shards: [{ job: "billing-rollup", shard: 1 }],
        capacity: 1,
        handlers: ["billing"],
        version: "0.1.0",
        cordoned: true,
        leaseExpiresAt: null,
        connectedAt: null,
        instanceId: null,
        refusedHellos: 0,
        lastRefusal: null,
      },
    ]);
  });

  it("prints assignments as [{job, shard, agent, generation, term, revoking}]", async () => {
    const { code, stdout } = await shardline(["get", "assignments", "-o", "json"]);
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual([
      { job: "billing-rollup", shard: 0, agent: "agent-a", generation: 4, term: 1, revoking: false },
      { job: "billing-rollup", shard: 1, agent: "agent-b", generation: 5, term: 1, revoking: true },
      { job: "billing-rollup", shard: 2, agent: "agent-a", generation: 4, term: 1, revoking: false },
    ]);
  });

  it("prints executions as the JSON contract, with hyphenated states and ISO times", async () => {
    const { code, stdout } = await shardline(["get", "executions", "-o", "json"]);
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual([
      {
        id: `billing-rollup/${T0}/0/1`,
        job: "billing-rollup",
        shard: 0,
        fireTime: "2026-01-01T00:00:00.000Z",
        agent: "agent-a",
        attempt: 1,
        state: "succeeded",
        startedAt: "2026-01-01T00:00:00.002Z",
        finishedAt: "2026-01-01T00:00:01.502Z",
        error: null,
        result: '{"rows":12}',
        cause: "schedule",
        queuePosition: null,
        fireComplete: false,
        waitingReason: null,
        revision: 3,
        traceId: null,
      },
      {
        id: `billing-rollup/${T0}/1/2`,
        job: "billing-rollup",
        shard: 1,
        fireTime: "2026-01-01T00:00:00.000Z",
        agent: "agent-b",
        attempt: 2,
        state: "timed-out",
        startedAt: "2026-01-01T00:00:00.003Z",
        finishedAt: "2026-01-01T00:05:00.003Z",
        error: "timed out after 300 s",
        result: null,
        cause: "failover",
        queuePosition: null,
        fireComplete: false,
        waitingReason: null,
        revision: 2,
        traceId: null,
      },
      {
        id: `billing-rollup/${T0}/2/1`,
        job: "billing-rollup",
        shard: 2,
        fireTime: "2026-01-01T00:00:00.000Z",
        agent: null,
        attempt: 1,
        state: "pending",
        startedAt: null,
        finishedAt: null,
        error: null,
        result: null,
        cause: "schedule",
        queuePosition: null,
        fireComplete: false,
        waitingReason: null,
        revision: null,
        traceId: null,
      },
    ]);
  });

  it("prints jobs as kubectl does: a List of the manifests as applied, each with its status apart; one job as a single object", async () => {
    const list = await shardline(["get", "jobs", "-o", "json"]);
    const printed = JSON.parse(list.stdout) as { apiVersion: string; kind: string; items: unknown[] };
    expect(printed).toMatchObject({ apiVersion: "v1", kind: "List" });
    expect(printed.items).toHaveLength(2);
    const expected = {
      apiVersion: "shardline.dev/v1",
      kind: "ShardedJob",
      metadata: { name: "billing-rollup" },
      spec: { schedule: "*/5 * * * * *", timeZone: "Asia/Shanghai", shards: 3, handler: "billing", strategy: "sticky", failover: "fenced" },
      status: {
        revision: 3,
        paused: false,
        nextFire: "2026-01-01T00:00:05.000Z",
        lastFire: "2026-01-01T00:00:00.000Z",
        upcomingFires: [],
        disabledShards: [],
        waitingReason: null,
        rollout: {
          job: "billing-rollup",
          phase: "paused",
          currentRevision: 3,
          stableRevision: 2,
          targetRevision: 3,
          steps: ["wave: cluster in (canary)", "analysis: at least 2 runs, at most 0 failed", "pause: until promoted", "wave: cluster in (east)"],
          step: 3,
          stepStartedAt: "2026-01-01T00:00:00.000Z",
          shardsByRevision: [
            { revision: 2, shards: [1] },
            { revision: 3, shards: [0, 2] },
          ],
          windowStartedAt: "2026-01-01T00:00:00.000Z",
          target: { runs: 2, failures: 0, p95Ms: 1500 },
          stable: { runs: 1, failures: 1, p95Ms: null },
          reason: null,
          endedAt: null,
          waiting: "paused until promoted (shardline rollout promote)",
        },
      },
    };
    expect(printed.items[0]).toEqual(expected);
    expect(printed.items[1]).toMatchObject({ metadata: { name: "reindex" }, spec: { shards: 1 }, status: { paused: true, nextFire: null, lastFire: null, revision: 1, rollout: null } });
    expect((await shardline(["get", "jobs", "-o", "name"])).stdout).toBe("job/billing-rollup\njob/reindex\n");

    const one = await shardline(["get", "job", "billing-rollup", "-o", "json"]);
    expect(one.code).toBe(0);
    expect(JSON.parse(one.stdout)).toEqual(expected);
  });

  it("prints YAML with the same shape", async () => {
    const { stdout } = await shardline(["get", "agents", "agent-b", "-o", "yaml"]);
    expect(stdout).toContain("id: agent-b\n");
    expect(stdout).toContain("state: draining\n");
    expect(stdout).toContain("leaseExpiresAt: null\n");
  });

  it("prints readable aligned tables, with more columns for -o wide", async () => {
    expect((await shardline(["get", "jobs"])).stdout).toBe(
      [
        // Times in the job's spec.timeZone (Asia/Shanghai), with its offset.
        "NAME             SCHEDULE        SHARDS   HANDLER   PAUSED   NEXT FIRE                   LAST FIRE",
        "billing-rollup   */5 * * * * *   3        billing   false    2026-01-01T08:00:05+08:00   2026-01-01T08:00:00+08:00",
        "reindex          <none>          1        reindex   true     <none>                      <none>",
        "",
      ].join("\n"),
    );
    expect((await shardline(["get", "agents"])).stdout).toBe(
      [
        "ID        STATE               SHARDS   CAPACITY   HANDLERS",
        "agent-a   ready               2        2          billing,reindex",
        "agent-b   draining,cordoned   1        1          billing",
        "",
      ].join("\n"),
    );
    expect((await shardline(["get", "assignments", "-o", "wide"])).stdout).toBe(
      [
        "JOB              SHARD   AGENT     GENERATION   TERM   REVOKING",
        "billing-rollup   0       agent-a   4            1      false",
        "billing-rollup   1       agent-b   5            1      true",
        "billing-rollup   2       agent-a   4            1      false",
        "",
      ].join("\n"),
    );
    const executions = (await shardline(["get", "executions"])).stdout.split("\n");
    expect(executions[0]).toBe("ID                                 JOB              SHARD   ATTEMPT   REVISION   AGENT     STATE       FIRE TIME                   DURATION");
    expect(executions[1]).toBe(`billing-rollup/${T0}/0/1   billing-rollup   0       1         3          agent-a   succeeded   2026-01-01T08:00:00+08:00   1.5s`);
    expect(executions[3]).toBe(`billing-rollup/${T0}/2/1   billing-rollup   2       1         <none>     <none>    pending     2026-01-01T08:00:00+08:00   -`);
  });

  it("turns --job, --agent, --state and --limit into the ListExecutions request, limit 100 by default", async () => {
    asked.listExecutions.length = 0;
    await shardline(["get", "executions", "--job", "billing-rollup", "--agent", "agent-b", "--state", "timed-out", "--limit", "5"]);
    await shardline(["get", "executions"]);
    expect(asked.listExecutions.map(({ job, agent, state, limit }) => ({ job, agent, state, limit }))).toEqual([
      { job: "billing-rollup", agent: "agent-b", state: ExecutionState.TIMED_OUT, limit: 5 },
      { job: "", agent: "", state: ExecutionState.UNSPECIFIED, limit: 100 },
    ]);
  });

  it("filters assignments by job and by agent", async () => {
    const { stdout } = await shardline(["get", "assignments", "billing-rollup", "--agent", "agent-b", "-o", "json"]);
    expect((JSON.parse(stdout) as { shard: number }[]).map((assignment) => assignment.shard)).toEqual([1]);
  });

  it("exits 3 with one line on stderr when the job, agent or execution does not exist", async () => {
    for (const args of [
      ["get", "jobs", "nope"],
      ["get", "agents", "nope"],
      ["get", "executions", "nope/1/0/1"],
      ["pause", "nope"],
      ["drain", "nope"],
    ]) {
      const { code, stdout, stderr } = await shardline(args);
      expect(code, args.join(" ")).toBe(3);
      expect(stdout).toBe("");
      expect(stderr).toMatch(/^shardline: [a-z]+ "nope[^"]*" not found; run "shardline get [a-z]+" to list .*\n$/);
    }
  });

  it("exits 4 when the state forbids the request", async () => {
    const { code, stderr } = await shardline(["uncordon", "agent-a"]);
    expect(code).toBe(4);
    expect(stderr).toBe('shardline: agent "agent-a" is not cordoned\n');
  });

  it("rejects filters that do not apply to the resource", async () => {
    const { code, stderr } = await shardline(["get", "jobs", "--state", "failed"]);
    expect(code).toBe(2);
    expect(stderr).toBe('shardline: --state does not apply to "get jobs"; it takes no filters\n');
  });
});

describe("shardline apply, trigger, pause, resume, delete, drain, uncordon", () => {
  it("says created, configured or unchanged for each manifest, reading - from stdin", async () => {
    const stdin = ["metadata: {name: new-job}", "metadata: {name: billing-rollup}", "metadata: {name: reindex}"].join("\n---\n");
    const { code, stdout } = await shardline(["apply", "-f", "-"], { stdin });
    expect(code).toBe(0);
    expect(stdout).toBe("job/new-job created\njob/billing-rollup configured\njob/reindex unchanged\n");
  });

  it("exits 2 with the controller's explanation for a manifest it rejects", async () => {
    const { code, stderr } = await shardline(["apply", "-f", "-"], { stdin: "metadata: {name: x}" });
    expect(code).toBe(2);
    expect(stderr).toBe('shardline: metadata.name: "x" is not allowed; expected a DNS-1123 label\n');
  });

  it("prints the controller's warnings on stderr after the job's line, and still exits 0", async () => {
    const { code, stdout, stderr } = await shardline(["apply", "-f", "-"], { stdin: "metadata: {name: warned-job}\n---\nmetadata: {name: reindex}\n" });
    expect(code).toBe(0);
    expect(stdout).toBe("job/warned-job created\njob/reindex unchanged\n");
    expect(stderr).toBe("warning: job/warned-job: no connected agent runs handler nightly\nwarning: job/warned-job: spec.schedule fires every second\n");
  });

  it("exits 2 without sending any document when one of them is over 256 KiB", async () => {
    const before = asked.applied;
    const stdin = `metadata: {name: new-job}\n---\nmetadata: {name: reindex}\n# ${"x".repeat(300 * 1024)}\n`;
    const { code, stdout, stderr } = await shardline(["apply", "-f", "-"], { stdin });
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^shardline: --file: standard input, document 2 of 2 \(job\/reindex\), is \d+ bytes; expected at most 262144 bytes \(256 KiB\) per manifest; the limit is fixed \(no flag raises it\): .*; nothing was applied\n$/);
    expect(asked.applied).toBe(before);
  });

  it("exits 2 for a manifest file that cannot be read, or is empty", async () => {
    const missing = await shardline(["apply", "-f", "/nonexistent/job.yaml"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('shardline: --file: cannot read "/nonexistent/job.yaml" (no such file); expected a readable manifest file, or - for standard input\n');
    expect((await shardline(["apply", "-f", "-"], { stdin: "\n" })).code).toBe(2);
  });

  it("triggers the chosen shards with a parameter and says what fired", async () => {
    asked.trigger.length = 0;
    const { code, stdout } = await shardline(["trigger", "billing-rollup", "--shards", "0,2", "--parameter", "month=2026-01"]);
    expect(code).toBe(0);
    expect(stdout).toBe("job/billing-rollup triggered: fire 2026-01-01T00:00:00Z, 2 executions\n");
    expect(asked.trigger).toEqual([{ name: "billing-rollup", shards: [0, 2], parameter: "month=2026-01" }]);
  });

  it("prints one line per action", async () => {
    expect((await shardline(["pause", "reindex"])).stdout).toBe("job/reindex paused\n");
    expect((await shardline(["resume", "reindex"])).stdout).toBe("job/reindex resumed\n");
    expect((await shardline(["delete", "reindex"])).stdout).toBe("job/reindex deleted\n");
    expect((await shardline(["drain", "agent-b"])).stdout).toBe("agent/agent-b draining\n");
    expect((await shardline(["uncordon", "agent-b"])).stdout).toBe("agent/agent-b uncordoned\n");
    expect(asked.drained).toContain("agent-b");
  });
});

describe("shardline rollout, describe job", () => {
  it("shows a rollout's step, revisions, shards, gate figures and what it waits for", async () => {
    const { code, stdout, stderr } = await shardline(["rollout", "status", "billing-rollup"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toBe(
      [
        "Job:        billing-rollup",
        "Phase:      paused",
        "Step:       3/4: pause: until promoted",
        "Revisions:  current 3, stable 2, target 3",
        "Shards:     revision 2: 1; revision 3: 0,2",
        "Analysis:   since 2026-01-01T00:00:00Z: revision 3: 2 runs, 0 failed, p95 1.5s; revision 2: 1 run, 1 failed",
        "Waiting:    paused until promoted (shardline rollout promote)",
        "Steps:",
        "  1. wave: cluster in (canary)",
        "  2. analysis: at least 2 runs, at most 0 failed",
        "> 3. pause: until promoted",
        "  4. wave: cluster in (east)",
        "",
      ].join("\n"),
    );
    const json = await shardline(["rollout", "status", "billing-rollup", "-o", "json"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ job: "billing-rollup", phase: "paused", step: 3, target: { runs: 2, failures: 0, p95Ms: 1500 }, stable: { p95Ms: null } });
  });

  it("says a job without a rollout runs one revision, and a watch of it ends at once with 0", async () => {
    const reindex = JOBS[1]!;
    const saved = reindex.rollout;
    reindex.rollout = create(RolloutStatusSchema, { phase: "none", currentRevision: 1n, stableRevision: 1n, targetRevision: 1n, shardsByRevision: [{ revision: 1n, shards: [0] }] });
    try {
      expect(await shardline(["rollout", "status", "reindex", "--watch"])).toEqual({
        code: 0,
        stdout: "Job:        reindex\nPhase:      none\nRevisions:  current 1 (nothing rolls out: every shard runs it)\nShards:     revision 1: 0\n",
        stderr: "",
      });
    } finally {
      reindex.rollout = saved;
    }
  });

  it("promotes, aborts and undoes, saying what the rollout does now; the controller's refusals exit 4 and 3", async () => {
    asked.rollout.length = 0;
    expect(await shardline(["rollout", "promote", "billing-rollup", "--full"])).toEqual({
      code: 0,
      stdout: "job/billing-rollup rollout promoted (every step); now progressing at step 4/4: wave: cluster in (east)\n",
      stderr: "",
    });
    expect((await shardline(["rollout", "abort", "billing-rollup"])).stdout).toBe(
      "job/billing-rollup rollout aborted; now aborted: every shard runs revision 2 (aborted by bob)\n",
    );
    expect((await shardline(["rollout", "undo", "billing-rollup"])).stdout).toBe("job/billing-rollup rolled back to revision 2: now revision 4, on every shard from its next fire\n");
    expect(await shardline(["rollout", "undo", "billing-rollup", "--to-revision", "1"])).toEqual({
      code: 0,
      stdout: "job/billing-rollup rolled back to revision 1: now revision 4, on every shard from its next fire\n",
      stderr: "warning: job/billing-rollup: no connected agent declares handler billing\n",
    });
    expect((await shardline(["rollout", "undo", "billing-rollup", "--to-revision", "3"])).stdout).toBe("job/billing-rollup unchanged: revision 4 already runs revision 3's spec\n");
    expect(asked.rollout).toEqual(["promote billing-rollup full=true", "abort billing-rollup", "undo billing-rollup to=0", "undo billing-rollup to=1", "undo billing-rollup to=3"]);

    expect(await shardline(["rollout", "promote", "reindex"])).toEqual({ code: 4, stdout: "", stderr: "shardline: job reindex has never rolled out a change: nothing to promote\n" });
    expect((await shardline(["rollout", "retry", "billing-rollup"])).code).toBe(4);
    expect(await shardline(["rollout", "undo", "billing-rollup", "--to-revision", "9"])).toMatchObject({ code: 3, stderr: expect.stringContaining('run "shardline rollout history billing-rollup"') });
    expect(await shardline(["rollout", "abort", "nope"])).toEqual({ code: 3, stdout: "", stderr: 'shardline: job "nope" not found; run "shardline get jobs" to list the jobs\n' });
    expect((await shardline(["rollout", "undo", "billing-rollup", "--to-revision", "0"])).code).toBe(2);
    expect((await shardline(["rollout", "status", "billing-rollup", "--timeout", "5"])).code).toBe(2);
  });

  it("lists revisions newest first, with who applied them, a short hash and which is current, stable or rolling out", async () => {
    expect((await shardline(["rollout", "history", "billing-rollup"])).stdout).toBe(
      [
        "REVISION   APPLIED                BY       HASH           NOTE",
        "3          2026-01-01T00:00:03Z   alice    cccccccccccc   current, rolling out, step 3/4",
        "2          2026-01-01T00:00:02Z   bob      aaaaaaaaaaaa   stable, undo of 1",
        "1          2026-01-01T00:00:01Z   <none>   aaaaaaaaaaaa",
        "",
      ].join("\n"),
    );
    const revisions = JSON.parse((await shardline(["rollout", "history", "billing-rollup", "-o", "json"])).stdout) as unknown[];
    expect(revisions[1]).toEqual({
      revision: 2,
      appliedAt: "2026-01-01T00:00:02.000Z",
      appliedBy: "bob",
      hash: "a".repeat(64),
      undoOf: 1,
      current: false,
      stable: true,
      manifest: "metadata: {name: billing-rollup} # v1",
    });
    expect(await shardline(["rollout", "history", "reindex"])).toEqual({ code: 0, stdout: "", stderr: "No revisions of job/reindex kept.\n" });
  });

  it("describes a job with its rollout", async () => {
    const { code, stdout } = await shardline(["describe", "job", "billing-rollup"]);
    expect(code).toBe(0);
    expect(stdout).toContain(
      [
        "Revision:     3",
        "Last fire:    2026-01-01T08:00:00+08:00",
        "Next fires:   <none>",
        "",
        "Rollout:",
        "  Phase:      paused",
        "  Step:       3/4: pause: until promoted",
        "  Revisions:  current 3, stable 2, target 3",
      ].join("\n"),
    );
    expect(stdout).toContain("  > 3. pause: until promoted\n");
  });
});

describe("shardline describe agent and execution", () => {
  it("shows an agent in full, and says how to list them for an unknown one", async () => {
    const { code, stdout } = await shardline(["describe", "agent", "agent-a"]);
    expect(code).toBe(0);
    expect(stdout).toBe(
      [
        "ID:           agent-a",
        "State:        ready",
        "Labels:       zone=eu-1",
        "Handlers:     billing, reindex",
        "Capacity:     2    Max concurrent: no limit    Running: 0",
        "Connected:    2025-12-31T23:59:00Z",
        "Lease until:  2026-01-01T00:00:02Z",
        "Version:      0.1.0    Instance: <none>",
        "Shards (2):",
        "  billing-rollup/0  billing-rollup/2",
        "",
      ].join("\n"),
    );
    expect((await shardline(["describe", "agent", "agent-b"])).stdout).toContain("State:        draining (cordoned: gets no new shards; shardline uncordon to undo)\n");
    expect(await shardline(["describe", "agent", "nope"])).toMatchObject({ code: 3, stderr: expect.stringContaining('agent "nope" not found; run "shardline get agents"') as string });
  });

  it("shows an execution in full; without a trace id there is no link, even with a template", async () => {
    const id = `billing-rollup/${T0}/0/1`;
    const { code, stdout } = await shardline(["describe", "execution", id, "--trace-url-template", "http://jaeger.example/trace/{traceId}"]);
    expect(code).toBe(0);
    expect(stdout).toContain(`ID:           ${id}\nJob:          billing-rollup    Shard: 0    Attempt: 1    Revision: 3\nState:        succeeded\n`);
    expect(stdout).toContain("Finished:     2026-01-01T08:00:01.502+08:00 (1.5s)\nResult:       {\"rows\":12}\nTrace:        none (the controller traces nothing)\n");
    expect(stdout).not.toContain("Trace link");
    expect(await shardline(["describe", "execution", id, "--trace-url-template", "jaeger/{traceId}"])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining("--trace-url-template: \"jaeger/{traceId}\" is not allowed; expected an http:// or https:// URL with {traceId}") as string,
    });
    expect(await shardline(["describe", "pod", "x"])).toMatchObject({ code: 2, stderr: expect.stringContaining("expected job, agent or execution") as string });
  });
});

describe("shardline get --watch", () => {
  it("prints the list, then each change: kubectl's watch events with -o json, rows with a table", async () => {
    const [first, second] = [JOBS[0]!.name, JOBS[1]!.name];
    const json = await shardline(["get", "jobs", "-w", "-o", "json"]);
    expect(json.code).toBe(0);
    const changes = json.stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as { type: string; object: { metadata: { name: string }; status: { paused: boolean } } });
    expect(changes.map(({ type, object }) => `${type} ${object.metadata.name} ${object.status.paused}`)).toEqual([`ADDED ${first} false`, `ADDED ${second} ${JOBS[1]!.paused}`, `MODIFIED ${first} true`, `DELETED ${second} ${JOBS[1]!.paused}`]);

    const table = await shardline(["get", "jobs", "--watch"]);
    const lines = table.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^NAME\s+SCHEDULE/);
    expect(lines.slice(1).map((line) => line.split(/\s+/)[0])).toEqual([first, second, first, "DELETED"]);
    expect(lines[4]).toMatch(new RegExp(`^DELETED ${second}\\s`));
    expect(lines[3]).toMatch(/\strue\s/);
  });
});

describe("shardline events", () => {
  it("prints the recent events, one line each, TIME TYPE MESSAGE, and with --follow (or -w) new ones until the stream ends", async () => {
    const recent = "2026-01-01T00:00:00Z agent.joined agent agent-a joined\n2026-01-01T00:00:00.001Z shard.moved job=billing-rollup shard=1 agent=agent-b\n";
    expect(await shardline(["events"])).toMatchObject({ code: 0, stdout: recent });
    for (const follow of ["--follow", "-w"]) {
      expect(await shardline(["events", follow])).toMatchObject({ code: 0, stdout: `${recent}2026-01-01T00:00:00.002Z job.paused job billing-rollup paused\n` });
    }
  });

  it("refuses an unknown --job at once, naming it (exit 3)", async () => {
    expect(await shardline(["events", "--job", "no-such-job", "-w"])).toMatchObject({
      code: 3,
      stdout: "",
      stderr: expect.stringMatching(/no-such-job.*not found.*shardline get jobs/) as string,
    });
  });

  it("prints one JSON object per line with -o json, filtered by --job", async () => {
    const { stdout } = await shardline(["events", "--job", "billing-rollup", "-o", "json"]);
    expect(stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as unknown)).toEqual([
      { time: "2026-01-01T00:00:00.001Z", type: "shard.moved", job: "billing-rollup", shard: 1, agent: "agent-b", executionId: null, message: "" },
    ]);
  });

  it("ends with success when interrupted", async () => {
    // A stream that never ends, so only the signal can stop the command.
    const endless = createServer();
    addService(endless, AdminService, { watch: (_request, _stream, context) => new Promise((resolve) => context.signal.addEventListener("abort", () => resolve())) });
    const endlessAddress = `127.0.0.1:${await listen(endless, "127.0.0.1:0")}`;
    try {
      const capture = captureIo({ env: { SHARDLINE_CONTROLLER: endlessAddress } });
      const running = runCli(["events", "-w"], capture.io);
      await expect.poll(() => capture.listening()).toBe(1);
      capture.signal("SIGINT");
      expect(await running).toBe(0);
    } finally {
      await shutdown(endless, 100);
    }
  });
});

describe("usage errors and exit codes", () => {
  it.each([
    [["frobnicate"], /^shardline: unknown command 'frobnicate'; expected one of: controller, agent, apply, get, .*\n$/],
    [[], /^shardline: no command given; expected one of: controller, agent, apply, get, .*\n$/],
    [["get", "jobs", "-o", "xml"], /^shardline: -o: "xml" is not allowed; expected json, yaml, wide, name\n$/],
    [["get", "jobs", "--bogus"], /^shardline: unknown option '--bogus'; "shardline get" accepts --controller, --token, --tls-ca, --tls-cert, --tls-key, --output, .*\n$/],
    [["get", "jobs", "--controller", "nocolon"], /^shardline: --controller: "nocolon" is not allowed; expected HOST:PORT.*\n$/],
    [["get", "jobs", "--controller", "127.0.0.1:99999"], /^shardline: --controller: "127.0.0.1:99999" is not allowed; expected HOST:PORT.*\n$/],
    [["get", "widgets"], /^shardline: RESOURCE: "widgets" is not allowed; expected jobs, agents, assignments, executions\n$/],
    [["get", "executions", "--state", "exploded"], /^shardline: --state: "exploded" is not allowed; expected pending, running, .*\n$/],
    [["get", "executions", "--limit", "0"], /^shardline: --limit: "0" is not allowed; expected an integer from 1 to 10000\n$/],
    [["get"], /^shardline: missing required argument 'RESOURCE'; usage: shardline get \[options\] <RESOURCE> \[NAME\]\n$/],
    [["apply"], /^shardline: required option '-f, --file <FILE>' not specified; usage: shardline apply \[options\]\n$/],
    [["trigger", "j", "--shards", "x"], /^shardline: --shards: "x" is not allowed; expected shard numbers .*\n$/],
    [["agent", "--handlers", "h.js", "--capacity", "abc"], /^shardline: --capacity: "abc" is not allowed; expected an integer from 1 to 1000\n$/],
    [["agent", "--handlers", "h.js", "--label", "novalue"], /^shardline: --label: "novalue" is not allowed; expected KEY=VALUE.*\n$/],
    [["agent", "--capacity", "2"], /^shardline: the agent has nothing to run: give --handlers MODULE, --allow-script COMMAND \(repeatable\), --allow-http or --kubernetes; usage: shardline agent .*\n$/],
    [["agent", "--allow-script", ""], /^shardline: --allow-script: "" is not allowed; expected a command name on PATH or an absolute path.*\n$/],
    [["agent", "--allow-script"], /^shardline: option '--allow-script <COMMAND>' argument missing; usage: .*\n$/],
    [["controller", "--http", "localhost"], /^shardline: --http: "localhost" is not allowed; expected HOST:PORT.*\n$/],
    [["controller", "--listen", "0.0.0.0:7070"], /^shardline: --listen: "0.0.0.0:7070" is not allowed; expected a loopback address .* or --insecure .*\n$/],
    [["agent", "--allow-http", "--http", "0.0.0.0:7071"], /^shardline: --http: "0.0.0.0:7071" is not allowed; expected a loopback address .*\n$/],
    [["controller", "--store", "mysql://x"], /^shardline: --store: "mysql:\/\/x" is not allowed; expected sqlite:PATH .*\n$/],
    [["controller", "--strategy", "Region=./r.mjs"], /^shardline: --strategy: "Region=\.\/r\.mjs" is not allowed; expected NAME=MODULE, where NAME is a DNS-1123 label .*\n$/],
    [["controller", "--strategy", "r=./a.mjs", "--strategy", "r=./b.mjs"], /^shardline: --strategy: "r=\.\/b\.mjs" is not allowed; expected each NAME once; "r" was already given\n$/],
    [["demo", "--duration", "forever"], /^shardline: --duration: "forever" is not allowed; expected a number of seconds .*\n$/],
    [["--log-level", "loud", "get", "jobs"], /^shardline: --log-level: "loud" is not allowed; expected fatal, error, warn, info, debug, trace, silent\n$/],
    [["get", "jobs", "a", "b"], /^shardline: too many arguments for 'get'. Expected 2 arguments but got 3; usage: .*\n$/],
  ])("shardline %j exits 2 with one line on stderr", async (args, message) => {
    const capture = captureIo();
    expect(await runCli(args, capture.io)).toBe(2);
    expect(capture.stderr()).toMatch(message);
    expect(capture.stdout()).toBe("");
  });

  it("exits 5 and names the address when the controller cannot be reached", async () => {
    const closed = createServer();
    const port = await listen(closed, "127.0.0.1:0");
    await shutdown(closed, 0);
    const capture = captureIo({ env: { SHARDLINE_CONTROLLER: `127.0.0.1:${port}` } });
    expect(await runCli(["get", "jobs"], capture.io)).toBe(5);
    expect(capture.stderr()).toMatch(new RegExp(`^shardline: cannot reach the controller at 127\\.0\\.0\\.1:${port} \\(.*\\); check --controller or SHARDLINE_CONTROLLER \\(default 127\\.0\\.0\\.1:7070\\)\\n$`));
  });

  it("tries the next controller given when one cannot be reached, and names every address tried when none can", async () => {
    const closed = createServer();
    const port = await listen(closed, "127.0.0.1:0");
    await shutdown(closed, 0);
    const dead = `127.0.0.1:${port}`;
    const capture = captureIo({ env: { SHARDLINE_CONTROLLER: `${dead},${address}` } });
    expect(await runCli(["get", "jobs", "-o", "json"], capture.io)).toBe(0);
    expect((JSON.parse(capture.stdout()) as { items: { metadata: { name: string } }[] }).items.map((j) => j.metadata.name)).toEqual(["billing-rollup", "reindex"]);

    const none = captureIo({ env: { SHARDLINE_CONTROLLER: `${dead},${dead}` } });
    expect(await runCli(["get", "jobs"], none.io)).toBe(5);
    expect(none.stderr()).toContain(`cannot reach any controller (tried ${dead}, ${dead})`);
  });

  it("follows a follower's answer to the leader it names", async () => {
    const follower = createServer();
    addService(follower, AdminService, {
      listJobs: async () => {
        throw new ShardlineError("unavailable", `this controller is a follower; the leader is at ${address}`, { leader: address });
      },
    });
    const followerAddress = `127.0.0.1:${await listen(follower, "127.0.0.1:0")}`;
    try {
      const capture = captureIo({ env: { SHARDLINE_CONTROLLER: followerAddress } });
      expect(await runCli(["get", "jobs", "-o", "json"], capture.io)).toBe(0);
      expect((JSON.parse(capture.stdout()) as { items: unknown[] }).items).toHaveLength(2);
    } finally {
      await shutdown(follower, 0);
    }
  });

  it("exits 5 with the controller's own words for a refusal at a limit, never 'cannot reach'", async () => {
    const limited = createServer();
    const refusal = "ListJobs: too many calls from 127.0.0.1; retry in 800 ms (the controller's --admin-rate-limit)";
    addService(limited, AdminService, {
      listJobs: async () => {
        throw new ShardlineError("resource-exhausted", refusal);
      },
    });
    const limitedAddress = `127.0.0.1:${await listen(limited, "127.0.0.1:0")}`;
    try {
      // A second address must not be tried either: the first controller was reached.
      const capture = captureIo({ env: { SHARDLINE_CONTROLLER: `${limitedAddress},${address}` } });
      expect(await runCli(["get", "jobs"], capture.io)).toBe(5);
      expect(capture.stderr()).toBe(`shardline: ${refusal}\n`);
      expect(capture.stdout()).toBe("");
    } finally {
      await shutdown(limited, 0);
    }
  });

  it("rejects a malformed address list, naming where it came from", async () => {
    const capture = captureIo({ env: { SHARDLINE_CONTROLLER: "127.0.0.1:7070,nocolon" } });
    expect(await runCli(["get", "jobs"], capture.io)).toBe(2);
    expect(capture.stderr()).toContain('SHARDLINE_CONTROLLER: "127.0.0.1:7070,nocolon" is not allowed');
    expect(capture.stderr()).toContain("or several separated by commas");
  });

  it("prints the version and the help, with the exit codes, and exits 0", async () => {
    const version = captureIo();
    expect(await runCli(["--version"], version.io)).toBe(0);
    expect(version.stdout()).toMatch(/^\d+\.\d+\.\d+\n$/);
    const help = captureIo();
    expect(await runCli(["--help"], help.io)).toBe(0);
    expect(help.stdout()).toContain("Exit codes:");
    expect(help.stdout()).toContain("5  unavailable");
    expect(help.stdout()).toContain("7  denied");
    expect(help.stdout()).toContain("8  rollout status --watch: the rollout was aborted");
    expect(help.stdout()).toContain("9  rollout status --watch: --timeout passed");
    expect(help.stdout()).toContain("SHARDLINE_CONTROLLER");
    const getHelp = captureIo();
    expect(await runCli(["get", "--help"], getHelp.io)).toBe(0);
    expect(getHelp.stdout()).toContain("single object");
  });
});

describe("long-running commands", () => {
  it("controller: starts, prints its addresses, and stops on SIGTERM", async () => {
    const capture = captureIo();
    const calls: string[] = [];
    // A fake startController: the real one needs a store and ports, and is tested on its own.
    const fakeStart = async (options: ControllerStartOptions) => {
      calls.push(`start ${options.listen} ${options.store}`);
      return { grpcAddress: "127.0.0.1:7070", httpAddress: "127.0.0.1:7071", stop: async () => void calls.push("stop"), failed: new Promise<Error>(() => {}) };
    };
    const running = runController({ listen: "127.0.0.1:7070", http: "127.0.0.1:7071", store: "sqlite:./x.db" }, capture.io, fakeStart);
    await expect.poll(() => capture.stdout()).toBe("controller listening on 127.0.0.1:7070 (gRPC) and 127.0.0.1:7071 (HTTP)\n");
    capture.signal("SIGTERM");
    await running;
    expect(calls).toEqual(["start 127.0.0.1:7070 sqlite:./x.db", "stop"]);
  });

  it("controller: fails with the reason when the controller stops by itself (a lost leadership)", async () => {
    const capture = captureIo();
    let lose: (error: Error) => void = () => {};
    const fakeStart = async () => ({
      grpcAddress: "127.0.0.1:7070",
      httpAddress: "127.0.0.1:7071",
      stop: async () => {},
      failed: new Promise<Error>((resolve) => (lose = resolve)),
    });
    const running = runController({ listen: "127.0.0.1:7070", http: "127.0.0.1:7071", store: "etcd://127.0.0.1:2379" }, capture.io, fakeStart);
    await expect.poll(() => capture.stdout()).toContain("controller listening");
    lose(new ShardlineError("unavailable", "lost the leadership: the leader key was deleted"));
    await expect(running).rejects.toThrow("lost the leadership: the leader key was deleted");
  });

  /** A fake agent module recording what the CLI asks of it; the drain finishes when told to. */
  function fakeAgentModule() {
    const calls: string[] = [];
    let finishDrain = (): void => {};
    let options: AgentStartOptions | undefined;
    const module: AgentModule = {
      loadHandlerModule: async (path) => (calls.push(`load ${path}`), { handlers: { billing: () => "ok" } }),
      Agent: class {
        constructor(given: AgentStartOptions) {
          options = given;
        }
        start(): void {
          calls.push("start");
        }
        drain(): Promise<void> {
          calls.push("drain");
          return new Promise((resolve) => (finishDrain = resolve));
        }
        async stop(): Promise<void> {
          calls.push("stop");
        }
      },
    };
    return { module, calls, finishDrain: () => finishDrain(), options: () => options };
  }

  it("agent: drains on the first signal and ends with success when the drain is done", async () => {
    const capture = captureIo();
    const fake = fakeAgentModule();
    const running = runAgent({ controller: "127.0.0.1:7070", id: "a1", labels: { zone: "eu-1" }, capacity: 2 }, "./handlers.js", fake.module, capture.io);
    await expect.poll(() => fake.calls).toEqual(["load ./handlers.js", "start"]);
    expect(fake.options()).toMatchObject({ controller: "127.0.0.1:7070", id: "a1", labels: { zone: "eu-1" }, capacity: 2 });
    capture.signal("SIGTERM");
    await expect.poll(() => fake.calls).toContain("drain");
    fake.finishDrain();
    await expect(running).resolves.toBeUndefined();
  });

  it("agent: a script- or HTTP-only agent loads no handlers module", async () => {
    const capture = captureIo();
    const fake = fakeAgentModule();
    const running = runAgent({ controller: "127.0.0.1:7070", id: "a1", allowScripts: ["python3"], allowHttp: true }, undefined, fake.module, capture.io);
    await expect.poll(() => fake.calls).toEqual(["start"]);
    expect(fake.options()).toMatchObject({ handlers: {}, allowScripts: ["python3"], allowHttp: true });
    capture.signal("SIGTERM");
    await expect.poll(() => fake.calls).toContain("drain");
    fake.finishDrain();
    await expect(running).resolves.toBeUndefined();
  });

  it("agent: a second signal during the drain exits at once with 1", async () => {
    const capture = captureIo();
    const fake = fakeAgentModule();
    const running = runAgent({ controller: "127.0.0.1:7070", id: "a1" }, "./handlers.js", fake.module, capture.io);
    await expect.poll(() => fake.calls).toContain("start");
    capture.signal("SIGINT");
    await expect.poll(() => fake.calls).toContain("drain");
    capture.signal("SIGINT");
    const error = await running.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as ShardlineError).code).toBe("internal");
    expect(capture.listening()).toBe(0);
  });
});
