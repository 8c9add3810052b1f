/**
 * ctx.log as a handler sees it: the agent's logger for the run, which also writes each line it
 * logs into the execution's log (ExecutionUpdate.log) as `LEVEL message {fields}`. Only ctx.log
 * is captured: what a handler writes with console.log goes to the agent's stdout, since runs of
 * one process overlap and nothing ties a console line to one of them.
 */
import { format } from "node:util";
import type { Bindings, Logger } from "pino";
import type { ExecutionLogBuffer } from "../execution-log-buffer.js";

const LEVELS = new Set(["trace", "debug", "info", "warn", "error", "fatal"]);

/** `log`, with every line it logs at an enabled level also written to `buffer()`. */
export function capturedLogger(log: Logger, buffer: () => ExecutionLogBuffer): Logger {
  return new Proxy(log, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof property !== "string" || typeof value !== "function") return value;
      if (property === "child") {
        return (bindings: Bindings) => capturedLogger(target.child(bindings), buffer);
      }
      if (!LEVELS.has(property)) return value;
      return (...args: unknown[]) => {
        if (target.isLevelEnabled(property)) buffer().line("log", lineOf(property, args));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/** pino's (fields, message, ...args) or (message, ...args) as one line of text. */
function lineOf(level: string, args: unknown[]): string {
  const [first, ...rest] = args;
  let message: string;
  let fields = "";
  if (first instanceof Error) {
    message = rest.length > 0 ? format(...(rest as [unknown, ...unknown[]])) : first.message;
    if (rest.length > 0) fields = ` ${JSON.stringify({ err: first.message })}`;
  } else if (typeof first === "object" && first !== null) {
    message = rest.length > 0 ? format(...(rest as [unknown, ...unknown[]])) : "";
    fields = ` ${safeJson(first)}`;
  } else {
    message = format(first, ...rest);
  }
  return `${level.toUpperCase()} ${message}${fields}`.trimEnd();
}

function safeJson(value: object): string {
  try {
    return JSON.stringify(value, (_key, inner: unknown) => (typeof inner === "bigint" ? inner.toString() : inner)) ?? "";
  } catch {
    return String(value);
  }
}
