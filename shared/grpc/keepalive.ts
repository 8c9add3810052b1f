import type { ChannelOptions } from "@grpc/grpc-js";

/**
 * HTTP/2 keepalive for one side of a connection. Keepalive finds dead TCP connections (a peer
 * that vanished without a FIN, a NAT that forgot the flow); it is not the lease. Agent liveness
 * is decided by heartbeats on the Connect stream, whatever keepalive says.
 */
export interface KeepaliveOptions {
  /**
   * Send a PING after this long without one; equivalent to GRPC_ARG_KEEPALIVE_TIME_MS
   * (`grpc.keepalive_time_ms`). Client default 10 s, server default 10 s.
   */
  timeMs?: number;
  /**
   * Drop the connection when a PING is not answered within this long; equivalent to
   * GRPC_ARG_KEEPALIVE_TIMEOUT_MS (`grpc.keepalive_timeout_ms`). Default 5 s.
   */
  timeoutMs?: number;
  /**
   * Keep pinging while no call is open; equivalent to GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS.
   * Default true, so an idle admin client also notices a dead controller before its next call.
   */
  permitWithoutCalls?: boolean;
  /**
   * Server only: the shortest interval between client PINGs the server tolerates on a connection
   * without data; equivalent to GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS
   * (`grpc.http2.min_ping_interval_without_data_ms`). Default 5 s, half the client's 10 s, so a
   * Shardline client is never sent GOAWAY "too_many_pings" by a server (or proxy) that enforces it.
   */
  minPingIntervalMs?: number;
}

/** Client keepalive defaults: ping every 10 s, give up after 5 s, also while idle. */
export const CLIENT_KEEPALIVE_DEFAULTS: Readonly<Required<Omit<KeepaliveOptions, "minPingIntervalMs">>> = {
  timeMs: 10_000,
  timeoutMs: 5_000,
  permitWithoutCalls: true,
};

/**
 * Server keepalive defaults: the server pings its clients as often as they ping it, and accepts
 * client pings twice as often as Shardline clients send them.
 */
export const SERVER_KEEPALIVE_DEFAULTS: Readonly<Required<KeepaliveOptions>> = {
  timeMs: 10_000,
  timeoutMs: 5_000,
  permitWithoutCalls: true,
  minPingIntervalMs: 5_000,
};

/** The grpc-js channel options that carry a client's keepalive settings. */
export function clientKeepaliveOptions(options: KeepaliveOptions = {}): ChannelOptions {
  const merged = { ...CLIENT_KEEPALIVE_DEFAULTS, ...definedOnly(options) };
  return {
    "grpc.keepalive_time_ms": merged.timeMs,
    "grpc.keepalive_timeout_ms": merged.timeoutMs,
    "grpc.keepalive_permit_without_calls": merged.permitWithoutCalls ? 1 : 0,
  };
}

/** The grpc-js server options that carry a server's keepalive settings. */
export function serverKeepaliveOptions(options: KeepaliveOptions = {}): ChannelOptions {
  const merged = { ...SERVER_KEEPALIVE_DEFAULTS, ...definedOnly(options) };
  return {
    "grpc.keepalive_time_ms": merged.timeMs,
    "grpc.keepalive_timeout_ms": merged.timeoutMs,
    "grpc.keepalive_permit_without_calls": merged.permitWithoutCalls ? 1 : 0,
    // grpc-js 1.14 does not enforce this itself; it is set so the server states its policy, and
    // for parity with servers and proxies that do enforce it.
    "grpc.http2.min_ping_interval_without_data_ms": merged.minPingIntervalMs,
  };
}

/** Drops keys whose value is undefined, so `{timeMs: undefined}` keeps the default. */
function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}
