import { afterEach, describe, expect, it } from "vitest";
import { status, type Server } from "@grpc/grpc-js";
import { PackedStranger } from "../../test/harness/packed-stranger.js";
import { ShardlineError } from "../errors.js";
import { AgentService, type ConnectRequestSchema, type ConnectResponseSchema } from "../gen/shardline/v1/agent_service_pb.js";
import { addService, createClient, createServer, listen, shutdown, type GrpcStatus, type MessageStream } from "./index.js";
import { DEFAULT_MAX_MESSAGES_PER_TURN, DEFAULT_MAX_MS_PER_TURN, serverMessageStream } from "./message-stream.js";

type ServerStream = MessageStream<typeof ConnectRequestSchema, typeof ConnectResponseSchema>;

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A server whose Connect streams are handed to `connect`; resolves its address. */
async function connectServer(connect: (stream: ServerStream) => void): Promise<string> {
  const server: Server = createServer();
  addService(server, AgentService, { connect });
  const port = await listen(server, "127.0.0.1:0");
  cleanups.push(() => shutdown(server, 100));
  return `127.0.0.1:${port}`;
}

function agentClient(address: string) {
  const client = createClient(AgentService, address);
  cleanups.push(() => client.close());
  return client;
}

/** Heartbeats `from..to` packed into as few HTTP/2 DATA frames as they fit: hundreds a frame. */
function packedFlood(address: string, from: number, to: number): void {
  const stranger = new PackedStranger(address);
  cleanups.push(() => stranger.close());
  void stranger.send(Array.from({ length: to - from + 1 }, (_, i) => ({ kind: { case: "heartbeat", value: { seq: BigInt(from + i) } } })));
}

/**
 * Counts turns of the event loop: one tick per check phase, until stopped. A stream's slice that
 * ends in one turn and the next slice are always a tick apart, for the stream waits for a later
 * turn with setImmediate, queued after this ticker's.
 */
function turnCounter(): { readonly turn: number; stop: () => void } {
  let turn = 0;
  let stopped = false;
  const tick = (): void => {
    if (stopped) return;
    turn++;
    setImmediate(tick);
  };
  setImmediate(tick);
  const counter = {
    get turn() {
      return turn;
    },
    stop: () => {
      stopped = true;
    },
  };
  cleanups.push(counter.stop);
  return counter;
}

/** How many of `turns` (the turn of each message, in order of arrival) fell in each turn. */
function perTurn(turns: number[]): number[] {
  const counts = new Map<number, number>();
  for (const turn of turns) counts.set(turn, (counts.get(turn) ?? 0) + 1);
  return [...counts.values()];
}

function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // Stands for a listener's synchronous work.
  }
}

