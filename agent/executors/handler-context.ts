import type { Logger } from "pino";
import { executionStateName } from "../../shared/execution-view.js";
import type { ExecutionContext } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { LeaseLostError, type FireShardOutcome, type HandlerContext } from "../sdk.js";
import type { LeaseCheck } from "./execution-run.js";
import type { RunAbort } from "./run-abort.js";

/** What a HandlerContext is made of besides the execution context: the run's own parts (the run itself gives them). */
export interface HandlerContextParts {
  readonly agentId: string;
  /** Aborts when the run is stopped; assertLease refuses once it has. Its signal is made when first read. */
  readonly abort: RunAbort;
  readonly leaseValid: LeaseCheck;
  /** The run's logger (ctx.log), asked for when first read; the same one every time. */
  handlerLog(): Logger;
}

/** The HandlerContext of an execution: what its handler and the agent's listeners receive. */
export function handlerContextOf(
  context: ExecutionContext,
  parts: HandlerContextParts,
  traceContext: Readonly<Record<string, string>> = context.traceContext,
): HandlerContext {
  return new RunContext(context, parts, traceContext);
}

/** `signal` and `log` of a RunContext: read through the run, so that a run whose handler reads neither makes neither. */
let lazyParts: { signal: PropertyDescriptor; log: PropertyDescriptor };

/**
 * A HandlerContext whose `signal` and `log` are made at their first read. They are own enumerable
 * properties, in their place among the others, as in a plain object: a handler that spreads ctx
 * (`{ ...ctx, page }`) keeps them. Their getters are shared by every run (an object literal's
 * getters would be made per run, and leave it a slow dictionary object).
 */
class RunContext implements HandlerContext {
  readonly #parts: HandlerContextParts;
  // Declared, not defined as class fields: the constructor makes each, in the order of the plain
  // object this was before (a JSON of ctx, Object.keys(ctx) read the same).
  declare readonly job: string;
  declare readonly shard: number;
  declare readonly shardCount: number;
  declare readonly shardParameter: string;
  declare readonly parameter: string;
  declare readonly fireTime: Date;
  declare readonly executionId: string;
  declare readonly attempt: number;
  declare readonly signal: AbortSignal;
  declare readonly agentId: string;
  declare readonly fencingToken: bigint;
  declare readonly revision: number;
  declare readonly assertLease: () => void;
  declare readonly traceContext: Readonly<Record<string, string>>;
  declare readonly log: Logger;
  declare readonly fireOutcome?: readonly FireShardOutcome[];

  constructor(context: ExecutionContext, parts: HandlerContextParts, traceContext: Readonly<Record<string, string>>) {
    this.#parts = parts;
    this.job = context.job;
    this.shard = context.shard;
    this.shardCount = context.shardCount;
    this.shardParameter = context.shardParameter;
    this.parameter = context.parameter;
    this.fireTime = new Date(Number(context.fireTimeUnixMs));
    this.executionId = context.executionId;
    this.attempt = context.attempt;
    Object.defineProperty(this, "signal", lazyParts.signal);
    this.agentId = parts.agentId;
    this.fencingToken = context.fencingToken;
    this.revision = Number(context.revision);
    this.assertLease = () => assertLease(context, parts.abort, parts.leaseValid);
    this.traceContext = { ...traceContext };
    Object.defineProperty(this, "log", lazyParts.log);
    if (context.fireOutcome !== undefined) {
      this.fireOutcome = context.fireOutcome.shards.map((o) => ({
        shard: o.shard,
        state: executionStateName(o.state),
        executionId: o.executionId,
        ...(o.error === "" ? {} : { error: o.error }),
      }));
    }
  }

  static {
    lazyParts = {
      signal: {
        get(this: RunContext) {
          return this.#parts.abort.signal;
        },
        set: replaceWith("signal"),
        enumerable: true,
        configurable: true,
      },
      log: {
        get(this: RunContext) {
          return this.#parts.handlerLog();
        },
        set: replaceWith("log"),
        enumerable: true,
        configurable: true,
      },
    };
  }
}

/** A setter that makes the property a plain value, as an assignment to a plain object's property would. */
function replaceWith(name: string): (this: object, value: unknown) => void {
  return function (this: object, value: unknown) {
    Object.defineProperty(this, name, { value, writable: true, enumerable: true, configurable: true });
  };
}

/**
 * HandlerContext.assertLease: an aborted run is refused first (its outcome is reported already,
 * whatever the lease says), then a run whose agent's lease has lapsed, which may go on for its
 * disconnect grace but must not act: its shard may have another owner by now.
 */
function assertLease(context: ExecutionContext, abort: RunAbort, leaseValid: LeaseCheck): void {
  const { executionId, fencingToken } = context;
  if (abort.aborted) {
    const reason = abort.reason;
    const why = reason instanceof Error ? reason.message : `execution ${executionId} was aborted`;
    throw new LeaseLostError(why, executionId, fencingToken, "aborted", { cause: reason });
  }
  if (!leaseValid()) {
    const shard = context.fireOutcome === undefined ? `shard ${context.job}/${context.shard}` : `job ${context.job}`;
    throw new LeaseLostError(
      `execution ${executionId}: the agent's lease lapsed, so ${shard} may belong to another agent now (fencing token ${fencingToken})`,
      executionId,
      fencingToken,
      "lease-lapsed",
    );
  }
}
