import { Etcd3 } from "etcd3";
import { startEtcd, type EtcdServer as RunningEtcd } from "../../tools/etcd-server.js";

/**
 * A one-member etcd on loopback ports with a temporary data directory, removed on stop: the
 * launcher the benchmark uses too (tools/etcd-server.ts), with what tests need besides. A missing binary fails the
 * test with the package to install rather than skipping it: CI installs etcd-server.
 */
export class EtcdServer {
  private constructor(private readonly server: RunningEtcd) {}

  /** Starts etcd and resolves once it answers a read. */
  static async start(): Promise<EtcdServer> {
    return new EtcdServer(await startEtcd());
  }

  /** `HOST:PORT` of its client URL. */
  get endpoint(): string {
    return this.server.endpoint;
  }

  /** `etcd://HOST:PORT` for --store. */
  get url(): string {
    return this.server.url;
  }

  /**
   * A client of this server, for a test to look at or change what the controller wrote. With
   * `deadlineMs`, each request (not watches and keepalives) fails after that long, as the
   * controller's do.
   */
  client(deadlineMs?: number): Etcd3 {
    return new Etcd3({
      hosts: `http://${this.endpoint}`,
      ...(deadlineMs === undefined ? {} : { defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + deadlineMs }) }),
    });
  }

  /** Freezes etcd (SIGSTOP): connections stay open and nothing answers, as in a long pause. */
  pause(): void {
    this.server.signal("SIGSTOP");
  }

  resume(): void {
    this.server.signal("SIGCONT");
  }

  /** What etcd printed, for failure messages. */
  log(): string {
    return this.server.log();
  }

  stop(): Promise<void> {
    return this.server.stop();
  }
}
