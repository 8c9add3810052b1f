import { spawn } from "node:child_process";
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
