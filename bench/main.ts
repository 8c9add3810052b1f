#!/usr/bin/env node
/**
 * `npm run bench [-- --quick]`: measures the performance targets (docs/architecture.md) on this machine, with
 * BullMQ on a real Redis as the peer in the same run (leader failover, on a real etcd, has no
 * peer), and writes bench/results/latest.{json,md,svg}.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { Command, Option } from "commander";
import { bullmqRepeatLag, bullmqStallRecovery, bullmqThroughputGrid } from "./peer/bullmq-peer.js";
import { startRedis } from "./peer/redis-server.js";
import { percentile } from "./harness.js";
import type { ChartPanel } from "./chart.js";
import { type BenchRow, row, writeResults } from "./report.js";
import { shardlineDrainMisses } from "./scenarios/drain.js";
import { shardlineFailover } from "./scenarios/failover.js";
import { shardlineFireLag } from "./scenarios/fire-lag.js";
import { shardlineLeaderFailover } from "./scenarios/leader-failover.js";
import { shardMovement } from "./scenarios/movement.js";
import { shardlineScale } from "./scenarios/scale.js";
import { etcdThroughput } from "./scenarios/etcd-throughput.js";
import { transportFloor } from "./scenarios/floor.js";
import { shardlineThroughput } from "./scenarios/throughput.js";
import { startOtlpSink, tracingEnv } from "./otlp-sink.js";
import { BENCH_SIZES, type BenchMode, GUARD_EXECUTIONS, GUARD_ROW } from "./sizes.js";

const BULLMQ = "BullMQ 5.81 on Redis";
const ELASTICJOB_LAYOUT = "balanced (ElasticJob AVG_ALLOCATION)";
/** The lag under which a fire rate counts as within capacity, for the saturation row. */
const SATURATION_P99_MS = 100;

const program = new Command("bench")
  .description("measure Shardline beside BullMQ on a local Redis; writes latest.json, latest.md and latest.svg")
  .option("--quick", "a reduced run, under three minutes")
  .addOption(new Option("--smoke", "the smallest run that exercises every scenario (for the test suite)").hideHelp())
  .option("--out <DIR>", "where to write the results", "bench/results")
  .action(async (options: { quick?: boolean; smoke?: boolean; out: string }) => {
    const mode: BenchMode = options.smoke ? "smoke" : options.quick ? "quick" : "full";
    await runBench(mode, options.out);
  });