describe("a stream's messages, a bounded slice per turn of the event loop", () => {
  it(`hands a flood to its listener in order, at most ${DEFAULT_MAX_MESSAGES_PER_TURN} messages in one turn`, async () => {
    const FLOOD = 5_000;
    const turns = turnCounter();
    const seen: bigint[] = [];
    const turnOf: number[] = [];
    let done!: () => void;
    const all = new Promise<void>((resolve) => (done = resolve));
    const address = await connectServer((stream) =>
      stream.onMessage((message) => {
        if (message.kind.case !== "heartbeat") return;
        seen.push(message.kind.value.seq);
        turnOf.push(turns.turn);
        if (seen.length === FLOOD) done();
      }),
    );
    packedFlood(address, 1, FLOOD);
    await all;
    expect(seen).toEqual(Array.from({ length: FLOOD }, (_, i) => BigInt(i + 1)));
    const slices = perTurn(turnOf);
    expect(Math.max(...slices)).toBeLessThanOrEqual(DEFAULT_MAX_MESSAGES_PER_TURN);
    expect(slices.length).toBeGreaterThanOrEqual(Math.ceil(FLOOD / DEFAULT_MAX_MESSAGES_PER_TURN));
  });

  it(`stops handing over messages in a turn once its listeners have run ${DEFAULT_MAX_MS_PER_TURN} ms in it`, async () => {
    const COUNT = 40;
    const turns = turnCounter();
    const turnOf: number[] = [];
    let done!: () => void;
    const all = new Promise<void>((resolve) => (done = resolve));
    const address = await connectServer((stream) =>
      stream.onMessage(() => {
        turnOf.push(turns.turn);
        // Each message costs the listener 1 ms: after two, the turn's time is spent.
        spin(1);
        if (turnOf.length === COUNT) done();
      }),
    );
    packedFlood(address, 1, COUNT);
    await all;
    expect(Math.max(...perTurn(turnOf))).toBeLessThanOrEqual(Math.ceil(DEFAULT_MAX_MS_PER_TURN / 1));
  });

  it("reads every other stream between two slices of a flooding one", async () => {
    const FLOOD = 3_000;
    const turns = turnCounter();
    const flooded: number[] = [];
    const other: number[] = [];
    let done!: () => void;
    const all = new Promise<void>((resolve) => (done = resolve));
    let floodBegan!: () => void;
    const began = new Promise<void>((resolve) => (floodBegan = resolve));
    const address = await connectServer((stream) =>
      stream.onMessage((message) => {
        if (message.kind.case !== "heartbeat") return;
        const seq = Number(message.kind.value.seq);
        // seq 0 is the quiet stream's, sent once the flood is under way.
        (seq === 0 ? other : flooded).push(turns.turn);
        if (seq === 1) floodBegan();
        if (flooded.length === FLOOD && other.length > 0) done();
      }),
    );
    const quiet = agentClient(address).connect();
    cleanups.push(() => quiet.close(status.CANCELLED, "test over"));
    packedFlood(address, 1, FLOOD);
    await began;
    quiet.send({ kind: { case: "heartbeat", value: { seq: 0n } } });
    await all;
    // The quiet stream's message was read while the flood went on, not after it.
    expect(other[0]!).toBeLessThan(flooded.at(-1)!);
    expect(Math.max(...perTurn(flooded))).toBeLessThanOrEqual(DEFAULT_MAX_MESSAGES_PER_TURN);
  });

  it("hands over nothing after the stream is closed in the middle of a slice", async () => {
    const received: bigint[] = [];
    let closed!: (status: GrpcStatus) => void;
    const clientSaw = new Promise<GrpcStatus>((resolve) => (closed = resolve));
    const address = await connectServer((stream) =>
      stream.onMessage((message) => {
        if (message.kind.case !== "heartbeat") return;
        received.push(message.kind.value.seq);
        if (message.kind.value.seq === 10n) stream.close(status.RESOURCE_EXHAUSTED, "enough");
      }),
    );
    const stream = agentClient(address).connect();
    stream.onClose(closed);
    for (let seq = 1n; seq <= 1_000n; seq++) stream.send({ kind: { case: "heartbeat", value: { seq } } });
    expect([status[(await clientSaw).code], (await clientSaw).details]).toEqual(["RESOURCE_EXHAUSTED", "enough"]);
    expect(received).toEqual(Array.from({ length: 10 }, (_, i) => BigInt(i + 1)));
  });

  it("refuses bounds that would never hand a message over", () => {
    const call = {} as Parameters<typeof serverMessageStream>[0];
    const make = (options: { maxMessagesPerTurn?: number; maxMsPerTurn?: number }) => () => serverMessageStream(call, AgentService.method.connect.output, options);
    for (const options of [{ maxMessagesPerTurn: 0 }, { maxMessagesPerTurn: 1.5 }, { maxMsPerTurn: 0 }, { maxMsPerTurn: Number.POSITIVE_INFINITY }]) {
      expect(make(options), JSON.stringify(options)).toThrow(ShardlineError);
    }
  });
});
