import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import type { Logger } from "pino";
import type { ExecutionContext, ScriptExecutor as ScriptConfig } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../../../shared/gen/shardline/v1/types_pb.js";
import { attachTraceContext } from "../../../shared/telemetry/log-fields.js";
import {
  RunReports,
  executionPayload,
  executionEnvironment,
  runLogFields,
  type AbortState,
  type ExecutionRun,
  type Executor,
  type ReportOptions,
  type StopState,
} from "../execution-run.js";
import { OutputTail, trimLineBreaks, withTail } from "../output-tail.js";
import { StringDecoder } from "node:string_decoder";

/** What a ScriptExecutor needs from the agent. */
export interface ScriptExecutorOptions extends ReportOptions {
  /** The agent's id, for SHARDLINE_AGENT_ID and the stdin JSON. */
  agentId: string;
  /**
   * The commands this agent runs, compared exactly with a job's spec.script.command (so
   * `python3` does not allow `/usr/bin/python3`). Empty: every script execution fails.
   */
  allowed: readonly string[];
  /** Parent of each execution's logger. */
  logger: Logger;
  /** The environment every script inherits, under its own and the SHARDLINE_* variables. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

/**
 * How long the output pipes may stay open after the process exited and its group was killed.
 * Only a descendant that left the group (setsid) can hold them that long; the run must not wait
 * on it forever.
 */
const PIPE_CLOSE_WAIT_MS = 1_000;

/**
 * Runs executions as child processes: spec.script's command with its arguments, no shell.
 *
 * The script gets the execution context twice: as JSON on stdin and as SHARDLINE_* environment
 * variables; and TRACEPARENT (TRACESTATE) naming the execution's span when it is traced. Exit code 0 is SUCCEEDED, with the tail of stdout as the result; anything else is
 * FAILED, with the exit code or signal and the tail of stderr. Each script runs in a process group
 * of its own, so that stopping it (timeout, cancel, fencing, drain) reaches its children as well:
 * SIGTERM to the group, SIGKILL after the kill grace, and the terminal state is reported only
 * once the process is gone. Whatever is left of the group when the script exits is killed too:
 * an execution ends with all of its processes.
 */
export class ScriptExecutor implements Executor {
  readonly #options: ScriptExecutorOptions;

  constructor(options: ScriptExecutorOptions) {
    this.#options = options;
  }

  /** The commands allowed on this agent. */
  get allowed(): readonly string[] {
    return this.#options.allowed;
  }

  /** Prepares one execution; call start() on the result to run it. */
  create(context: ExecutionContext): ExecutionRun {
    return new ScriptRun(context, this.#options);
  }
}

/** A stop under way: the state it will be reported with, and why. */
interface Stopping {
  state: AbortState;
  reason: string;
  /** SIGKILL was sent, because the grace ran out (or was 0). */
  killed: boolean;
}

class ScriptRun implements ExecutionRun {
  readonly #log: Logger;
  readonly #reports: RunReports;
  readonly #stdout = new OutputTail();
  readonly #stderr = new OutputTail();
  #child: ChildProcessWithoutNullStreams | undefined;
  #started = false;
  #exited = false;
  #stopping: Stopping | undefined;
  #timeoutTimer: NodeJS.Timeout | undefined;
  #killTimer: NodeJS.Timeout | undefined;
  #pipeTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly context: ExecutionContext,
    private readonly options: ScriptExecutorOptions,
  ) {
    this.#log = options.logger.child(runLogFields(context));
    this.#reports = new RunReports(context, options);
  }

  get finished(): boolean {
    return this.#reports.finished;
  }