async function runBench(mode: BenchMode, out: string): Promise<void> {
  const size = BENCH_SIZES[mode];
  const startedAt = new Date();
  const dir = mkdtempSync(join(tmpdir(), "shardline-bench-"));
  const rows: BenchRow[] = [];
  const panels: ChartPanel[] = [];
  const log = (line: string): void => void process.stderr.write(`bench: ${line}\n`);
  const redis = await startRedis();
  try {
    log("shard movement");
    for (const [shards, agents] of size.movement) {
      const sticky = shardMovement("sticky", shards, agents);
      const balanced = shardMovement("balanced", shards, agents);
      rows.push(row(`shards moved, 1 of ${agents} agents leaves (${shards} shards)`, sticky.leave, "shards", "lower", { name: ELASTICJOB_LAYOUT, value: balanced.leave }));
      rows.push(row(`shards moved, 1 agent joins ${agents} (${shards} shards)`, sticky.join, "shards", "lower", { name: ELASTICJOB_LAYOUT, value: balanced.join }));
    }

    const lagBars: ChartPanel = { title: "Fire lag, scheduled instant to handler start", unit: "ms", bars: [] };
    let saturation = 0;
    for (const rate of size.fireLag.rates) {
      log(`fire lag at ${rate} fires/s`);
      const result = await shardlineFireLag(dir, { firesPerSecond: rate, ...size.fireLag });
      rows.push(row(`ran at ${rate} fires/s (of ${rate * size.fireLag.seconds})`, result.lagsMs.length, "executions", "higher"));
      rows.push(row(`misfired at ${rate} fires/s`, result.misfired, "executions", "lower"));
      // Past saturation a run may start nothing at all: a lag is then not a number, and no row.
      if (result.lagsMs.length === 0) continue;
      const p50 = percentile(result.lagsMs, 50);
      const p99 = percentile(result.lagsMs, 99);
      rows.push(row(`fire lag p50 at ${rate} fires/s`, p50, "ms", "lower"));
      rows.push(row(`fire lag p99 at ${rate} fires/s`, p99, "ms", "lower"));
      rows.push(row(`fire lag max at ${rate} fires/s`, percentile(result.lagsMs, 100), "ms", "lower"));
      lagBars.bars.push({ label: `${rate}/s p50`, value: p50 }, { label: `${rate}/s p99`, value: p99 });
      if (p99 < SATURATION_P99_MS && result.misfired === 0) saturation = Math.max(saturation, rate);
    }
    rows.push(row(`saturation: the highest fire rate measured with p99 lag under ${SATURATION_P99_MS} ms and nothing misfired (of ${size.fireLag.rates.join(", ")})`, saturation, "fires/s", "higher"));

    const soak = size.soak;
    const soakName = `a ${formatDuration(soak.seconds)} soak at ${soak.firesPerSecond} fires/s`;
    log(soakName);
    const soaked = await shardlineFireLag(dir, soak);
    const first = soaked.rss[0]!;
    const last = soaked.rss[soaked.rss.length - 1]!;
    const mib = (bytes: number): number => bytes / 2 ** 20;
    rows.push(row(`controller RSS at the start of ${soakName}`, mib(first.controllerBytes), "MiB", "lower"));
    rows.push(row(`controller RSS at the end of ${soakName}`, mib(last.controllerBytes), "MiB", "lower"));
    rows.push(row(`controller RSS, largest sample of ${soakName}`, mib(Math.max(...soaked.rss.map((r) => r.controllerBytes))), "MiB", "lower"));
    rows.push(row(`agent processes' RSS at the start of ${soakName}`, mib(first.agentsBytes), "MiB", "lower"));
    rows.push(row(`agent processes' RSS at the end of ${soakName}`, mib(last.agentsBytes), "MiB", "lower"));
    rows.push(row(`fire lag p99 over ${soakName}`, percentile(soaked.lagsMs, 99), "ms", "lower"));
    rows.push(row(`executions run in ${soakName}`, soaked.lagsMs.length, "executions", "higher"));
    rows.push(row(`misfired in ${soakName}`, soaked.misfired, "executions", "lower"));

    const { schedules, workers, seconds, warmupSeconds } = size.repeat;
    log(`repeat lag: ${schedules} schedules every second on ${workers} workers`);
    const ours = await shardlineFireLag(dir, { firesPerSecond: schedules, shardsPerJob: 1, agents: workers, processes: Math.min(workers, 2), seconds, warmupSeconds });
    const theirs = await bullmqRepeatLag(redis, { schedules, workers, seconds, warmupSeconds });
    for (const p of [50, 99]) {
      const name = `repeat lag p${p}, ${schedules} schedules every 1 s on ${workers} workers`;
      rows.push(row(name, percentile(ours.lagsMs, p), "ms", "lower", { name: BULLMQ, value: percentile(theirs.lagsMs, p) }));
      lagBars.bars.push({ label: `repeat p${p}`, value: percentile(ours.lagsMs, p) }, { label: `BullMQ repeat p${p}`, value: percentile(theirs.lagsMs, p), peer: true });
    }
    panels.push(lagBars);

    const { executions, shardsPerTrigger, peerProcesses, peerConcurrency } = size.throughput;
    log(`BullMQ throughput: ${peerProcesses.length * peerConcurrency.length * 2} configurations`);
    const grid = await bullmqThroughputGrid(redis, {
      jobs: executions,
      processes: peerProcesses,
      concurrency: peerConcurrency,
      variants: ["prefilled", "streamed"] as const,
      onPoint: (p) => log(`  BullMQ ${describePeer(p)}: ${Math.round(p.perSecond)}/s, ${p.cpuMicrosecondsPerJob.toFixed(1)} us CPU per job`),
    });
    // At its best: the ratios are against the highest rate and the least CPU per job of the whole grid.
    const fastest = grid.points.reduce((a, b) => (b.perSecond > a.perSecond ? b : a));
    const leanest = grid.points.reduce((a, b) => (b.cpuMicrosecondsPerJob < a.cpuMicrosecondsPerJob ? b : a));
    for (const variant of ["prefilled", "streamed"] as const) {
      const best = grid.best[variant];
      rows.push(row(`BullMQ best ${variant}: jobs per second (${describePeer(best)})`, best.perSecond, "jobs/s", "higher"));
      rows.push(row(`BullMQ best ${variant}: CPU per job (${describePeer(best)})`, best.cpuMicrosecondsPerJob, "us", "lower"));
    }
    // The rows above run as Shardline runs by default: metrics on, tracing off until an exporter is
    // configured. The traced rows turn it on in the controller and the agents, with the SDK's
    // defaults, exporting to a collector stand-in on loopback.
    const sink = await startOtlpSink();
    for (const agents of size.throughput.agents) {
      const of = `${agents} agent${agents === 1 ? "" : "s"}`;
      const processes = Math.min(agents, 2);
      log(`throughput with ${of}`);
      const result = await shardlineThroughput(dir, { agents, processes, executions, shardsPerTrigger });
      log(`throughput with ${of}, traced`);
      const exported = sink.received.requests;
      const traced = await shardlineThroughput(dir, { agents, processes, executions, shardsPerTrigger, env: tracingEnv(sink) });
      if (sink.received.requests === exported) throw new Error(`benchmark: the traced run with ${of} exported no span to ${sink.endpoint}`);
      log(`  traced: ${Math.round(traced.perSecond)}/s, ${traced.cpuMicrosEach.toFixed(1)} us CPU per execution`);
      log(`transport floor with ${of}`);
      const floor = await transportFloor({ agents, processes, executions, shardsPerTrigger });
      const split = Object.entries(result.cpu.byName).map(([name, seconds]) => `${name} ${((seconds * 1e6) / result.executions).toFixed(1)}`).join(", ");
      log(`  ${Math.round(result.perSecond)}/s, ${result.cpuMicrosEach.toFixed(1)} us CPU per execution (${split}); floor ${Math.round(floor.perSecond)}/s, ${floor.cpuMicrosEach.toFixed(1)} us`);
      rows.push(row(`executions per second, ${of}`, result.perSecond, "executions/s", "higher", { name: `${BULLMQ}, best of the grid (${describePeer(fastest)})`, value: fastest.perSecond }));
      rows.push(row(`CPU per execution, ${of}`, result.cpuMicrosEach, "us", "lower", { name: `${BULLMQ}, least of the grid (${describePeer(leanest)})`, value: leanest.cpuMicrosecondsPerJob }));
      rows.push(row(`CPU per execution, ${of}, over the transport floor`, result.cpuMicrosEach / floor.cpuMicrosEach, "x", "lower"));
      rows.push(row(`transport floor: CPU per execution, ${of}`, floor.cpuMicrosEach, "us", "lower"));
      rows.push(row(`transport floor: executions per second, ${of}`, floor.perSecond, "executions/s", "higher"));
      rows.push(row(`executions per second, ${of}, traced (OTLP to a local collector)`, traced.perSecond, "executions/s", "higher"));
      rows.push(row(`CPU per execution, ${of}, traced (OTLP to a local collector)`, traced.cpuMicrosEach, "us", "lower"));
    }
    await sink.close();

    // The suite's guard (test/bench.test.ts): the same short run in every mode, so that the smoke
    // run's figure compares with the committed one like with like, warm-up included.
    log(`throughput with 1 agent, a fresh run of ${GUARD_EXECUTIONS}`);
    const guard = await shardlineThroughput(dir, { agents: 1, processes: 1, executions: GUARD_EXECUTIONS, shardsPerTrigger: 1000 });
    rows.push(row(GUARD_ROW, guard.cpuMicrosEach, "us", "lower"));

    const { members } = size.etcd;
    log(`throughput on etcd (${members} members)`);
    const onEtcd = await etcdThroughput(dir, size.etcd);
    const etcdSplit = Object.entries(onEtcd.shardline.cpu.byName).map(([name, seconds]) => `${name} ${((seconds * 1e6) / onEtcd.shardline.executions).toFixed(1)}`).join(", ");
    log(`  ${Math.round(onEtcd.shardline.perSecond)}/s, ${onEtcd.shardline.cpuMicrosEach.toFixed(1)} us CPU per execution (${etcdSplit}); etcd alone ${Math.round(onEtcd.etcdKeysPerSecond)} keys/s`);
    rows.push(row(`etcd store (${members} members): executions per second, 1 agent`, onEtcd.shardline.perSecond, "executions/s", "higher"));
    rows.push(row(`etcd store (${members} members): CPU per execution, 1 agent, etcd's included`, onEtcd.shardline.cpuMicrosEach, "us", "lower"));
    rows.push(row(`etcd store (${members} members): etcd's own floor, keys written per second in transactions of 100 puts`, onEtcd.etcdKeysPerSecond, "keys/s", "higher"));
    rows.push(row(`etcd store (${members} members): executions per second per key etcd writes per second`, onEtcd.shardline.perSecond / onEtcd.etcdKeysPerSecond, "x", "higher"));

    // BullMQ's stalled-job recovery is 45-75 s of waiting on its own timers, not work: Shardline's
    // failover and drain scenarios run meanwhile, which keeps --quick within its budget.
    log("failover after SIGKILL, while BullMQ's stalled-job recovery waits");
    const stallRun = bullmqStallRecovery(redis, { ...size.stall, timeoutMs: 120_000 });
    // Awaited below; until then a failure of the scenarios in between must not leave it unhandled.
    stallRun.catch(() => undefined);
    const failover = await shardlineFailover(dir, size.failover);
    const { rounds } = size.leaderFailover;
    log(`leader failover on etcd: ${rounds} SIGKILL${rounds === 1 ? "" : "s"} of the leader among 3 controllers`);
    const leaderFailover = await shardlineLeaderFailover(size.leaderFailover);
    log("graceful drain");
    const drain = await shardlineDrainMisses(dir, size.drain);
    const stall = await stallRun;

    const median = percentile(failover.failoverMs, 50);
    const worst = Math.max(...failover.failoverMs);
    const peer = { name: `${BULLMQ}, stalled-job recovery${size.stall.lockDurationMs === undefined ? " (defaults)" : " (shortened)"}`, value: stall.recoveryMs };
    rows.push(row(`failover after SIGKILL, median (lease ${failover.leaseTtlMs} ms)`, median, "ms", "lower", peer));
    rows.push(row(`failover after SIGKILL, max (lease ${failover.leaseTtlMs} ms)`, worst, "ms", "lower", peer));
    panels.push({
      title: "SIGKILL of a worker to its work running elsewhere",
      unit: "ms",
      bars: [
        { label: "Shardline median", value: median },
        { label: "Shardline max", value: worst },
        { label: "BullMQ stalled-job recovery", value: stall.recoveryMs, peer: true },
      ],
    });

    // No peer: BullMQ elects no leader (one Redis is its single point), so nothing of it compares.
    const ttl = `leader TTL ${leaderFailover.leaderTtlSeconds} s`;
    const elected = percentile(leaderFailover.electedMs, 50);
    const resumed = percentile(leaderFailover.resumedMs, 50);
    const resumedWorst = Math.max(...leaderFailover.resumedMs);
    rows.push(row(`leader failover (etcd), SIGKILL of the leader to a new leader, median (${ttl})`, elected, "ms", "lower"));
    rows.push(row(`leader failover (etcd), SIGKILL of the leader to every shard running again, median (${ttl})`, resumed, "ms", "lower"));
    rows.push(row(`leader failover (etcd), SIGKILL of the leader to every shard running again, max (${ttl})`, resumedWorst, "ms", "lower"));
    panels.push({
      title: "SIGKILL of the leader among 3 controllers on etcd",
      unit: "ms",
      bars: [
        { label: "new leader, median", value: elected },
        { label: "every shard running again, median", value: resumed },
        { label: "every shard running again, max", value: resumedWorst },
      ],
    });
    for (const line of leaderFailover.doubled) log(`leader failover: a fire ran to its end twice: ${line}`);
    rows.push(row(`leader failover (etcd), fires run to their end twice (of ${leaderFailover.firesRun}, ${rounds} failover${rounds === 1 ? "" : "s"})`, leaderFailover.doubledFires, "fires", "lower"));

    rows.push(row(`fires missed during a graceful drain (of ${drain.expected})`, drain.missed, "executions", "lower"));

    const { agents, jobs, shardsPerJob, processes, heartbeatIntervalMs } = size.scale;
    log(`scale: ${agents} agents, ${jobs * shardsPerJob} shards`);
    const scale = await shardlineScale(dir, size.scale);
    const scaleName = `${agents} agents, ${jobs * shardsPerJob} shards (heartbeat ${heartbeatIntervalMs} ms, ${processes} load processes)`;
    rows.push(row(`controller RSS, ${scaleName}`, scale.rssBytes / 2 ** 20, "MiB", "lower"));
    rows.push(row(`connect every agent, ${scaleName}`, scale.connectMs, "ms", "lower"));
    rows.push(row(`place every shard, ${scaleName}`, scale.assignMs, "ms", "lower"));
    rows.push(row(`re-place a drained agent's shards, ${scaleName}`, scale.reassignMs, "ms", "lower"));
    rows.push(row(`re-place a crashed agent's shards (lease ${size.scale.leaseTtlMs} ms), ${scaleName}`, scale.crashReassignMs, "ms", "lower"));
  } finally {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const seconds = (Date.now() - startedAt.getTime()) / 1000;
  const command = `npm run bench${mode === "full" ? "" : ` -- --${mode}`}`;
  const cpu = cpus();
  const targets = Object.fromEntries(rows.flatMap((r) => (targetOf(r.name) === undefined ? [] : [[r.name, targetOf(r.name)!]])));
  const info = { command, startedAt, seconds, node: process.version, cpus: cpu.length, cpuModel: cpu[0]?.model ?? "unknown", targets };
  const written = writeResults(out, rows, info, panels);
  log(`done in ${Math.round(seconds)} s: ${written.join(", ")}`);
}

/** A BullMQ configuration as the report names it. */
function describePeer(point: { variant: string; processes: number; concurrency: number }): string {
  return `${point.variant}, ${point.processes} worker process${point.processes === 1 ? "" : "es"} x concurrency ${point.concurrency}`;
}

function formatDuration(seconds: number): string {
  return seconds >= 60 && seconds % 60 === 0 ? `${seconds / 60}-minute` : `${seconds}-second`;
}

/** The target for a figure (docs/architecture.md, "Performance targets"), where there is one. */
function targetOf(name: string): string | undefined {
  if (name.startsWith("fire lag p99 at 1000 fires/s")) return "<= 5 ms";
  // The untraced rows only: the targets are for Shardline as it runs by default.
  if (name === "executions per second, 1 agent") return ">= 50,000; >= 2x BullMQ";
  if (name === "executions per second, 100 agents") return ">= 40,000; >= 2x BullMQ";
  if (/^executions per second, \d+ agents?$/.test(name)) return ">= 2x BullMQ";
  if (/^CPU per execution, \d+ agents?, over the transport floor/.test(name)) return "<= 2";
  // Each execution is about two keys (its record open, then finished) and its share of a WAL entry.
  if (/^etcd store .*: executions per second per key/.test(name)) return ">= 0.33";
  if (/^CPU per execution, (1 agent|100 agents)$/.test(name)) return "<= 40 us";
  if (name.startsWith("failover after SIGKILL")) return "<= lease + 100 ms";
  if (name.startsWith("leader failover (etcd), SIGKILL of the leader to every shard running again")) return "<= 3 s";
  if (name.startsWith("leader failover (etcd), fires run to their end twice")) return "0 (no doubled fire)";
  if (name.startsWith("fires missed during a graceful drain")) return "0";
  if (name.startsWith("shards moved, 1 of")) return "only the leaver's";
  const join = /^shards moved, 1 agent joins (\d+) \((\d+) shards\)/.exec(name);
  if (join !== null) return `<= ${Math.ceil(Number(join[2]) / (Number(join[1]) + 1))}`;
  if (name.startsWith("controller RSS at the end of")) return "flat: about the start's";
  if (/^controller RSS, \d+ agents/.test(name)) return "< 1024 MiB at 5,000 agents, 100,000 shards";
  return undefined;
}

program.parseAsync().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
