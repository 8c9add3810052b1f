import { ShardlineError } from "../../shared/errors.js";

/**
 * One named part of a process (the controller's servers, store, leadership, driver), started and
 * stopped by a Supervisor.
 */
export interface Part {
  /** Names the part in a PartError: "servers", "store", "leadership", "driver". */
  readonly name: string;
  /** Starts it. One that fails has let go of whatever it took: its halt and stop are not called. */
  start(): Promise<void>;
  /**
   * Stops it doing anything for others, before any part is stopped: the driver stops deciding
   * and closes the agents' streams, the servers stop taking calls and finish those under way.
   */
  halt?(): void | Promise<void>;
  /** Lets go of what it holds (the store, the leadership, the etcd client). */
  stop(): Promise<void>;
}

/** What a part was doing when it failed. */
export type PartPhase = "start" | "halt" | "stop";

/**
 * A part failed to start, halt or stop. A ShardlineError cause keeps its code, message and
 * details, since they already tell an operator what to fix in their words (the flag, the file,
 * the other controller); any other cause gets the part's name in front and the code `internal`.
 */
export class PartError extends ShardlineError {
  constructor(
    /** The part's name. */
    readonly part: string,
    readonly phase: PartPhase,
    cause: unknown,
    /** Failures met after this one while stopping, newest part first. */
    readonly others: readonly PartError[] = [],
  ) {
    const known = cause instanceof ShardlineError ? cause : undefined;
    const message = known?.message ?? `${part} failed to ${phase}: ${cause instanceof Error ? cause.message : String(cause)}`;
    super(known?.code ?? "internal", message, known?.details ?? {}, { cause });
  }
}

/** How long a part may take to halt, and then to stop, unless SupervisorOptions say otherwise. */
export const DEFAULT_STOP_TIMEOUT_MS = 15_000;

export interface SupervisorOptions {
  /**
   * How long each part's halt and each part's stop may take before the supervisor goes on to the
   * next part (and stop() rejects naming the part): a hung etcd or disk cannot hold a shutdown
   * forever. Long enough for a commit and a hand-over under etcd's 5 s call deadline.
   */
  stopTimeoutMs?: number;
}

/**
 * Starts parts in order and stops them in reverse, like controller-runtime's manager:
 *
 * 1. start() starts each part once the one before it has started. A part that fails to start
 *    stops those already started, and start() rejects with a PartError naming it.
 * 2. stop() halts every started part, newest first, then stops each, newest first. A part that is
 *    starting is waited for first (a start is never cut short: what it took would leak).
 * 3. Each halt and each stop gets at most `stopTimeoutMs`; one that fails or overruns does not
 *    keep the others from stopping, and stop() then rejects with a PartError naming the first.
 * 4. stop() is idempotent: every call returns the same promise. Once it is called, start() starts
 *    no more parts.
 */
export class Supervisor {
  readonly #parts: readonly Part[];
  readonly #stopTimeoutMs: number;
  /** Started parts, in the order they started. */
  readonly #started: Part[] = [];
  /** The start under way, settled (either way) once the part is counted as started or not. */
  #starting: Promise<void> | undefined;
  #startCalled = false;
  #stopCalled = false;
  #stopped: Promise<void> | undefined;

  constructor(parts: readonly Part[], options: SupervisorOptions = {}) {
    const names = parts.map((part) => part.name);
    const repeated = names.find((name, i) => names.indexOf(name) !== i);
    if (repeated !== undefined) throw new ShardlineError("internal", `two parts are named ${repeated}; each part needs its own name`);
    this.#parts = parts;
    this.#stopTimeoutMs = options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
  }

  /** True once stop() was called. */
  get stopping(): boolean {
    return this.#stopCalled;
  }

  async start(): Promise<void> {
    if (this.#startCalled) throw new ShardlineError("internal", "the supervisor was started twice");
    this.#startCalled = true;
    for (const part of this.#parts) {
      if (this.#stopCalled) return;
      // Counted as started in the same step that settles #starting, so a stop() waiting for it sees it.
      const starting = part.start().then(() => void this.#started.push(part));
      this.#starting = starting.then(
        () => {},
        () => {},
      );
      try {
        await starting;
      } catch (error) {
        const failure = new PartError(part.name, "start", error);
        const others = await this.stop().then(
          () => [],
          (stopFailure: PartError) => [stopFailure, ...stopFailure.others],
        );
        throw others.length === 0 ? failure : new PartError(part.name, "start", error, others);
      } finally {
        this.#starting = undefined;
      }
    }
  }

  /** Halts, then stops, every started part, newest first; see the class's rules. */
  stop(): Promise<void> {
    if (this.#stopped !== undefined) return this.#stopped;
    // A part's halt may call stop() again before #stopped is set (a failure that ends the process).
    if (this.#stopCalled) return Promise.resolve().then(() => this.#stopped);
    this.#stopCalled = true;
    this.#stopped = this.#stopAll();
    return this.#stopped;
  }

  async #stopAll(): Promise<void> {
    if (this.#starting !== undefined) await this.#starting;
    const parts = [...this.#started].reverse();
    const failures: PartError[] = [];
    // Halted without a turn of the event loop before the first: nothing is decided after stop().
    for (const part of parts) {
      if (part.halt !== undefined) await this.#within(part, "halt", () => part.halt!(), failures);
    }
    for (const part of parts) await this.#within(part, "stop", () => part.stop(), failures);
    const [first, ...others] = failures;
    if (first !== undefined) throw new PartError(first.part, first.phase, first.cause, others);
  }

  /** Runs one halt or stop within the bound, noting a failure or an overrun in `failures`. */
  async #within(part: Part, phase: "halt" | "stop", call: () => void | Promise<void>, failures: PartError[]): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = call();
      if (!(result instanceof Promise)) return;
      const overran = new Promise<"overran">((resolve) => (timer = setTimeout(() => resolve("overran"), this.#stopTimeoutMs)));
      if ((await Promise.race([result, overran])) === "overran") {
        // Already reported as an overrun; a failure after it has nobody left to tell.
        result.catch(() => {});
        const cause = new ShardlineError("unavailable", `the ${part.name} did not ${phase} within ${this.#stopTimeoutMs} ms`);
        failures.push(new PartError(part.name, phase, cause));
      }
    } catch (error) {
      failures.push(new PartError(part.name, phase, error));
    } finally {
      clearTimeout(timer);
    }
  }
}
