import { ShardlineError } from "../../shared/errors.js";
import type { ConnectRequest } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { validateHello } from "../core/hello-rules.js";
import type { AgentHello, AssignmentRef, ExecutionUpdate } from "../core/messages.js";
import { helloFromProto, releaseFromProto, toNumber, updatesFromProto } from "./proto-mapping.js";

/** What one message on an agent's stream asks of the core, decoded and checked. */
export type AgentRequest =
  | { kind: "hello"; hello: AgentHello }
  /** `warning`: the seq did not grow, said once per stream. */
  | { kind: "heartbeat"; seq: number; warning?: string }
  | { kind: "execution-updates"; reports: ExecutionUpdate[] }
  | { kind: "release"; released: AssignmentRef[] }
  | { kind: "goodbye"; reason: string }
  /** Nothing for the core: `warning` says why, for a log line (undefined: not worth one). */
  | { kind: "ignored"; warning: string | undefined };

/** Goodbye.reason is free text for operators, kept to this many characters. */
const MAX_GOODBYE_REASON = 256;

/**
 * The order of messages on one AgentService.Connect stream, as docs/protocol.md states it: a
 * Hello first and only once, heartbeats with a growing seq, one Goodbye. It decodes each message
 * and checks its fields (proto-mapping.ts); what is wrong ends the stream with a ShardlineError
 * naming the field, and what the protocol tolerates is returned as `ignored`. Rules about the
 * controller's state (whose shard, whose execution) are the core's.
 */
export class AgentStreamProtocol {
  #greeted = false;
  /** The highest heartbeat seq so far; the Hello counts as heartbeat 0. */
  #lastSeq = 0;
  #warnedSeq = false;
  #saidGoodbye = false;
  #warnedUnknownKind = false;

  /** True once a Hello was accepted here (the core may still refuse it). */
  get greeted(): boolean {
    return this.#greeted;
  }

  /** Decodes the next message; throws a ShardlineError with the status to end the stream with. */
  accept(message: ConnectRequest): AgentRequest {
    const kind = message.kind;
    if (kind.case === undefined) {
      // A field this controller does not know: a kind added to the proto after it was built,
      // from a newer agent. Tolerated as unknown fields are, once a Hello said who speaks.
      if (this.#greeted && message.$unknown !== undefined && message.$unknown.length > 0) {
        const warn = !this.#warnedUnknownKind;
        this.#warnedUnknownKind = true;
        return { kind: "ignored", warning: warn ? "ignored a message of a kind this controller does not know (a newer agent?); ignoring any more silently" : undefined };
      }
      throw ShardlineError.invalid("kind", undefined, "one of hello, heartbeat, execution_updates, release, goodbye");
    }
    if (kind.case === "hello") {
      if (this.#greeted) throw new ShardlineError("failed-precondition", "hello: sent twice on one stream; send it once, first");
      const hello = helloFromProto(kind.value);
      validateHello(hello);
      this.#greeted = true;
      return { kind: "hello", hello };
    }
    if (!this.#greeted) {
      throw new ShardlineError("failed-precondition", `${snake(kind.case)}: the first message must be a hello`);
    }
    switch (kind.case) {
      case "heartbeat": {
        const seq = toNumber(kind.value.seq, "heartbeat.seq");
        if (seq > this.#lastSeq) {
          this.#lastSeq = seq;
          return { kind: "heartbeat", seq };
        }
        // Acked all the same: the seq means something only to the agent, whose lease runs from
        // the send time of the heartbeat acked, so a wrong one can confuse its own lease and
        // nothing else. Cutting the stream would cost it its shards over a counting bug.
        const warn = !this.#warnedSeq;
        this.#warnedSeq = true;
        return {
          kind: "heartbeat",
          seq,
          ...(warn ? { warning: `heartbeat.seq ${seq} does not grow (the highest on this stream is ${this.#lastSeq}); acked as sent, and not said again` } : {}),
        };
      }
      case "executionUpdates":
        return { kind: "execution-updates", reports: updatesFromProto(kind.value) };
      case "release":
        return { kind: "release", released: releaseFromProto(kind.value) };
      case "goodbye":
        // Idempotent: the agent is leaving either way, and a second Goodbye says nothing new.
        if (this.#saidGoodbye) return { kind: "ignored", warning: "ignored a second goodbye on one stream" };
        this.#saidGoodbye = true;
        return { kind: "goodbye", reason: kind.value.reason.slice(0, MAX_GOODBYE_REASON) };
    }
  }
}

/** The proto's name of a oneof case, as messages name fields: `execution_updates`. */
function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
