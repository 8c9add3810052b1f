/**
 * Throughput on the etcd store: the throughput scenario with the controller on a three-member
 * etcd cluster, etcd's CPU counted with the controller's and the agents'; and etcd's own floor
 * here, the rate at which it takes keys in the transactions the store writes (MAX_TXN_OPS puts
 * of about an execution record's size), from which the row's target is set.
 */
import { Etcd3 } from "etcd3";
import { startEtcd } from "../../tools/etcd-server.js";
import { shardlineThroughput, type ThroughputResult } from "./throughput.js";

/** Puts per transaction, as the etcd store writes them (etcd-store.ts MAX_TXN_OPS). */
const TXN_PUTS = 100;
/** About an execution record's JSON. */
const VALUE = JSON.stringify({
  id: "throughput/1796673795222/512/1",
  job: "throughput",
  shard: 512,
  fireTime: 1796673795222,
  attempt: 1,
  agent: "tp-0",
  state: "succeeded",
  startedAt: 1796673795223,
  finishedAt: 1796673795224,
  cause: "trigger",
  parameter: "",
  traceContext: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
  disconnectGraceMs: 15000,
  revision: 1,
});

export interface EtcdThroughputResult {
  shardline: ThroughputResult;
  /** Keys etcd itself took per second, in transactions of TXN_PUTS puts, one transaction at a time as the store writes. */
  etcdKeysPerSecond: number;
}

export async function etcdThroughput(dir: string, options: { agents: number; executions: number; shardsPerTrigger: number; members: number }): Promise<EtcdThroughputResult> {
  const etcd = await startEtcd({ members: options.members });
  try {
    const etcdKeysPerSecond = await etcdFloor(etcd.url.slice("etcd://".length).split(","), options.executions);
    const shardline = await shardlineThroughput(dir, {
      agents: options.agents,
      processes: Math.min(options.agents, 2),
      executions: options.executions,
      shardsPerTrigger: options.shardsPerTrigger,
      store: `${etcd.url}/bench-throughput`,
      meter: etcd.pids.map((pid) => ({ name: "etcd", pid })),
    });
    return { shardline, etcdKeysPerSecond };
  } finally {
    await etcd.stop();
  }
}

/** Writes `keys` keys in transactions of TXN_PUTS, one after another, and returns keys per second. */
async function etcdFloor(endpoints: string[], keys: number): Promise<number> {
  const client = new Etcd3({ hosts: endpoints.map((e) => `http://${e}`) });
  try {
    const ns = client.namespace("bench-floor/");
    const started = performance.now();
    for (let written = 0; written < keys; written += TXN_PUTS) {
      const puts = Array.from({ length: Math.min(TXN_PUTS, keys - written) }, (_, i) => ns.put(`k/${written + i}`).value(VALUE));
      await ns.if("k/none", "Version", "==", 0).then(...puts).commit();
    }
    const seconds = (performance.now() - started) / 1000;
    await ns.delete().all();
    return keys / seconds;
  } finally {
    client.close();
  }
}
