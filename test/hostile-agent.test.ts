import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { status, type StatusObject } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RawBytesPeer } from "../controller/shell/testing/hostile-peer.js";
import { ConnectRequestSchema, ConnectResponseSchema } from "../shared/gen/shardline/v1/agent_service_pb.js";
import { AgentState, type Execution, ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { BusyLoops } from "./harness/busy-loops.js";
import { waitFor } from "./harness/processes.js";
import { RECORDING_HANDLERS, ShardlineTestEnv } from "./harness/shardline-env.js";
import type { SqliteController } from "./harness/sqlite-controller.js";

/**
 * The controller runs as its own process, as in production, beside two bounded busy loops that
 * contend for its CPU; the strangers run in this test's process, which builds their long lists.
 * What is checked is the invariant, never a timing: every stranger gets a status that says what
 * was wrong, and the good agents keep their leases (no fence line), their shards at the same
 * owner, term and generation, and lose nothing.
 */
const BUSY_LOOPS = 2;
const BUSY_MS = 180_000;
const GOOD = ["good-a", "good-b"];
const STEADY_SHARDS = 4;

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
  // Now and then a long list, of short entries: the controller must bound the count, and short
  // entries keep the strangers, who share this process, from holding up each other.
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

/** Every shard of `job` as `job/shard agent (term, generation)`, sorted. */
async function assignments(world: ShardlineTestEnv<SqliteController>, job: string): Promise<string[]> {
  return (await world.admin.listAssignments({ job })).assignments.map((a) => `${a.job}/${a.shard} ${a.agent} (${a.term}, ${a.generation})${a.revoking ? " revoking" : ""}`).sort();
}

/** The fence lines of each good agent's log, and whether it still runs: all must be empty. */
function fences(world: ShardlineTestEnv<SqliteController>): Record<string, string[]> {
  const found: Record<string, string[]> = {};
  for (const id of GOOD) {
    const agent = world.agents.get(id)!;
    found[id] = agent.logs().filter((e) => e.msg.startsWith("fenced") || e.msg.includes("lease lapsed")).map((e) => e.msg);
    if (!agent.running) found[id].push(`exited:\n${agent.output.slice(-2000)}`);
  }
  return found;
}

describe("a controller process under a fuzz of hostile peers, its CPU contended", () => {
  let busy: BusyLoops | undefined;
  let env: ShardlineTestEnv<SqliteController> | undefined;
  let debug: () => string = () => "";
  beforeAll(() => {
    busy = new BusyLoops(BUSY_LOOPS, BUSY_MS);
  });
  afterAll(() => busy?.stop());
  afterEach(async (context) => {
    if (context.task.result?.state === "fail") {
      console.error(debug());
      if (env !== undefined) env.failed = true;
    }
    await env?.close();
    env = undefined;
  });

  it("answers random bytes and random wrong messages with a status, while the good agents keep their leases and shards", async () => {
    const seed = Number(process.env.SHARDLINE_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
    const random = new Random(seed);
    const world = await ShardlineTestEnv.single({ name: "hostile", handlers: RECORDING_HANDLERS, agentEnv: { SHARDLINE_TEST_WORK_MS: "20" } });
    env = world;
    const { admin } = world;
    const controller = world.controller.process!;
    const address = world.controller.address;
    const statuses: StatusObject[] = [];
    let sent = 0;
    debug = () =>
      [
        `--- fuzz seed ${seed} (replay with SHARDLINE_FUZZ_SEED=${seed}); ${sent} messages sent`,
        `--- statuses: ${[...new Set(statuses.map((s) => `${status[s.code]} ${s.details.slice(0, 120)}`))].join("\n")}`,
      ].join("\n");

    for (const id of GOOD) world.startAgent(id);
    await admin.applyJob({ manifest: everySecond("steady", STEADY_SHARDS, "work") });
    await admin.applyJob({ manifest: everySecond("bait", 2, "evil") });
    const before = await waitFor(
      "steady's shards on both good agents",
      async () => {
        const shards = await assignments(world, "steady");
        const owners = new Set(shards.map((s) => s.split(" ")[1]));
        return shards.length === STEADY_SHARDS && owners.size === GOOD.length && !shards.some((s) => s.endsWith("revoking")) ? shards : undefined;
      },
      60_000,
    );
    // A fire made once they held every shard: the fires before it may have misfired for want of
    // an owner, which is not the strangers' doing.
    const held = Date.now();
    await waitFor(
      "a fire of every shard after the good agents held them to succeed",
      async () => {
        const ran = (await admin.listExecutions({ job: "steady", sinceUnixMs: BigInt(held), state: ExecutionState.SUCCEEDED })).executions;
        return new Set(ran.map((e) => e.shard)).size === STEADY_SHARDS ? true : undefined;
      },
      60_000,
    );

    const known: Knowledge = {
      executionIds: [],
      assignments: (await admin.listAssignments({ job: "steady" })).assignments.map((a) => ({
        shard: { job: a.job, shard: a.shard },
        term: a.term,
        generation: a.generation,
      })),
    };
    const fuzzStart = Date.now();
    const deadline = fuzzStart + MAX_FUZZ_MS;
    const budgetLeft = (): boolean => sent < MAX_MESSAGES && Date.now() < deadline;

    /** One stranger's stream: some messages, then a bounded wait for the controller's answer. */
    const session = async (): Promise<void> => {
      const peer = new RawBytesPeer(address);
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

    // The controller lives, logged no error, serves admin calls and reports healthy.
    expect(controller.running, context).toBe(true);
    expect(controller.logs().filter((e) => e.level >= 50).map((e) => JSON.stringify(e)), context).toEqual([]);
    expect((await admin.listJobs({})).jobs.map((j) => j.name).sort(), context).toEqual(["bait", "steady"]);
    const http = controller.logs().find((e) => e.msg.startsWith("controller serving"))?.http;
    expect((await fetch(`http://${String(http)}/healthz`)).status, context).toBe(200);

    // The good agents kept their leases, their sessions, their shards and their assignments, all along.
    expect(fences(world), context).toEqual(Object.fromEntries(GOOD.map((id) => [id, []])));
    const agents = (await admin.listAgents({})).agents.filter((a) => GOOD.includes(a.id));
    expect(agents.map((a) => `${a.id} ${AgentState[a.state]}`).sort(), context).toEqual(GOOD.map((id) => `${id} READY`));
    expect(await assignments(world, "steady"), context).toEqual(before);

    // They ran every fire during the fuzz, and run on after it: nothing of theirs failed or was lost.
    const after = Date.now();
    await waitFor(
      "a fire after the fuzz to succeed on every shard",
      async () => {
        const executions = (await admin.listExecutions({ job: "steady", sinceUnixMs: BigInt(after), state: ExecutionState.SUCCEEDED })).executions;
        return new Set(executions.map((e) => e.shard)).size === STEADY_SHARDS ? true : undefined;
      },
      60_000,
    );
    const during = await waitFor("the fires during the fuzz to settle", async () => {
      const executions = (await admin.listExecutions({ job: "steady", limit: 1000, sinceUnixMs: BigInt(fuzzStart), untilUnixMs: BigInt(fuzzEnd) })).executions;
      return executions.every(settled) ? executions : undefined;
    });
    expect(during.length, context).toBeGreaterThanOrEqual(STEADY_SHARDS);
    expect(during.filter((e) => e.state !== ExecutionState.SUCCEEDED || !GOOD.includes(e.agent) || e.attempt !== 1).map(show), context).toEqual([]);
    const fired = new Set(during.map((e) => Number(e.fireTimeUnixMs)));
    for (const fireTime of fired) {
      expect(during.filter((e) => Number(e.fireTimeUnixMs) === fireTime).map((e) => e.shard).sort(), `${context}: fire ${fireTime}`).toEqual(
        Array.from({ length: STEADY_SHARDS }, (_, i) => i),
      );
    }
    const lost = (await admin.listExecutions({ job: "steady", state: ExecutionState.LOST, limit: 1000 })).executions;
    expect(lost.map(show), context).toEqual([]);
    const fine = new Set([ExecutionState.SUCCEEDED, ExecutionState.RUNNING, ExecutionState.PENDING]);
    for (const id of GOOD) {
      const ofGood = (await admin.listExecutions({ agent: id, limit: 10_000 })).executions;
      expect(ofGood.filter((e) => !fine.has(e.state)).map(show), context).toEqual([]);
    }
  }, 240_000);
});
