import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ShardlineError } from "../shared/errors.js";
import { adminClient, CliProcess, freePort, requireBuiltCli, shardline, waitFor } from "./harness/processes.js";
import type { ControllerReplica, ControllerReplicaSet } from "./harness/replicas.js";
import { ShardlineTestEnv } from "./harness/shardline-env.js";

// One writer per store, seen as an operator would: real controller processes on one SQLite file
// (a second is refused at start and changes nothing; the OS lets go of a SIGKILLed holder's
// lock), and on one etcd prefix (at every moment exactly one answers as leader). Every fact is
// read from the controllers themselves: their exit codes and messages, their answers to admin
// calls, and the term each reports at /metrics.

const JOB = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: sweep}
spec:
  shards: 2
  handler: work
`;

/** The term a controller reports at /metrics (`shardline_term`): the one it leads in, 0 while it follows. */
async function reportedTerm(httpAddress: string): Promise<number> {
  const text = await (await fetch(`http://${httpAddress}/metrics`)).text();
  const match = /^shardline_term (\d+)$/m.exec(text);
  if (match === null) throw new Error(`no shardline_term at ${httpAddress}/metrics`);
  return Number(match[1]);
}

/** How a controller answers an admin call: it leads, or it refuses naming the leader. */
async function answerOf(address: string): Promise<{ leads: true } | { follows: string }> {
  const admin = adminClient(address);
  try {
    await admin.listJobs({});
    return { leads: true };
  } catch (error) {
    if (error instanceof ShardlineError && error.code === "unavailable" && error.details.leader !== undefined) return { follows: error.details.leader };
    throw error;
  } finally {
    admin.close();
  }
}

describe("one controller per SQLite file, through the binary", () => {
  let dir: string;
  const processes: CliProcess[] = [];

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-single-writer-"));
  });

  afterEach(({ task }) => {
    if (task.result?.state === "fail") for (const p of processes) console.error(`--- ${p.name}\n${p.output}`);
  });

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    await rm(dir, { recursive: true, force: true });
  });

  /** A controller process on `store`, resolved once it answers admin calls. */
  const startController = async (name: string, store: string): Promise<{ process: CliProcess; address: string; http: string }> => {
    const address = `127.0.0.1:${await freePort()}`;
    const http = `127.0.0.1:${await freePort()}`;
    const started = new CliProcess(name, ["controller", "--listen", address, "--http", http, "--store", `sqlite:${store}`]);
    processes.push(started);
    const admin = adminClient(address);
    try {
      await waitFor(`${name} to answer`, async () => {
        if (!started.running) throw new Error(`${name} exited:\n${started.output}`);
        await admin.listJobs({});
        return true;
      });
    } finally {
      admin.close();
    }
    return { process: started, address, http };
  };

  it("refuses a second controller on the file, naming the first, which keeps serving; after a SIGKILL the next starts at once in the next term", async () => {
    const store = join(dir, "shardline.db");
    const a = await startController("controller-a", store);
    const termOfA = await reportedTerm(a.http);
    const manifest = join(dir, "sweep.yaml");
    writeFileSync(manifest, JOB);
    expect((await shardline(["apply", "-f", manifest, "--controller", a.address])).code).toBe(0);

    const b = await shardline(["controller", "--listen", `127.0.0.1:${await freePort()}`, "--http", `127.0.0.1:${await freePort()}`, "--store", `sqlite:${store}`]);
    expect(b.code).toBe(4);
    // Its one line for the operator; its log (JSON lines, written asynchronously) shares stderr.
    const { since } = JSON.parse(readFileSync(`${store}.owner`, "utf8")) as { since: string };
    expect(b.stderr.split("\n").filter((line) => !line.startsWith("{") && line !== "")).toEqual([
      `shardline: the SQLite store at ${store} is in use by another controller (pid ${a.process.child.pid} on host ${hostname()}, in term ${termOfA} ` +
        `since ${since}, as recorded in ${store}.owner); a SQLite file takes one controller: stop that one first, or run several replicas on etcd (--store etcd://HOST:2379)`,
    ]);

    // The first is untouched: it answers, in the same term, with its job.
    expect(a.process.running).toBe(true);
    const admin = adminClient(a.address);
    try {
      expect((await admin.listJobs({})).jobs.map((j) => j.name)).toEqual(["sweep"]);
    } finally {
      admin.close();
    }
    expect(await reportedTerm(a.http)).toBe(termOfA);

    // SIGKILL: nothing is closed cleanly, and the OS lets go of the lock with the process.
    a.process.kill("SIGKILL");
    await a.process.exited;
    const c = await startController("controller-c", store);
    expect(await reportedTerm(c.http)).toBe(termOfA + 1);
    expect(JSON.parse(readFileSync(`${store}.owner`, "utf8"))).toMatchObject({ pid: c.process.child.pid, term: termOfA + 1 });
    const again = adminClient(c.address);
    try {
      expect((await again.listJobs({})).jobs.map((j) => j.name)).toEqual(["sweep"]);
    } finally {
      again.close();
    }
  }, 60_000);
});

