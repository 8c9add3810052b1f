import { createHash } from "node:crypto";

/**
 * Labels and annotations the agent puts on every Job it creates (and on the Job's pods), so that
 * `kubectl get jobs,pods -l shardline.dev/job=billing-rollup` finds an execution's work and a
 * restarted agent finds the Jobs it created.
 */
export const LABELS = {
  /** app.kubernetes.io/managed-by: shardline. */
  managedBy: "app.kubernetes.io/managed-by",
  /** The Shardline job's name (a DNS-1123 label, so always a valid label value). */
  job: "shardline.dev/job",
  /** The shard number, or "complete" for a fire's completion hook run. */
  shard: "shardline.dev/shard",
  /** The fire's instant in Unix milliseconds (an ISO time has ':', which label values cannot). */
  fireTime: "shardline.dev/fire-time",
  /** The attempt number, from 1. */
  attempt: "shardline.dev/attempt",
  /** The job revision the execution runs, in decimal. */
  revision: "shardline.dev/revision",
  /** The agent that created the Job: its id, or a hashed form when the id is no valid label value. */
  agent: "shardline.dev/agent",
  /** The Job's own name, on its pods: how the agent finds them for the log tail. */
  execution: "shardline.dev/execution",
  /** Set to "true" once the Job's outcome was reported: a restarted agent leaves it alone. */
  reported: "shardline.dev/reported",
} as const;

export const ANNOTATIONS = {
  /** The execution id, which the Job name only hashes. */
  executionId: "shardline.dev/execution-id",
  /** The agent's full id. */
  agentId: "shardline.dev/agent-id",
  /** The ExecutionContext (less its pod template) as protobuf JSON, for a restarted agent to adopt the Job. */
  executionContext: "shardline.dev/execution-context",
  /** The container whose log tail is the result, so that an adopted Job needs no pod template. */
  logContainer: "shardline.dev/log-container",
} as const;

export const MANAGED_BY = "shardline";

/** Characters of the hash that makes a name unique: 10 base-32 characters are 50 bits. */
const HASH_LENGTH = 10;
const MAX_NAME = 63;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/**
 * The name of the Job that runs an execution: `<job>-<shard>-<hash>`, where the hash is of the
 * whole execution id (job, fire time, shard, attempt), so the same execution always gets the
 * same name (a second create answers 409 and the agent adopts the Job) and two executions never
 * share one. A DNS-1123 label of at most 63 characters, as Kubernetes requires of a Job whose
 * name becomes its pods' job-name label; a long job name is cut, never the hash.
 */
export function jobNameOf(executionId: string, job: string, shard: string): string {
  const hash = base32Hash(executionId, HASH_LENGTH);
  const room = MAX_NAME - shard.length - hash.length - 2;
  const prefix = dnsSafe(job).slice(0, Math.max(0, room)).replace(/-+$/, "");
  return prefix === "" ? `x-${shard}-${hash}`.slice(0, MAX_NAME) : `${prefix}-${shard}-${hash}`;
}

/**
 * The agent id as a label value: itself when it is one (at most 63 letters, digits, '-', '_',
 * '.', starting and ending with a letter or digit), else its first characters and a hash. The
 * full id is in the shardline.dev/agent-id annotation, which recovery checks.
 */
export function agentLabelOf(agentId: string): string {
  if (agentId.length <= MAX_NAME && LABEL_VALUE.test(agentId)) return agentId;
  const hash = base32Hash(agentId, HASH_LENGTH);
  const prefix = agentId.slice(0, MAX_NAME - HASH_LENGTH - 1).replace(/[^A-Za-z0-9]+$/, "").replace(/^[^A-Za-z0-9]+/, "");
  return prefix === "" ? hash : `${prefix}-${hash}`;
}

/** Lowercase letters, digits and single '-' only. */
function dnsSafe(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/-{2,}/g, "-").replace(/^-+/, "");
}

/** The first `length` characters of the SHA-256 of `text` in RFC 4648 base 32, lowercased (a-z, 2-7). */
function base32Hash(text: string, length: number): string {
  const digest = createHash("sha256").update(text).digest();
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of digest) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5 && out.length < length) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= length) break;
  }
  return out;
}
