import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The Argo CD health check the repository ships for ShardedJobs. */
export const ARGOCD_HEALTH = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "deploy", "gitops", "argocd-health.lua");

/** A JSON value as a Lua table constructor (what Argo CD hands the script as `obj`). */
function lua(value: unknown): string {
  if (value === null || value === undefined) return "nil";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `{${value.map(lua).join(", ")}}`;
  return `{${Object.entries(value as Record<string, unknown>)
    .map(([key, item]) => `[${JSON.stringify(key)}] = ${lua(item)}`)
    .join(", ")}}`;
}

/**
 * What Argo CD shows for `object` with deploy/gitops/argocd-health.lua: the script run by Debian's
 * lua5.4 (installed by tools/system-packages.sh), `obj` set as Argo CD sets it.
 */
export function argoHealth(object: unknown): Promise<{ status: string; message: string }> {
  const code = `obj = ${lua(object)}\nlocal hs = dofile(${JSON.stringify(ARGOCD_HEALTH)})\nio.write(hs.status, "\\t", hs.message or "")`;
  return new Promise((resolve, reject) => {
    execFile("lua5.4", ["-e", code], (error, stdout, stderr) => {
      if (error !== null) {
        const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
        reject(new Error(missing ? "lua5.4 is missing: install Debian's lua5.4 (tools/system-packages.sh does)" : `the health check failed: ${stderr}`));
        return;
      }
      const [status = "", message = ""] = stdout.split("\t");
      resolve({ status, message });
    });
  });
}
