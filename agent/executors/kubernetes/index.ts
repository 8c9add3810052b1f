/**
 * The Kubernetes executor: each execution of a job with spec.kubernetes runs as a batch/v1 Job
 * in the agent's namespace. connectKubernetes() finds the API server (in-cluster or KUBECONFIG);
 * a KubernetesExecutor runs the executions and, after a restart, recovers the Jobs it created.
 * readNodeLabels() copies topology labels from the agent's Node to the agent.
 */
export { KubernetesExecutor, STOP_WAIT_MS, type KubernetesExecutorOptions } from "./kubernetes-executor.js";
export { connectKubernetes, type KubernetesAccess, type KubernetesAccessOptions } from "./kube-config.js";
export { KubeApiError, KubeClient } from "./kube-client.js";
export { readNodeLabels, type NodeLabelCopy, type NodeLabelOptions } from "./node-labels.js";
export { jobNameFor, type KubernetesRunConfig, type OwnerPod } from "./job-manifest.js";
export { ANNOTATIONS, LABELS } from "./job-names.js";
