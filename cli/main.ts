#!/usr/bin/env node
/**
 * The `shardline` binary: runs the command line with the process's arguments, streams, signals
 * and environment, then exits with the command's exit code (see cli/exit-codes.ts).
 */
import { text } from "node:stream/consumers";
import { runCli } from "./commands/program.js";
import type { CliIo } from "./output.js";

// `shardline get jobs | head -1` closes stdout early; that is not a failure worth a stack trace.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

const io: CliIo = {
  stdout: (chunk) => void process.stdout.write(chunk),
  stderr: (chunk) => void process.stderr.write(chunk),
  readStdin: () => text(process.stdin),
  env: process.env,
  onSignal(listener) {
    process.on("SIGINT", listener);
    process.on("SIGTERM", listener);
    return () => {
      process.off("SIGINT", listener);
      process.off("SIGTERM", listener);
    };
  },
};

const code = await runCli(process.argv.slice(2), io);
// Exit explicitly once the output is flushed: a stopped controller or agent may leave timers or
// sockets behind that would otherwise keep the process alive.
await new Promise<void>((resolve) => process.stdout.write("", () => resolve()));
await new Promise<void>((resolve) => process.stderr.write("", () => resolve()));
process.exit(code);
