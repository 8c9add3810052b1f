import { pino, type DestinationStream, type Logger, type LevelWithSilent } from "pino";
import { ShardlineError } from "./errors.js";
import { traceLogMixin, traceLogMixinMergeStrategy } from "./telemetry/log-fields.js";

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Checks a --log-level value, naming the flag and the accepted levels. */
export function parseLogLevel(value: string, field = "--log-level"): LevelWithSilent {
  if ((LOG_LEVELS as readonly string[]).includes(value)) return value as LevelWithSilent;
  throw ShardlineError.invalid(field, value, LOG_LEVELS.join(", "));
}

/**
 * The process logger: JSON lines for machines, or readable lines when stderr is a terminal.
 * Logs go to stderr so that stdout stays for command output. A line logged inside an active
 * OpenTelemetry span carries its `trace_id` and `span_id` (see telemetry/log-fields.ts).
 * `destination` (JSON lines) is for tests.
 */
export function createLogger(options: { name: string; level?: string; pretty?: boolean; destination?: DestinationStream }): Logger {
  const level = parseLogLevel(options.level ?? process.env.SHARDLINE_LOG_LEVEL ?? "info");
  const pretty = options.pretty ?? process.stderr.isTTY === true;
  const base = { name: options.name, level, mixin: traceLogMixin, mixinMergeStrategy: traceLogMixinMergeStrategy };
  if (options.destination !== undefined) return pino(base, options.destination);
  if (pretty) {
    return pino({
      ...base,
      transport: { target: "pino-pretty", options: { destination: 2, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" } },
    });
  }
  return pino(base, pino.destination({ dest: 2, sync: false }));
}

/** A logger that drops everything, for libraries used without one. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
