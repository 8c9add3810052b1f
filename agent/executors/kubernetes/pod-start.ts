import type { KubeObject } from "./kube-client.js";

/**
 * Waiting reasons that never clear by themselves: the image reference cannot be parsed, or the
 * pull policy forbids pulling an image the node does not have.
 */
const HOPELESS = new Set(["InvalidImageName", "ErrImageNeverPull"]);

/** Where a Job's pods are on the way to running a container. */
export type PodStart =
  /** A container of some pod runs or ran: the Job is under way. */
  | { kind: "started" }
  /** No container can ever start: fail now. */
  | { kind: "hopeless"; why: string }
  /** Nothing runs yet; `why` is the latest reason seen (ImagePullBackOff, Unschedulable, ...), or "". */
  | { kind: "waiting"; why: string };

interface ContainerStatus {
  name?: string;
  state?: { waiting?: { reason?: string; message?: string }; running?: unknown; terminated?: unknown };
}

interface PodStatus {
  phase?: string;
  conditions?: { type?: string; status?: string; reason?: string; message?: string }[];
  initContainerStatuses?: ContainerStatus[];
  containerStatuses?: ContainerStatus[];
}

/**
 * Reads a Job's pods: has one started a container, can none ever, or are they still waiting
 * and why. Kubernetes itself never fails a pod stuck pulling its image or unschedulable; the
 * executor uses this to fail such an execution (see KubernetesRunConfig.startTimeoutSeconds)
 * with the reason in its error instead of only after the execution's timeout.
 */
export function podStart(pods: readonly KubeObject[]): PodStart {
  let why = "";
  const newestFirst = [...pods].sort((a, b) => ((a.metadata.creationTimestamp ?? "") < (b.metadata.creationTimestamp ?? "") ? 1 : -1));
  for (const pod of newestFirst) {
    const status = (pod.status ?? {}) as PodStatus;
    const containers = [...(status.initContainerStatuses ?? []), ...(status.containerStatuses ?? [])];
    if (status.phase === "Running" || status.phase === "Succeeded" || status.phase === "Failed") return { kind: "started" };
    if (containers.some((c) => c.state?.running !== undefined || c.state?.terminated !== undefined)) return { kind: "started" };
    for (const container of containers) {
      const waiting = container.state?.waiting;
      if (waiting?.reason === undefined || waiting.reason === "ContainerCreating" || waiting.reason === "PodInitializing") continue;
      const text = `${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""} (pod ${pod.metadata.name}, container ${container.name ?? "?"})`;
      if (HOPELESS.has(waiting.reason)) return { kind: "hopeless", why: text };
      why ||= text;
    }
    const unscheduled = status.conditions?.find((c) => c.type === "PodScheduled" && c.status === "False");
    if (unscheduled !== undefined) why ||= `${unscheduled.reason ?? "Unschedulable"}${unscheduled.message ? `: ${unscheduled.message}` : ""} (pod ${pod.metadata.name})`;
  }
  return { kind: "waiting", why };
}
