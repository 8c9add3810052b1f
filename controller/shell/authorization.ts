import type { Metadata } from "@grpc/grpc-js";
import { ShardlineError } from "../../shared/errors.js";
import { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import type { Logger } from "../../shared/logging.js";
import { ADMIN_METHOD_ROLES, roleAllows, type Role } from "../../shared/security/roles.js";
import type { RateLimiter } from "../../shared/security/rate-limit.js";
import type { TokenFile, TokenHolder } from "../../shared/security/token-file.js";

/** Who is calling, once authenticated: a token's holder, or nobody checked (no token file). */
export type Caller = TokenHolder | undefined;

/** The bearer token of a call's `authorization` header, or undefined when it carries none. */
export function bearerToken(value: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(value ?? "");
  return match?.[1];
}

/**
 * Checks callers' tokens against the controller's --token-file. Without one, everybody may do
 * everything (the controller then listens on loopback only, or was told --insecure). A denial is
 * logged with the caller's address, the token holder's name when the token is known, and what
 * was asked: never the token itself.
 */
export class Authorization {
  constructor(
    private readonly tokens: TokenFile | undefined,
    private readonly logger: Logger,
  ) {}

  /** True when calls must carry a token. */
  get enabled(): boolean {
    return this.tokens !== undefined;
  }

  /**
   * The caller, if its token (in `authorization`) gives a role that allows `needed`; throws
   * ShardlineError "unauthenticated" (no token, an unknown one) or "permission-denied" (a role
   * too small) otherwise.
   */
  check(authorization: string | undefined, needed: Role, what: string, peer: string): Caller {
    if (this.tokens === undefined) return undefined;
    const token = bearerToken(authorization);
    if (token === undefined) {
      this.logger.warn({ peer, what }, "denied a call without a token");
      throw new ShardlineError("unauthenticated", `${what}: this controller needs a token: give --token or set SHARDLINE_TOKEN`);
    }
    const holder = this.tokens.authenticate(token);
    if (holder === undefined) {
      this.logger.warn({ peer, what }, "denied a call with an unknown token");
      throw new ShardlineError("unauthenticated", `${what}: the token is not one this controller knows`);
    }
    if (!roleAllows(holder.role, needed)) {
      this.logger.warn({ peer, what, caller: holder.name, role: holder.role, needed }, "denied a call the caller's role does not allow");
      throw new ShardlineError("permission-denied", `${what}: ${holder.name} has role ${holder.role}, and this needs ${needed}`);
    }
    return holder;
  }

  /**
   * Who holds the token in `authorization` (a bearer header), whatever it may do; undefined with
   * no token, an unknown one, or no token file. Nothing is logged: the audit trail names callers
   * with it, refused ones included.
   */
  identify(authorization: string | undefined): TokenHolder | undefined {
    const token = bearerToken(authorization);
    return token === undefined ? undefined : this.tokens?.authenticate(token);
  }

  /** check() for a gRPC call, reading the `authorization` header of its metadata. */
  checkCall(metadata: Metadata, needed: Role, what: string, peer: string): Caller {
    const value = metadata.get("authorization")[0];
    return this.check(typeof value === "string" ? value : undefined, needed, what, peer);
  }
}

/** The caller of each admin call authorizedAdmin let through with a token, by the call's context. */
const callers = new WeakMap<object, TokenHolder>();

/**
 * The name of the token that made an admin call, by the call's context (the last argument of
 * every method kind): what a revision records as who applied it, and a rollout's events as who
 * promoted or aborted it. "" when the controller checks no tokens.
 */
export function callerName(context: object): string {
  return callers.get(context)?.name ?? "";
}

/** The token holder that made an admin call, by the call's context; undefined when the controller checks no tokens. */
export function callerOf(context: object): Readonly<TokenHolder> | undefined {
  return callers.get(context);
}

/**
 * Wraps an AdminService implementation so that every method first checks the caller's role
 * (ADMIN_METHOD_ROLES), then takes a token from the caller's rate limit: a token's holder is
 * limited by its name, a caller without one by its address. The context is the last argument of
 * every method kind; the caller is kept for the method by it (callerName).
 */
export function authorizedAdmin(impl: Record<string, unknown>, authorization: Authorization, limiter?: RateLimiter): Record<string, unknown> {
  if (!authorization.enabled && limiter === undefined) return impl;
  const wrapped: Record<string, unknown> = {};
  for (const method of AdminService.methods) {
    const fn = impl[method.localName];
    if (typeof fn !== "function") continue;
    const needed = ADMIN_METHOD_ROLES[method.name];
    wrapped[method.localName] = async (...args: unknown[]): Promise<unknown> => {
      const context = args.at(-1) as { metadata: Metadata; peer: string };
      // A method the table does not name is refused: a new RPC must be given a role on purpose.
      if (needed === undefined) throw new ShardlineError("permission-denied", `${method.name}: no role may call it`);
      const caller = authorization.checkCall(context.metadata, needed, method.name, context.peer);
      if (caller !== undefined) callers.set(context, caller);
      const client = caller?.name ?? hostOf(context.peer);
      const waitMs = limiter?.take(client) ?? 0;
      if (waitMs > 0) {
        throw new ShardlineError("resource-exhausted", `${method.name}: too many calls from ${client}; retry in ${waitMs} ms (the controller's --admin-rate-limit)`);
      }
      return (fn as (...a: unknown[]) => unknown)(...args);
    };
  }
  return wrapped;
}

/** The address of a peer without its port: `127.0.0.1:53412` -> `127.0.0.1`, `[::1]:5000` -> `::1`. */
function hostOf(peer: string): string {
  const match = /^\[?([^\]]*?)\]?:\d+$/.exec(peer.replace(/^ipv[46]:/, ""));
  return match?.[1] ?? peer;
}
