import { z } from "zod";
import { HTTP_METHODS } from "./job-spec.js";
import { environment, headerMap, httpUrl, integer, mapping, oneOf, stringList, text } from "./manifest-fields.js";

/**
 * spec.script and spec.http, two of the four things a job can run (the others are spec.handler
 * and spec.kubernetes, see kubernetes-schema.ts). Defaults are filled in here, so the stored
 * job holds every value an agent uses.
 */

const COMMAND_ALLOWED = "a program name on the agent's PATH or an absolute path: a non-empty string without NUL";

/** spec.script: a command run as a child process, without a shell; agents must allow-list it. */
export const scriptSchema = mapping("spec.script", {
  command: z
    .string({ error: COMMAND_ALLOWED })
    .refine((command) => command !== "" && !command.includes("\0"), { error: COMMAND_ALLOWED })
    .describe("A program name on the agent's PATH or an absolute path; run without a shell."),
  args: stringList().default([]).describe("The command's arguments, as strings (quote numbers)."),
  env: environment().default({}).describe("Extra environment variables."),
  killGraceSeconds: integer(0, 3600).default(10).describe("After a timeout or cancel: SIGTERM, then SIGKILL after this many seconds."),
}).describe("Run a command as a child process (only agents started with --allow-script COMMAND take the job).");

/** spec.http: one request per execution; a non-2xx status fails it. */
export const httpSchema = mapping("spec.http", {
  method: oneOf(HTTP_METHODS).default("POST").describe("The request method."),
  url: httpUrl().describe("An absolute http:// or https:// URL."),
  headers: headerMap().default({}).describe("Request headers; a value ${env:NAME} is read from the agent's environment when sending."),
  body: text().default("").describe('The request body; "" sends the execution context as JSON.'),
  connectTimeoutSeconds: integer(1, 300).default(10).describe("How long connecting may take."),
  readTimeoutSeconds: integer(1, 86_400).default(60).describe("The longest silence once connected."),
}).describe("Make one HTTP request per execution (only agents started with --allow-http take the job).");
