import type { Logger } from "pino";
import { ShardlineError } from "../../../shared/errors.js";
import { Backoff } from "../../runtime/backoff.js";
import { KubeApiError, paths, type KubeClient, type KubeObject } from "./kube-client.js";

/** One label to copy from the agent's Node to the agent: `from` on the Node becomes `to`. */
export interface NodeLabelCopy {
  from: string;
  to: string;
}

/** What readNodeLabels needs. */
export interface NodeLabelOptions {
  client: KubeClient;
  /** The Node the agent's pod runs on (the downward API's spec.nodeName). */
  node: string;
  copies: readonly NodeLabelCopy[];
  logger: Logger;
  /** How many times to ask an API server that does not answer before giving up. Default 6. */
  attempts?: number;
  /** Bounds of the jittered wait between those attempts. Default 500 ms to 8 s. */
  retry?: { initialMs: number; maxMs: number };
}

/**
 * Reads the agent's Node and returns the labels it was asked to copy, under their agent names:
 * the pod cannot see its Node's labels through the downward API, and topology labels
 * (topology.kubernetes.io/zone, .../region) live only there. A label the Node does not carry is
 * left out with a warning, as a cluster without zones is a real cluster; the agent then takes no
 * shards of jobs spread by that label. The labels are read once, at start: a Node's zone does not
 * change under a running pod.
 *
 * Throws a ShardlineError naming the fix when the Node does not exist or the agent may not read
 * it, or when the API server did not answer after `attempts` tries.
 */
export async function readNodeLabels(options: NodeLabelOptions): Promise<Record<string, string>> {
  const { client, node, copies, logger } = options;
  const attempts = options.attempts ?? 6;
  const backoff = new Backoff(options.retry ?? { initialMs: 500, maxMs: 8_000 });
  let found: KubeObject | undefined;
  for (let attempt = 1; found === undefined; attempt++) {
    try {
      found = await client.json<KubeObject>({ method: "GET", path: paths.node(node) });
    } catch (error) {
      if (!(error instanceof KubeApiError)) throw error;
      if (error.code === 404) {
        throw new ShardlineError("failed-precondition", `--node: Kubernetes has no Node ${node}; pass the pod's spec.nodeName (the downward API's NODE_NAME)`, { field: "--node", value: node });
      }
      if (error.code === 401 || error.code === 403) {
        throw new ShardlineError(
          "failed-precondition",
          `--label-from-node: Kubernetes refused to show Node ${node} (${error.message}); the agent's service account needs get on nodes, a ClusterRole (deploy/kustomize/agent/base/clusterrole-nodes.yaml)`,
          { field: "--label-from-node", value: node },
        );
      }
      if (!error.retryable || attempt >= attempts) {
        throw new ShardlineError("unavailable", `--label-from-node: could not read Node ${node} after ${attempt} attempts: ${error.message}`, { field: "--label-from-node", value: node }, { cause: error });
      }
      const waitMs = backoff.next();
      logger.warn({ err: error, node, waitMs }, "could not read the agent's Node for its labels; retrying");
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  }
  const labels: Record<string, string> = {};
  const nodeLabels = found.metadata.labels ?? {};
  for (const { from, to } of copies) {
    const value = nodeLabels[from];
    if (value === undefined) {
      logger.warn({ node, label: from }, "the agent's Node has no such label; the agent goes without it");
      continue;
    }
    labels[to] = value;
  }
  return labels;
}
