import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { status, type StatusObject } from "@grpc/grpc-js";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RunningController, startController } from "../controller/shell/controller.js";
import { CapturedLogs, RawBytesPeer } from "../controller/shell/testing/hostile-peer.js";
import { ConnectRequestSchema, ConnectResponseSchema } from "../shared/gen/shardline/v1/agent_service_pb.js";
import { AgentState, type Execution, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { type AdminClient, adminClient, type CliProcess, requireBuiltCli, startAgent, waitFor } from "./harness/processes.js";

const HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "recording-handlers.mjs");

/** The fuzz's bounds: whichever comes first ends it. */
const MAX_MESSAGES = 2_000;
const MAX_FUZZ_MS = 20_000;
/** Strangers talking at once. */
const WORKERS = 3;
/** The longest a stranger waits for the controller's answer before it hangs up. */
const ANSWER_WAIT_MS = 1_000;

/** Codes a stranger may be answered with; INTERNAL or UNKNOWN would mean the controller failed. */
const ANSWERS = new Set([
  status.OK,
  status.INVALID_ARGUMENT,
  status.FAILED_PRECONDITION,
  status.RESOURCE_EXHAUSTED,
  status.ABORTED,
  status.DEADLINE_EXCEEDED,
]);

function everySecond(name: string, shards: number, handler: string): string {
  return `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: ${name}}
spec:
  schedule: "* * * * * *"
  shards: ${shards}
  handler: ${handler}
`;
}

/** mulberry32: a small seeded PRNG, so that a failing run can be replayed from its seed. */
class Random {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A number in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(below: number): number {
    return Math.floor(this.next() * below);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    for (let i = 0; i < length; i++) bytes[i] = this.int(256);
    return bytes;
  }
  text(length: number): string {
    return String.fromCharCode(...Array.from({ length }, () => this.int(0x2fff)));
  }
}

type Request = MessageInitShape<typeof ConnectRequestSchema>;

const REPORTED = [ExecutionState.RUNNING, ExecutionState.SUCCEEDED, ExecutionState.FAILED, ExecutionState.LOST];

/**
 * Messages of a few MiB that would cost the controller seconds to decode, or that are over its
 * size limit: built as bytes, as building them as messages would hold up this process itself.
 */
const HEAVY: (() => Buffer)[] = [
  // ExecutionUpdates (field 3, length 4,000,000) of two million empty updates (field 1, length 0).
  () => Buffer.concat([Buffer.from([0x1a, 0x80, 0x92, 0xf4, 0x01]), Buffer.alloc(4_000_000, Buffer.from([0x0a, 0x00]))]),
  // Field 15, a varint no version of the proto has, two million times.
  () => Buffer.alloc(4_000_000, Buffer.from([0x78, 0x01])),
  // One byte over the size limit.
  () => Buffer.alloc(4 * 1024 * 1024 + 1),
];

/** What the strangers know that makes their lies plausible: real ids, real assignments. */
interface Knowledge {
  executionIds: string[];
  assignments: { shard: { job: string; shard: number }; term: bigint; generation: bigint }[];
}

