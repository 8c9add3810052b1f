/**
 * Who may do what. A token (or a client certificate) gives its holder one role; each role can do
 * what the one before it can, and more:
 * - `viewer` reads: jobs, agents, assignments, executions, events, rollouts and revisions,
 *   metrics;
 * - `operator` also runs things: trigger, pause, resume, drain, uncordon, cancel, disable and
 *   enable shards, and steers rollouts: promote, abort, retry, and undo (which applies a
 *   revision the job already had, so it creates nothing new);
 * - `admin` also changes what exists: apply and delete jobs.
 * `agent` is apart: it may connect as an agent (AgentService.Connect) and nothing else, and no
 * admin role may connect as an agent.
 */
export const ADMIN_ROLES = ["viewer", "operator", "admin"] as const;

export type AdminRole = (typeof ADMIN_ROLES)[number];
export type Role = AdminRole | "agent";

export const ROLES: readonly Role[] = [...ADMIN_ROLES, "agent"];

/** The role each AdminService method needs, by its proto name. A method missing here is refused. */
export const ADMIN_METHOD_ROLES: Readonly<Record<string, AdminRole>> = {
  GetJob: "viewer",
  ListJobs: "viewer",
  ListAgents: "viewer",
  ListAssignments: "viewer",
  ListExecutions: "viewer",
  GetExecution: "viewer",
  WatchEvents: "viewer",
  GetRollout: "viewer",
  ListRevisions: "viewer",
  Watch: "viewer",
  WhoAmI: "viewer",
  GetVersion: "viewer",
  ListAuditRecords: "viewer",
  GetExecutionLogs: "viewer",
  TriggerJob: "operator",
  PauseJob: "operator",
  ResumeJob: "operator",
  DrainAgent: "operator",
  UncordonAgent: "operator",
  CancelExecution: "operator",
  DisableShard: "operator",
  EnableShard: "operator",
  PromoteRollout: "operator",
  AbortRollout: "operator",
  RetryRollout: "operator",
  UndoRollout: "operator",
  ApplyJob: "admin",
  ApplyJobs: "admin",
  DeleteJob: "admin",
};

/** True when a holder of `role` may do what `needed` may. */
export function roleAllows(role: Role, needed: Role): boolean {
  if (role === "agent" || needed === "agent") return role === needed;
  return ADMIN_ROLES.indexOf(role) >= ADMIN_ROLES.indexOf(needed);
}
