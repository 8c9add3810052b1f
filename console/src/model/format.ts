import { type Agent, AgentState } from "../../../shared/gen/shardline/v1/types_pb.js";

/** A Unix-ms instant (as the API gives it, bigint or number) in this browser's zone: `2026-12-07 16:59:03`; "—" for 0 (none). */
export function formatTime(ms: bigint | number): string {
  const value = Number(ms);
  if (value === 0) return "—";
  const date = new Date(value);
  const two = (n: number): string => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

/** A Unix-ms instant's time of day in this browser's zone, to the millisecond: `16:59:03.042`; dashes for 0 (unknown). */
export function formatClock(ms: bigint | number): string {
  const value = Number(ms);
  if (value === 0) return "--:--:--.---";
  const date = new Date(value);
  const pad = (n: number, width = 2): string => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** A duration in words a table can hold: `850 ms`, `4.2 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`. */
export function formatDuration(ms: number): string {
  const value = Math.max(0, ms);
  if (value < 1000) return `${Math.round(value)} ms`;
  if (value < 10_000) return `${(value / 1000).toFixed(1)} s`;
  const seconds = Math.round(value / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return seconds % 60 === 0 ? `${minutes} min` : `${minutes} min ${seconds % 60} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return minutes % 60 === 0 ? `${hours} h` : `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** `at` from `now`, both Unix ms: `in 4.2 s`, `3 min ago`; "—" for 0. */
export function formatRelative(at: bigint | number, now: number): string {
  const value = Number(at);
  if (value === 0) return "—";
  const delta = value - now;
  if (Math.abs(delta) < 500) return "now";
  return delta > 0 ? `in ${formatDuration(delta)}` : `${formatDuration(-delta)} ago`;
}

/**
 * An agent's lease as the console shows it: "renewed" for a connected agent (a watch refreshes
 * lease_expires only with other changes, so its value would be stale), and for a lost one the
 * time left until it is forgotten and its shards move, on the controller's clock (`controllerNow`).
 */
export function leaseText(agent: Agent, controllerNow: number): string {
  if (agent.state !== AgentState.LOST) return "renewed";
  const left = Number(agent.leaseExpiresUnixMs) - controllerNow;
  return left > 0 ? `expires in ${Math.ceil(left / 1000)} s` : "expired";
}

/** A rate: `0`, `0.4`, `12`, `1,250`. */
export function formatRate(perSecond: number): string {
  if (perSecond === 0) return "0";
  if (perSecond < 10) return perSecond.toFixed(1);
  return Math.round(perSecond).toLocaleString("en");
}