/** One message, valid protobuf but chosen to be wrong in some way, or right by chance. */
function randomRequest(random: Random, known: Knowledge, seq: { next: bigint }): Request {
  const id = (): string =>
    random.pick([
      () => (known.executionIds.length > 0 ? random.pick(known.executionIds) : "steady/1/0/1"),
      () => (known.executionIds.length > 0 ? random.pick(known.executionIds).replace(/\/(\d+)$/, (_, a: string) => `/${Number(a) + 1}`) : "x"),
      () => `steady/${Date.now()}/${random.int(4)}/${random.int(3)}`,
      () => text(random.int(40)),
      () => "",
      () => "x".repeat(long ? 1 : random.int(2000)),
    ])();
  const time = (): bigint => random.pick([0n, 1n, BigInt(Date.now()), -1n, 8_640_000_000_000_001n, 2n ** 63n - 1n]);
  const big = (): bigint => random.pick([0n, 1n, 2n, 3n, 2n ** 53n, 2n ** 64n - 1n, BigInt(random.int(1000))]);
  const assignment = (): Record<string, unknown> =>
    random.chance(0.6) && known.assignments.length > 0
      ? { ...random.pick(known.assignments), ...(random.chance(0.3) ? { generation: big() } : {}) }
      : random.chance(0.1)
        ? {}
        : { shard: { job: random.pick(["steady", "bait", "nope", "BAD", text(5)]), shard: random.int(8) }, term: big(), generation: big() };
  // Now and then a long list, of short entries: the controller must bound the count, and the
  // strangers share this process with it, so what they build must not hold it up themselves.
  let long = false;
  const repeated = <T>(make: () => T): T[] => {
    long = random.chance(0.02);
    const list = Array.from({ length: long ? 20_000 + random.int(90_000) : random.int(5) }, make);
    long = false;
    return list;
  };
  const text = (length: number): string => (long ? "" : random.text(length));
  switch (random.int(9)) {
    case 0:
      return {
        kind: {
          case: "hello",
          value: {
            agentId: random.pick(["fuzz-a", "fuzz-b", "fuzz-c", `fuzz-${random.int(1000)}`, "Fuzz", "", random.text(10), "f".repeat(300)]),
            handlers: random.pick([["evil"], [], ["evil", `h${random.int(100)}`], ["bad name"], repeated(() => "evil")]),
            capacity: random.pick([0, 1, 7, 1000, 1001, 2 ** 32 - 1]),
            maxConcurrent: random.pick([0, 1, 100_001]),
            executors: random.pick([[], ["http"], ["teleport"]]),
            labels: random.pick<Record<string, string>>([{}, { zone: "z" }, { "": "x" }]),
            version: random.pick(["1.0", random.text(300)]),
            held: repeated(assignment),
            executions: repeated(() => ({ executionId: id(), state: random.int(10) as ExecutionState })),
          },
        },
      };
    case 1:
    case 2:
      return { kind: { case: "heartbeat", value: { seq: random.chance(0.85) ? seq.next++ : big() } } };
    case 3:
    case 4:
    case 5:
      return {
        kind: {
          case: "executionUpdates",
          value: {
            updates: repeated(() => ({
              executionId: id(),
              state: random.chance(0.8) ? random.pick(REPORTED) : (random.int(12) as ExecutionState),
              startedAtUnixMs: time(),
              finishedAtUnixMs: time(),
              error: random.chance(0.1) ? text(5000) : "",
              result: random.chance(0.1) ? text(5000) : "",
            })),
          },
        },
      };
    case 6:
      return { kind: { case: "release", value: { assignments: repeated(assignment) } } };
    case 7:
      return { kind: { case: "goodbye", value: { reason: random.pick(["SIGTERM", random.text(1000)]) } } };
    default:
      return {};
  }
}

const settled = (e: Execution): boolean => e.state !== ExecutionState.PENDING && e.state !== ExecutionState.RUNNING;
const show = (e: Execution): string => `${e.id} ${ExecutionState[e.state]} on ${e.agent || "no agent"}${e.error ? `: ${e.error}` : ""}`;

