/** What an audit record says in one line, in `shardline events --audit` and the `audit` event's message. */
export interface AuditFields {
  caller: string;
  peer: string;
  role: string;
  method: string;
  target: string;
  summary: string;
  outcome: string;
  error: string;
}

/**
 * `alice (admin) PauseJob invoices: paused`, `vera (viewer) ResumeJob invoices: permission_denied:
 * ...`; a caller without a known token is named by its address.
 */
export function auditMessage(record: AuditFields): string {
  const what = record.outcome === "ok" ? record.summary : `${record.outcome}: ${record.error}`;
  const nobody = record.outcome === "unauthenticated" ? `no valid token (${record.peer})` : "anyone (no tokens)";
  const who = `${record.caller || nobody}${record.role === "" ? "" : ` (${record.role})`}`;
  return `${who} ${record.method}${record.target === "" ? "" : ` ${record.target}`}: ${what}`;
}