  start(traceContext: Readonly<Record<string, string>> = this.context.traceContext): void {
    if (this.#started || this.#reports.finished) return;
    this.#started = true;
    // Lines logged outside the execution's span (a timeout, a stop) still name its trace.
    attachTraceContext(this.#log, traceContext);
    const script = this.context.script;
    if (script === undefined || script.command === "") {
      this.#reports.finish(ExecutionState.FAILED, { error: "the execution names no script command" });
      return;
    }
    if (!this.options.allowed.includes(script.command)) {
      const allowed = this.options.allowed.length === 0 ? "none (start the agent with --allow-script COMMAND)" : this.options.allowed.join(", ");
      this.#reports.finish(ExecutionState.FAILED, { error: `command ${JSON.stringify(script.command)} is not allowed on this agent; allowed: ${allowed}` });
      return;
    }

    let child: ChildProcessWithoutNullStreams;
    try {
      // detached: the script leads a new process group, which the stop signals reach as a whole.
      child = spawn(script.command, script.args, { env: this.#environment(script, traceContext), detached: true, stdio: "pipe" });
    } catch (error) {
      // Arguments Node refuses outright (e.g. a NUL byte) throw instead of emitting "error".
      this.#reports.finish(ExecutionState.FAILED, { error: `cannot start command ${JSON.stringify(script.command)}: ${errorText(error)}` });
      return;
    }
    this.#child = child;
    // Decoded apart from the tails: a chunk may end inside a character.
    const stdoutText = new StringDecoder("utf8");
    const stderrText = new StringDecoder("utf8");
    child.stdout.on("data", (chunk: Buffer) => {
      this.#stdout.push(chunk);
      this.#reports.log.write("stdout", stdoutText.write(chunk));
    });
    child.stderr.on("data", (chunk: Buffer) => {
      this.#stderr.push(chunk);
      this.#reports.log.write("stderr", stderrText.write(chunk));
    });
    // A script that exits without reading its stdin closes the pipe under the write: EPIPE is expected.
    child.stdin.on("error", (error) => this.#log.debug({ err: error }, "the script did not read its stdin"));
    child.on("error", (error) => this.#onError(error));
    child.on("exit", () => this.#onExit());
    child.on("close", (code, signal) => this.#onClose(code, signal));
    // Without a pid the spawn failed (ENOENT, EACCES...); the "error" event follows.
    if (child.pid === undefined) return;

    this.#reports.running();
    child.stdin.end(executionPayload(this.context, this.options.agentId));
    const { timeoutMs } = this.context;
    if (timeoutMs > 0) {
      this.#timeoutTimer = setTimeout(() => this.#abort(ExecutionState.TIMED_OUT, `timed out after ${timeoutMs} ms`), timeoutMs);
    }
  }

  flushLog(): void {
    this.#reports.flushLog();
  }

  stop(state: StopState, reason: string): void {
    this.#abort(state, reason);
  }

  /** Starts stopping the process; the report waits until it is gone. The first stop wins. */
  #abort(state: AbortState, reason: string): void {
    if (this.#reports.finished || this.#stopping) return;
    clearTimeout(this.#timeoutTimer);
    const child = this.#child;
    if (child?.pid === undefined) {
      // Never started, or the spawn is failing: there is no process to wait for.
      this.#reports.finish(state, { error: reason });
      return;
    }
    const stopping: Stopping = { state, reason, killed: false };
    this.#stopping = stopping;
    // After the exit the group was already killed; only the pipes are left to close.
    if (this.#exited) return;
    const graceMs = this.context.script?.killGraceMs ?? 0;
    this.#log.info({ reason, graceMs }, "stopping the script: SIGTERM, then SIGKILL after the grace");
    this.#signalGroup("SIGTERM");
    const kill = (): void => {
      stopping.killed = true;
      this.#signalGroup("SIGKILL");
    };
    if (graceMs === 0) kill();
    else this.#killTimer = setTimeout(kill, graceMs);
  }

  #onError(error: Error): void {
    if (this.#child?.pid === undefined) {
      const command = this.context.script?.command ?? "";
      this.#finish(ExecutionState.FAILED, { error: `cannot start command ${JSON.stringify(command)}: ${errorText(error)}` });
      return;
    }
    // Signalling a process that already exited, and the like: nothing the report depends on.
    this.#log.warn({ err: error }, "the script's process reported an error");
  }

  /** The script's own process ended: end the rest of its group, then wait for its pipes. */
  #onExit(): void {
    this.#exited = true;
    clearTimeout(this.#timeoutTimer);
    clearTimeout(this.#killTimer);
    this.#signalGroup("SIGKILL");
    this.#pipeTimer = setTimeout(() => {
      this.#log.warn("a process outside the script's group kept its output open; stopped reading it");
      this.#child?.stdout.destroy();
      this.#child?.stderr.destroy();
    }, PIPE_CLOSE_WAIT_MS);
  }

  /** The process exited and its output pipes closed: everything it wrote has been read. */
  #onClose(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#child?.pid === undefined) return;
    const max = this.#reports.maxBytes;
    const stderr = this.#stderr.text();
    const stopping = this.#stopping;
    if (stopping !== undefined) {
      const how = stopping.killed && signal === "SIGKILL"
        ? `the process was killed by SIGKILL after a grace of ${this.context.script?.killGraceMs ?? 0} ms`
        : `the process ended with ${exitText(code, signal)}`;
      this.#finish(stopping.state, { error: withTail(`${stopping.reason}; ${how}`, stderr, max) });
    } else if (code === 0) {
      this.#finish(ExecutionState.SUCCEEDED, { result: trimLineBreaks(this.#stdout.text(max)) });
    } else {
      this.#finish(ExecutionState.FAILED, { error: withTail(exitText(code, signal), stderr, max) });
    }
  }

  #finish(state: ExecutionState, fields: { error?: string; result?: string }): void {
    clearTimeout(this.#timeoutTimer);
    clearTimeout(this.#killTimer);
    clearTimeout(this.#pipeTimer);
    this.#reports.finish(state, fields);
  }

  /** Signals the script's whole process group; a group already gone is not an error. */
  #signalGroup(signal: NodeJS.Signals): void {
    const pid = this.#child?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, signal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ESRCH") this.#log.warn({ err: error, signal }, "could not signal the script's process group");
    }
  }

  #environment(script: ScriptConfig, traceContext: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
    // The SHARDLINE_* variables come last: a job's env cannot pass itself off as another execution.
    return { ...(this.options.env ?? process.env), ...script.env, ...executionEnvironment(this.context, this.options.agentId, traceContext) };
  }
}

/** "exit code 3" or "killed by SIGTERM". */
function exitText(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `killed by ${signal}` : `exit code ${code ?? "unknown"}`;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
