import { status } from "@grpc/grpc-js";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import type { ConnectRequestSchema, ConnectResponseSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import type { CallContext, MessageStream } from "../../shared/grpc/index.js";
import type { EtcdLeadership } from "../store/etcd/etcd-leadership.js";
import type { Leading } from "./leading.js";

/**
 * Where calls go when this controller does not lead (several replicas on etcd): agents get a
 * Redirect to the leader, admin calls an UNAVAILABLE naming it; while no controller leads, both
 * are held a while for one to be elected.
 */

type AgentStream = MessageStream<typeof ConnectRequestSchema, typeof ConnectResponseSchema>;

/**
 * How long a follower holds an agent's stream while no controller leads: long enough to see a
 * dead leader's etcd lease run out and another win, shorter than an agent waits for a Welcome.
 */
const HOLD_AGENT_WITHOUT_LEADER_MS = 3_000;
/** How long a follower holds an admin call while no controller leads. */
const HOLD_ADMIN_WITHOUT_LEADER_MS = 5_000;

/** What routing reads of the controller it serves in. */
export interface ControllerStatus {
  /** The leader's parts, while this controller leads. */
  leading(): Leading | undefined;
  /** True once the controller is stopping. */
  stopping(): boolean;
  /** With etcd: the election this controller takes part in. */
  leadership(): EtcdLeadership | undefined;
  /** The address this controller gives as the leader's while it leads (etcd). */
  advertised(): string | undefined;
  /** Resolves once this controller leads. */
  elected: Promise<number>;
}

/**
 * Resolves once there is somewhere to send a caller: another controller leads, or this one
 * does and serves; or after `ms`, or when stopping.
 */
export function leaderKnown(status: ControllerStatus, ms: number): Promise<void> {
  return (
    new Promise((resolve) => {
      const { leadership, advertised } = status;
      const settled = (): boolean => status.stopping() || status.leading() !== undefined || (leadership()?.leader ?? advertised()) !== advertised();
      if (settled()) {
        resolve();
        return;
      }
      const check = (): void => {
        if (!settled()) return;
        clearInterval(poll);
        clearTimeout(timer);
        unsubscribe?.();
        resolve();
      };
      const unsubscribe = leadership()?.onLeaderChange(check);
      void status.elected.then(check);
      // The leader key names this controller a little before it serves: checked again shortly.
      const poll = setInterval(check, 50);
      const timer = setTimeout(() => {
        clearInterval(poll);
        unsubscribe?.();
        resolve();
      }, ms);
    })
  );
}

/**
 * A follower's answer to an agent: a Redirect to the leader. While no controller leads (the
 * leader just died), the stream is held until one does, so agents reach the new leader as soon
 * as it is elected instead of after their reconnect backoff.
 */
export function follow(controller: ControllerStatus, stream: AgentStream, context: CallContext): void {
  let open = true;
  stream.onClose(() => (open = false));
  void leaderKnown(controller, HOLD_AGENT_WITHOUT_LEADER_MS).then(() => {
    if (!open) return;
    const leadership = controller.leadership();
    const leader = leadership?.leader;
    const leading = controller.leading();
    if (controller.stopping()) stream.close(status.UNAVAILABLE, "the controller is shutting down");
    else if (leading !== undefined) leading.sessions.connect(stream, context);
    else if (leader === undefined || leader === controller.advertised()) stream.close(status.UNAVAILABLE, "no controller leads yet; retry shortly");
    else {
      stream.send({ term: BigInt(leadership!.currentTerm), kind: { case: "redirect", value: { leaderAddress: leader } } });
      stream.end();
    }
  });
}

/** Why a follower (or a controller stopping, or one no leader is known to) does not serve a call. */
export function notLeading(status: ControllerStatus): ShardlineError {
  const leader = status.leadership()?.leader;
  if (status.stopping()) return new ShardlineError("unavailable", "the controller is shutting down");
  if (leader === undefined || leader === status.advertised()) return new ShardlineError("unavailable", "no controller leads yet; retry shortly");
  return new ShardlineError("unavailable", `this controller is a follower; the leader is at ${leader}`, { leader });
}

/**
 * The AdminService as served: each method runs the leader's implementation while this controller
 * leads, and answers `notLeading()` otherwise (after waiting a while for a leader when there is none).
 */
export function followingAdmin(controller: ControllerStatus): Record<string, unknown> {
  const impl: Record<string, unknown> = {};
  for (const method of AdminService.methods) {
    impl[method.localName] = async (...args: unknown[]): Promise<unknown> => {
      if (controller.leading() === undefined) await leaderKnown(controller, HOLD_ADMIN_WITHOUT_LEADER_MS);
      const admin = controller.leading()?.admin;
      if (admin === undefined) throw notLeading(controller);
      const fn = admin[method.localName];
      if (typeof fn !== "function") throw new ShardlineError("failed-precondition", `${method.name} is not implemented by this controller`);
      return (fn as (...a: unknown[]) => unknown)(...args);
    };
  }
  return impl;
}
