import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { ShardlineError } from "../../../shared/errors.js";
import { KubeClient, type KubeClientOptions } from "./kube-client.js";

/** Where the agent finds its Kubernetes configuration. */
export interface KubernetesAccessOptions {
  /** A kubeconfig file. Default: $KUBECONFIG, else the pod's service account, else ~/.kube/config. */
  kubeconfig?: string;
  /** The kubeconfig context to use. Default its current context. */
  context?: string;
  /** The namespace Jobs are created in. Default: the pod's own (service account), else the context's, else "default". */
  namespace?: string;
  /** The environment to read KUBECONFIG and KUBERNETES_SERVICE_HOST from. Default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** An API server to talk to, and the namespace to work in. */
export interface KubernetesAccess {
  client: KubeClient;
  namespace: string;
  /** Where the configuration came from, for the agent's log: a file, or "in-cluster". */
  source: string;
}

/** The service account's files in every pod that mounts its token. */
const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/**
 * Loads the Kubernetes configuration with @kubernetes/client-node's KubeConfig: an explicit
 * kubeconfig, else KUBECONFIG, else the pod's service account (in a cluster), else
 * ~/.kube/config. Unlike KubeConfig.loadFromDefault, it never falls back to an unauthenticated
 * localhost:8080: no configuration is an error saying what to set. The library is imported here,
 * on first use, so an agent that runs no Kubernetes Jobs does not load it.
 */
export async function connectKubernetes(options: KubernetesAccessOptions = {}, clientOptions: KubeClientOptions = {}): Promise<KubernetesAccess> {
  const env = options.env ?? process.env;
  const { KubeConfig } = await import("@kubernetes/client-node");
  const config = new KubeConfig();
  const file = options.kubeconfig ?? (env.KUBECONFIG ? env.KUBECONFIG : undefined);
  let source: string;
  try {
    if (file !== undefined) {
      // KUBECONFIG may list several files; the first one is taken, as a path list would need merging.
      source = file.split(":")[0]!;
      config.loadFromFile(source);
    } else if (env.KUBERNETES_SERVICE_HOST && existsSync(join(SERVICE_ACCOUNT_DIR, "token"))) {
      source = "in-cluster";
      config.loadFromCluster();
    } else if (existsSync(join(homedir(), ".kube", "config"))) {
      source = join(homedir(), ".kube", "config");
      config.loadFromFile(source);
    } else {
      throw new ShardlineError(
        "failed-precondition",
        "no Kubernetes configuration: run the agent in a pod with a service account, or set KUBECONFIG to a kubeconfig file",
      );
    }
  } catch (error) {
    if (error instanceof ShardlineError) throw error;
    throw new ShardlineError("failed-precondition", `cannot read the Kubernetes configuration: ${error instanceof Error ? error.message : String(error)}`, {}, { cause: error });
  }
  if (options.context !== undefined) {
    if (config.getContextObject(options.context) === null) {
      throw ShardlineError.invalid("kubernetes context", options.context, `a context of ${source}: ${config.getContexts().map((c) => c.name).join(", ")}`);
    }
    config.setCurrentContext(options.context);
  }
  if (config.getCurrentCluster() === null) throw new ShardlineError("failed-precondition", `the Kubernetes configuration ${source} names no cluster for its current context`);
  const namespace = options.namespace ?? config.getContextObject(config.getCurrentContext())?.namespace ?? "default";
  return { client: new KubeClient(config, clientOptions), namespace: namespace.trim(), source };
}
