import { ShardlineError, type ErrorCode } from "../shared/errors.js";

/**
 * The process exit codes of `shardline`, so a script can tell "you asked for something wrong"
 * from "it does not exist" from "try again later".
 */
export const ExitCode = {
  /** The command did what was asked. */
  ok: 0,
  /** Something unexpected failed: a bug, or an internal error on the controller. */
  internal: 1,
  /**
   * Bad input: unknown command or flag, a bad flag value, a manifest the controller rejected, a
   * request or an answer over a fixed size limit. Sending the same again cannot succeed.
   */
  usage: 2,
  /** The job, agent or execution named does not exist. */
  notFound: 3,
  /** The request was valid but the current state forbids it, or the thing already exists. */
  precondition: 4,
  /**
   * The controller could not be reached or did not answer in time, or refused the call at a limit
   * of its load (--admin-rate-limit, the calls it serves at once, --max-jobs); retrying may help.
   */
  unavailable: 5,
  /** `run --wait`: the run finished, but not every execution succeeded. */
  runFailed: 6,
  /** The controller refused the caller: no token or an unknown one, or a role that may not do it. */
  denied: 7,
  /** `rollout status --watch`: the rollout was aborted (by an analysis step, or by hand). */
  rolloutAborted: 8,
  /** `rollout status --watch`: --timeout passed while the rollout was still in progress. */
  watchTimedOut: 9,
  /** `diff`: applying the file would change something (kubectl says 1; here 1 is an internal error). */
  differs: 10,
} as const;

/** `run --wait` finished with executions that did not succeed: exit 6, with this one line. */
export class RunFailedError extends Error {
  override readonly name = "RunFailedError";
}

/** `rollout status --watch` saw the rollout aborted: exit 8, with this one line. */
export class RolloutAbortedError extends Error {
  override readonly name = "RolloutAbortedError";
}

/** `rollout status --watch` gave up at --timeout, the rollout still in progress: exit 9, with this one line. */
export class WatchTimedOutError extends Error {
  override readonly name = "WatchTimedOutError";
}

/** `diff` found what applying the file would change: exit 10, with this one line on stderr. */
export class DiffersError extends Error {
  override readonly name = "DiffersError";
}

/** The failures that are outcomes a command reports in one line of its own, not errors. */
export function isOutcomeError(error: unknown): error is RunFailedError | RolloutAbortedError | WatchTimedOutError | DiffersError {
  return error instanceof RunFailedError || error instanceof RolloutAbortedError || error instanceof WatchTimedOutError || error instanceof DiffersError;
}

/** One of the values of ExitCode. */
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

const byErrorCode: Record<ErrorCode, ExitCode> = {
  "invalid-argument": ExitCode.usage,
  "not-found": ExitCode.notFound,
  "already-exists": ExitCode.precondition,
  "failed-precondition": ExitCode.precondition,
  unavailable: ExitCode.unavailable,
  unauthenticated: ExitCode.denied,
  "permission-denied": ExitCode.denied,
  "resource-exhausted": ExitCode.unavailable,
  internal: ExitCode.internal,
};

/** The exit code for a failure; anything that is not a ShardlineError is unexpected (1). */
export function exitCodeOf(error: unknown): ExitCode {
  if (error instanceof RunFailedError) return ExitCode.runFailed;
  if (error instanceof RolloutAbortedError) return ExitCode.rolloutAborted;
  if (error instanceof WatchTimedOutError) return ExitCode.watchTimedOut;
  if (error instanceof DiffersError) return ExitCode.differs;
  return error instanceof ShardlineError ? byErrorCode[error.code] : ExitCode.internal;
}

/** The exit-code table shown at the end of `shardline --help`. */
export const EXIT_CODES_HELP = [
  "Exit codes:",
  "  0  ok",
  "  1  internal or unexpected error",
  "  2  usage error or invalid argument (bad command, flag, value or manifest; a request or answer over a size limit)",
  "  3  not found (no such job, agent or execution)",
  "  4  failed precondition or already exists",
  "  5  unavailable: the controller cannot be reached (check --controller or SHARDLINE_CONTROLLER), or refused the call at a limit of its load (--admin-rate-limit, --max-jobs; the message names it); retry later",
  "  6  run --wait: the run finished but not every execution succeeded",
  "  7  denied (no token or an unknown one: check --token or SHARDLINE_TOKEN; or the token's role may not do this)",
  "  8  rollout status --watch: the rollout was aborted",
  "  9  rollout status --watch: --timeout passed while the rollout was still in progress",
  " 10  diff: applying the file would change something",
].join("\n");
