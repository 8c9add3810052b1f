import { status } from "@grpc/grpc-js";
import type { GrpcStatus } from "../../shared/grpc/index.js";
import type { Clock } from "./agent-options.js";

/** A line the agent should log about reaching its controller. */
export interface ConnectFailureLine {
  level: "warn" | "info";
  message: string;
  fields: Record<string, unknown>;
}

/** Options of ConnectFailures. */
export interface ConnectFailuresOptions {
  /** The monotonic clock attempts are timed on. */
  clock: Clock;
  /** The longest wait between attempts (the reconnect backoff's ceiling), named in the lines. */
  retryCeilingMs: number;
  /** How often an unchanged failure is logged again, with the count of attempts. Default 60 s. */
  repeatEveryMs?: number;
}

/**
 * Failed attempts to reach a controller since the last Welcome, and what to say about them. An
 * agent that cannot reach its controller retries every few seconds, forever: one line per
 * attempt would bury everything else, and none would leave an operator guessing. So it speaks on
 * the first failure, when an address fails differently than it last did, every minute while
 * nothing changes (with the count of attempts), and once when a controller answers again.
 */
export class ConnectFailures {
  readonly #clock: Clock;
  readonly #retryCeilingMs: number;
  readonly #repeatEveryMs: number;
  /** Per address, the reason last logged and when: replicas failing in turn each keep their own. */
  readonly #logged = new Map<string, { reason: string; at: number }>();
  #attempts = 0;
  #since = 0;
  #reason: string | undefined;

  constructor(options: ConnectFailuresOptions) {
    this.#clock = options.clock;
    this.#retryCeilingMs = options.retryCeilingMs;
    this.#repeatEveryMs = options.repeatEveryMs ?? 60_000;
  }

  /** Failed attempts since the last Welcome. */
  get attempts(): number {
    return this.#attempts;
  }

  /** Why the last attempt failed, with its address, for /readyz; undefined when none failed since the last Welcome. */
  get reason(): string | undefined {
    if (this.#reason === undefined) return undefined;
    return `${this.#reason} (${plural(this.#attempts, "failed attempt")} so far); trying again with a backoff of up to ${duration(this.#retryCeilingMs)}`;
  }

  /** Records an attempt on `address` that ended with `closed` before any Welcome; returns the line to log, if any. */
  failed(address: string, closed: GrpcStatus): ConnectFailureLine | undefined {
    const now = this.#clock.now();
    if (this.#attempts === 0) this.#since = now;
    this.#attempts++;
    const reason = plainReason(closed);
    this.#reason = `cannot reach the controller at ${address}: ${reason}`;
    const last = this.#logged.get(address);
    if (last !== undefined && last.reason === reason && now - last.at < this.#repeatEveryMs) return undefined;
    this.#logged.set(address, { reason, at: now });
    const fields = { controller: address, reason, code: status[closed.code], details: closed.details, attempts: this.#attempts };
    const retrying = `trying again with a backoff of up to ${duration(this.#retryCeilingMs)}`;
    const message =
      last === undefined || last.reason !== reason
        ? `${this.#reason}; ${retrying}`
        : `${this.#reason}, still: ${plural(this.#attempts, "failed attempt")} over ${duration(now - this.#since)}; ${retrying}`;
    return { level: "warn", message, fields };
  }

  /** A controller at `address` welcomed the agent: forgets the failures, and returns the line saying so once if there were any. */
  succeeded(address: string): ConnectFailureLine | undefined {
    const attempts = this.#attempts;
    const overMs = this.#clock.now() - this.#since;
    this.#attempts = 0;
    this.#reason = undefined;
    this.#logged.clear();
    if (attempts === 0) return undefined;
    return {
      level: "info",
      message: `reached the controller at ${address} after ${plural(attempts, "failed attempt")} over ${duration(overMs)}`,
      fields: { controller: address, attempts, overMs: Math.round(overMs) },
    };
  }
}

/**
 * An attempt's failure in the words an operator knows. grpc-js reports every transport failure as
 * UNAVAILABLE with Node's error text inside ("No connection established. Last error: Error:
 * connect ECONNREFUSED ...", "Name resolution failed for target dns:..."), so the cause is read
 * from the text; the raw text stays in the log line's `details`.
 */
export function plainReason(closed: GrpcStatus): string {
  const details = closed.details;
  if (/ECONNREFUSED/.test(details)) return "connection refused";
  if (/Name resolution failed|ENOTFOUND|EAI_AGAIN|EAI_NONAME/.test(details)) return "name not resolved";
  // Before the resets: a failed handshake often ends in one too, and the handshake is the cause.
  if (/SSL routines|certificate|\bTLS\b|ERR_TLS|ERR_SSL|handshake/i.test(details)) return "TLS failure";
  if (closed.code === status.DEADLINE_EXCEEDED || /ETIMEDOUT/.test(details)) return "deadline exceeded";
  // The agent's own close when a controller accepts the connection and never answers.
  if (/^no Welcome within/.test(details)) return `deadline exceeded (${details})`;
  if (/ECONNRESET|EPIPE/.test(details)) return "connection reset";
  if (/EHOSTUNREACH|ENETUNREACH/.test(details)) return "host unreachable";
  if (/Failed to connect|Connection dropped/.test(details)) return "connection closed by the other side";
  if (/Protocol error/.test(details)) return "not a gRPC server (protocol error)";
  switch (closed.code) {
    case status.UNAUTHENTICATED:
      return `not authenticated: ${details}`;
    case status.PERMISSION_DENIED:
      return `permission denied: ${details}`;
    case status.UNIMPLEMENTED:
      return `not a Shardline controller (UNIMPLEMENTED: ${details})`;
    default:
      // A controller that answered with a status of its own ("no controller leads yet; retry shortly").
      return details === "" ? String(status[closed.code]) : `${status[closed.code]}: ${details}`;
  }
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** 250 ms, 5 s, 1.5 s, 12 min. */
function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${Number((ms / 1000).toFixed(1))} s`;
  return `${Math.round(ms / 60_000)} min`;
}