describe("a controller under a fuzz of hostile peers", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  let debug: () => string = () => "";
  beforeAll(() => requireBuiltCli());
  afterEach(async (context) => {
    if (context.task.result?.state === "fail") console.error(debug());
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("answers random bytes and random wrong messages with a status, while a real agent's sharded job runs on untouched", async () => {
    const seed = Number(process.env.SHARDLINE_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
    const random = new Random(seed);
    const dir = await mkdtemp(join(tmpdir(), "shardline-hostile-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const record = join(dir, "runs.jsonl");
    writeFileSync(record, "");
    const logs = new CapturedLogs("warn");
    const controller: RunningController = await startController({ listen: "127.0.0.1:0", http: "127.0.0.1:0", store: "sqlite::memory:", logger: logs.logger });
    cleanups.push(() => controller.stop());
    let failed: Error | undefined;
    void controller.failed.then((error) => (failed = error));
    const admin: AdminClient = adminClient(controller.grpcAddress);
    cleanups.push(() => admin.close());
    const good: CliProcess = startAgent(controller.grpcAddress, "good", HANDLERS, { SHARDLINE_TEST_WORK_MS: "20", SHARDLINE_TEST_RECORD: record });
    cleanups.push(() => good.stop());
    const statuses: StatusObject[] = [];
    let sent = 0;
    // For the failure message: how long the event loop, which this test shares with the
    // controller, was held up at worst.
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    cleanups.push(() => void loopDelay.disable());
    debug = () =>
      [
        `--- fuzz seed ${seed} (replay with SHARDLINE_FUZZ_SEED=${seed}); ${sent} messages sent`,
        `--- event loop delay: max ${Math.round(loopDelay.max / 1e6)} ms, p99 ${Math.round(loopDelay.percentile(99) / 1e6)} ms`,
        `--- statuses: ${[...new Set(statuses.map((s) => `${status[s.code]} ${s.details.slice(0, 120)}`))].join("\n")}`,
        `--- controller warnings and errors\n${logs.entries.slice(-200).map((e) => JSON.stringify(e)).join("\n")}`,
        `--- good agent\n${good.output}`,
      ].join("\n");

    await admin.applyJob({ manifest: everySecond("steady", 2, "work") });
    await admin.applyJob({ manifest: everySecond("bait", 2, "evil") });
    const goodShards = await waitFor("the good agent to hold steady's shards and run a first fire", async () => {
      const assignments = (await admin.listAssignments({ job: "steady" })).assignments;
      const ran = (await admin.listExecutions({ job: "steady", state: ExecutionState.SUCCEEDED })).executions;
      return assignments.length === 2 && assignments.every((a) => a.agent === "good" && !a.revoking) && ran.length > 0
        ? assignments.map((a) => `${a.shard} (${a.term}, ${a.generation})`).sort()
        : undefined;
    });

    const known: Knowledge = {
      executionIds: [],
      assignments: (await admin.listAssignments({ job: "steady" })).assignments.map((a) => ({
        shard: { job: a.job, shard: a.shard },
        term: a.term,
        generation: a.generation,
      })),
    };
    loopDelay.enable();
    const fuzzStart = Date.now();
    const deadline = fuzzStart + MAX_FUZZ_MS;
    const budgetLeft = (): boolean => sent < MAX_MESSAGES && Date.now() < deadline;

    /** One stranger's stream: some messages, then a bounded wait for the controller's answer. */
    const session = async (): Promise<void> => {
      const peer = new RawBytesPeer(controller.grpcAddress);
      const seq = { next: 1n };
      const rawBytes = random.chance(0.3);
      const count = 1 + random.int(rawBytes ? 6 : 20);
      if (random.chance(0.8)) {
        const helloFirst = randomRequest(random, known, seq);
        const valid: Request = { kind: { case: "hello", value: { agentId: `fuzz-${random.int(50)}`, handlers: ["evil"] } } };
        peer.write(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, random.chance(0.7) ? valid : helloFirst)));
        sent++;
      }
      for (let i = 0; i < count && budgetLeft() && peer.ended === undefined; i++) {
        if (rawBytes) {
          peer.write(random.chance(0.03) ? random.pick(HEAVY)() : random.bytes(random.pick([0, 1, 2, 5, 17, 64, 300, 5000])));
        } else {
          peer.write(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, randomRequest(random, known, seq))));
        }
        sent++;
        await new Promise((resolve) => setImmediate(resolve));
      }
      // A last heartbeat, whose ack says everything before it was processed; or the status.
      peer.write(toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { kind: { case: "heartbeat", value: { seq: 2n ** 50n } } })));
      if (random.chance(0.2)) peer.end();
      const answered = async (): Promise<void> => {
        for (;;) {
          if (peer.ended !== undefined) return;
          if (peer.received.some((bytes) => {
            const response = fromBinary(ConnectResponseSchema, bytes);
            return response.kind.case === "heartbeatAck" && response.kind.value.seq === 2n ** 50n;
          })) return;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      };
      await Promise.race([answered(), new Promise((resolve) => setTimeout(resolve, ANSWER_WAIT_MS))]);
      const ended = peer.ended;
      if (ended !== undefined) statuses.push(ended);
      for (const bytes of peer.received) {
        const response = fromBinary(ConnectResponseSchema, bytes);
        if (response.kind.case === "dispatch") known.executionIds.push(...response.kind.value.executions.map((e) => e.executionId));
        if (response.kind.case === "assignmentUpdate") {
          for (const { shard, term, generation } of response.kind.value.add) {
            if (shard) known.assignments.push({ shard: { job: shard.job, shard: shard.shard }, term, generation });
          }
        }
      }
      peer.close();
    };
    const learnTheGoodAgentsIds = async (): Promise<void> => {
      while (budgetLeft()) {
        const running = (await admin.listExecutions({ job: "steady", limit: 20 })).executions;
        known.executionIds.push(...running.map((e) => e.id));
        if (known.executionIds.length > 500) known.executionIds.splice(0, known.executionIds.length - 500);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    };
    await Promise.all([
      learnTheGoodAgentsIds(),
      ...Array.from({ length: WORKERS }, async () => {
        while (budgetLeft()) await session();
      }),
    ]);
    const fuzzEnd = Date.now();

    const context = `seed ${seed} (replay with SHARDLINE_FUZZ_SEED=${seed})`;
    expect(sent, context).toBeGreaterThan(100);
    // Every answer was a status that says what was wrong, never a failure of the controller.
    expect(statuses.filter((s) => !ANSWERS.has(s.code)).map((s) => `${status[s.code]} ${s.details}`), context).toEqual([]);
    expect(statuses.filter((s) => s.details.length > 1000).map((s) => s.details.slice(0, 100)), context).toEqual([]);
    expect(statuses.length, context).toBeGreaterThan(0);

    // The controller lives, serves admin calls and reports healthy.
    expect(failed, context).toBeUndefined();
    expect((await admin.listJobs({})).jobs.map((j) => j.name).sort(), context).toEqual(["bait", "steady"]);
    expect((await fetch(`http://${controller.httpAddress}/healthz`)).status, context).toBe(200);
    expect(logs.atLeast(50).map((e) => JSON.stringify(e)), context).toEqual([]);

    // The good agent kept its session, its shards and their assignments, all along.
    expect(good.running, context).toBe(true);
    const agents = (await admin.listAgents({})).agents.filter((a) => a.id === "good");
    expect(agents.map((a) => AgentState[a.state]), context).toEqual(["READY"]);
    const shards = (await admin.listAssignments({ job: "steady" })).assignments;
    const shown = shards.map((a) => `${a.shard} (${a.term}, ${a.generation})${a.agent === "good" && !a.revoking ? "" : ` on ${a.agent}`}`);
    expect(shown.sort(), context).toEqual(goodShards);

    // It ran every fire during the fuzz, and runs on after it: nothing of it failed or was lost.
    const after = Date.now();
    await waitFor("a fire after the fuzz to succeed on the good agent", async () => {
      const executions = (await admin.listExecutions({ job: "steady", sinceUnixMs: BigInt(after), state: ExecutionState.SUCCEEDED })).executions;
      return new Set(executions.map((e) => e.shard)).size === 2 ? true : undefined;
    });
    const during = await waitFor("the fires during the fuzz to settle", async () => {
      const executions = (await admin.listExecutions({ job: "steady", limit: 1000, sinceUnixMs: BigInt(fuzzStart), untilUnixMs: BigInt(fuzzEnd) })).executions;
      return executions.every(settled) ? executions : undefined;
    });
    expect(during.length, context).toBeGreaterThanOrEqual(2);
    expect(during.filter((e) => e.state !== ExecutionState.SUCCEEDED || e.agent !== "good" || e.attempt !== 1).map(show), context).toEqual([]);
    const fired = new Set(during.map((e) => Number(e.fireTimeUnixMs)));
    for (const fireTime of fired) {
      expect(during.filter((e) => Number(e.fireTimeUnixMs) === fireTime).map((e) => e.shard).sort(), `${context}: fire ${fireTime}`).toEqual([0, 1]);
    }
    const ofGood = (await admin.listExecutions({ agent: "good", limit: 10_000 })).executions;
    const fine = new Set([ExecutionState.SUCCEEDED, ExecutionState.RUNNING, ExecutionState.PENDING]);
    expect(ofGood.filter((e) => !fine.has(e.state)).map(show), context).toEqual([]);
  });
});
