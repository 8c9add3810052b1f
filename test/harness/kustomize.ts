import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

/** A rendered Kubernetes object, as plain JSON. */
export type Manifest = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
};

/** The kubectl that renders kustomizations: $SHARDLINE_KUBECTL, else kubectl on the PATH. */
export const KUBECTL = process.env.SHARDLINE_KUBECTL || "kubectl";

/**
 * Renders a kustomization directory with `kubectl kustomize` and returns its objects. A missing
 * kubectl fails the test with the package to install rather than skipping it: CI installs
 * Debian's kubernetes-client, whose kubectl embeds the kustomize the manifests are written for.
 */
export async function renderKustomization(directory: string): Promise<Manifest[]> {
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(KUBECTL, ["kustomize", directory], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()));
    child.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "ENOENT"
          ? new Error(
              `kubectl is missing (${KUBECTL} is not on the PATH): the deploy manifests are rendered with \`kubectl kustomize\`; ` +
                "install Debian's kubernetes-client (apt-get install -y kubernetes-client), as .ci/run does, or set SHARDLINE_KUBECTL",
              { cause: error },
            )
          : error,
      ),
    );
    child.once("close", (exitCode) => resolve({ code: exitCode, stdout: out, stderr: err }));
  });
  if (code !== 0) throw new Error(`${KUBECTL} kustomize ${directory} failed (exit ${code}):\n${stderr}`);
  return parseAllDocuments(stdout).flatMap((document) => {
    if (document.errors.length > 0) throw new Error(`${directory} rendered YAML that does not parse: ${document.errors[0]!.message}`);
    const object = document.toJS() as Manifest | null;
    return object === null ? [] : [object];
  });
}

/** One rule of a Role or ClusterRole. */
export type PolicyRule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };

/** The repository's kustomize directory. */
export const KUSTOMIZE_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "deploy", "kustomize");

/**
 * The two ways the controller may follow ShardedJobs: a Role and RoleBinding in its own
 * namespace, or a ClusterRole and ClusterRoleBinding for every namespace. Each is a kustomization
 * an overlay adds to its bases.
 */
export const CONTROLLER_RBAC = {
  namespaced: join(KUSTOMIZE_ROOT, "components", "controller-rbac-namespaced"),
  cluster: join(KUSTOMIZE_ROOT, "components", "controller-rbac-cluster"),
} as const;

/**
 * The rules the controller's Role (`namespaced`) or ClusterRole (`cluster`) grants, as rendered
 * by `kubectl kustomize`: what a test compares with the requests the controller makes.
 */
export async function controllerRbacRules(scope: keyof typeof CONTROLLER_RBAC): Promise<PolicyRule[]> {
  const kind = scope === "namespaced" ? "Role" : "ClusterRole";
  const objects = await renderKustomization(CONTROLLER_RBAC[scope]);
  const role = objects.find((object) => object.kind === kind && object.metadata.name === "shardline-controller");
  if (role === undefined) throw new Error(`${CONTROLLER_RBAC[scope]} renders no ${kind} shardline-controller`);
  return (role as Manifest & { rules: PolicyRule[] }).rules;
}

/**
 * Rules as the set of `group/resource:verb` they grant ("" is the core group), e.g.
 * `shardline.dev/shardedjobs/status:patch`; a request is allowed when its triple is in the set.
 * Rules limited to resourceNames are refused here: none of Shardline's roles needs them.
 */
export function rbacGrants(rules: PolicyRule[]): Set<string> {
  const granted = new Set<string>();
  for (const rule of rules) {
    if (rule.resourceNames !== undefined) throw new Error(`a rule limited to resourceNames (${rule.resourceNames.join(", ")}): rbacGrants does not model it`);
    for (const group of rule.apiGroups) for (const resource of rule.resources) for (const verb of rule.verbs) granted.add(`${group}/${resource}:${verb}`);
  }
  return granted;
}
