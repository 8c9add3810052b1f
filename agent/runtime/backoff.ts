/** The reconnect backoff lives with the agent core, which decides when to reconnect; the executors use it too. */
export { Backoff, type BackoffOptions } from "../core/backoff.js";
