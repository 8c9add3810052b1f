import { ShardlineError } from "../../shared/errors.js";
import { freePortOn, plaintextOn } from "./addresses.js";
import { adminClient, CLI, waitFor } from "./processes.js";
import { TrackedProcess } from "./tracked-process.js";

/** A controller process on a fixed host, port and SQLite file, restartable on the same address. */
export class SqliteController {
  process: TrackedProcess | undefined;
  /** Every process this controller ran, oldest first. */
  readonly incarnations: TrackedProcess[] = [];

  constructor(
    readonly host: string,
    readonly port: number,
    readonly storePath: string,
    /** More flags for the next start(), e.g. a longer --lease-ttl. */
    public extraArgs: string[] = [],
  ) {}

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** What agents and the CLI take as --controller: this one address. */
  get addresses(): string {
    return this.address;
  }

  async start(): Promise<void> {
    const http = await freePortOn(this.host);
    const args = ["controller", "--listen", this.address, "--http", `${this.host}:${http}`, "--store", `sqlite:${this.storePath}`, ...plaintextOn(this.host), ...this.extraArgs];
    const started = new TrackedProcess("controller", process.execPath, [CLI, ...args]);
    this.process = started;
    this.incarnations.push(started);
    const admin = adminClient(this.address);
    try {
      await waitFor("the controller to answer", async () => {
        if (!started.running) throw new Error(`controller exited:\n${started.output}`);
        // A refusal for want of a token (with --token-file) is an answer too.
        await admin.listJobs({}).catch((error: unknown) => {
          if (!(error instanceof ShardlineError && error.code === "unauthenticated")) throw error;
        });
        return true;
      });
    } finally {
      admin.close();
    }
  }

  /** Stops the current process (SIGTERM, then SIGKILL), if it runs. */
  async stop(): Promise<void> {
    await this.process?.stop();
  }
}
