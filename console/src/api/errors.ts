import { Code, ConnectError } from "@connectrpc/connect";

/**
 * The controller's own words for a failed call: its message as it sent it (ConnectError's
 * rawMessage, without the "[code]" prefix), or the browser's when the call never got an answer.
 */
export function errorText(error: unknown): string {
  const connect = ConnectError.from(error);
  return connect.rawMessage !== "" ? connect.rawMessage : connect.message;
}

/** True when the controller refused the caller's token (or the lack of one). */
export function isUnauthenticated(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Unauthenticated;
}

/** True when the controller does not serve the method (an older controller). */
export function isUnimplemented(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Unimplemented;
}

/** True when the call was cancelled by the console itself (a page left, a watch stopped). */
export function isCancelled(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Canceled;
}