describe("two controllers on one etcd prefix, through the binary", () => {
  let env: ShardlineTestEnv<ControllerReplicaSet>;
  let set: ControllerReplicaSet;

  beforeAll(async () => {
    env = await ShardlineTestEnv.replicas(2, { name: "single-writer" });
    set = env.controller;
  }, 60_000);

  afterEach(({ task }) => {
    if (task.result?.state === "fail") env.failed = true;
  });

  afterAll(async () => {
    await env?.close();
  });

  /** The HTTP address the replica's current process serves /metrics on, from its start line. */
  const httpOf = (replica: ControllerReplica): string => replica.process!.logged("controller serving on", 0)!.http as string;

  /**
   * Waits until one running replica answers admin calls and every other refuses naming it, then
   * checks that /metrics agrees: the leader reports the term it leads in, the others 0.
   */
  const exactlyOneLeads = async (): Promise<{ leader: ControllerReplica; term: number }> => {
    const bothAnswered: string[] = [];
    const running = set.replicas.filter((replica) => replica.live);
    const leader = await waitFor("one replica to answer, naming its term in its log, and the others to name it as leader", async () => {
      const answers = await Promise.all(running.map(async (replica) => ({ replica, answer: await answerOf(replica.address) })));
      const leading = answers.filter((a) => "leads" in a.answer);
      // Kept rather than thrown: waitFor would take a throw for "not yet" and ask again.
      if (leading.length > 1) bothAnswered.push(leading.map((a) => a.replica.address).join(" and "));
      const named = answers.filter((a) => "follows" in a.answer && a.answer.follows === leading[0]?.replica.address);
      const found = leading.length === 1 && named.length === answers.length - 1 ? leading[0]!.replica : undefined;
      return found?.leadingTerm() === undefined ? undefined : found;
    });
    expect(bothAnswered).toEqual([]);
    const term = leader.leadingTerm()!;
    for (const replica of running) expect(await reportedTerm(httpOf(replica)), replica.name).toBe(replica === leader ? term : 0);
    return { leader, term };
  };

  it("has exactly one leader at a time: the other refuses naming it, and a SIGKILLed leader restarted follows the next one, elected in a higher term", async () => {
    const first = await exactlyOneLeads();

    // The leader's etcd lease lapses with it; the other wins the next term. Started again only
    // then (either could win a race for a vacant key), the killed one follows it.
    await first.leader.process!.crash();
    const second = await exactlyOneLeads();
    expect(second.leader).not.toBe(first.leader);
    expect(second.term).toBeGreaterThan(first.term);
    await first.leader.start();
    expect(first.leader.servedAs()).toEqual({ following: true, leader: second.leader.address });
    expect(await exactlyOneLeads()).toEqual(second);

    // Each process's own log: every term led in, by whom. Distinct terms, in the order they were won.
    const led = set.incarnations.flatMap((p) =>
      p.logs()
        .filter((entry) => entry.msg.startsWith("leading (term "))
        .map((entry) => ({ name: p.name, time: entry.time, term: Number(/^leading \(term (\d+)\)/.exec(entry.msg)![1]) })),
    );
    led.sort((x, y) => x.time - y.time);
    expect(led.map((l) => [l.name, l.term])).toEqual([
      [first.leader.name, first.term],
      [second.leader.name, second.term],
    ]);
  }, 90_000);
});
