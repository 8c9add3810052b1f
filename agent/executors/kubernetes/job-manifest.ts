import { toJsonString } from "@bufbuild/protobuf";
import { ExecutionContextSchema, type ExecutionContext } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { executionEnvironment } from "../execution-run.js";
import { ANNOTATIONS, LABELS, MANAGED_BY, agentLabelOf, jobNameOf } from "./job-names.js";
import type { KubeObject } from "./kube-client.js";

/**
 * How one execution runs as a Kubernetes Job: the spec.kubernetes of its job, as the execution
 * context carries it (proto KubernetesExecutor).
 */
export interface KubernetesRunConfig {
  /** The Job's pod template, a Kubernetes core/v1 PodTemplateSpec, as JSON. */
  podTemplateJson: string;
  /** The Job's spec.backoffLimit. */
  backoffLimit: number;
  /** The Job's spec.ttlSecondsAfterFinished. */
  ttlSecondsAfterFinished: number;
  /** The container whose log tail is reported; "" for the first. */
  logContainer: string;
  /** How long the Job's pod may take to start a container before the execution fails; 0 (or absent) for no limit. */
  startTimeoutSeconds?: number;
}

/** The pod that owns the Jobs an agent creates, so that they go when it goes. */
export interface OwnerPod {
  name: string;
  uid: string;
  namespace: string;
}

/** What a Job needs beside the execution: who makes it, where, and under which trace. */
export interface JobFrame {
  agentId: string;
  namespace: string;
  traceContext: Readonly<Record<string, string>>;
  owner?: OwnerPod;
}

/**
 * Added to the execution's timeout to make the Job's activeDeadlineSeconds: the agent deletes a
 * timed-out Job itself; the deadline only stops one whose agent is gone, and must never win the
 * race against the agent's own timer.
 */
export const DEADLINE_MARGIN_SECONDS = 60;

type PodTemplate = { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: Record<string, unknown> };
type Container = Record<string, unknown> & { name?: string; env?: { name: string }[] };

/** The shard as the Job's name and labels show it: the number, or "complete" for a completion hook run. */
export function shardText(context: ExecutionContext): string {
  return context.fireOutcome === undefined ? String(context.shard) : "complete";
}

/** The Job's name for an execution: see jobNameOf. */
export function jobNameFor(context: ExecutionContext): string {
  return jobNameOf(context.executionId, context.job, shardText(context));
}

/** The labels of the Job and its pods (the pods add shardline.dev/execution). */
export function jobLabels(context: ExecutionContext, agentId: string): Record<string, string> {
  return {
    [LABELS.managedBy]: MANAGED_BY,
    [LABELS.job]: context.job,
    [LABELS.shard]: shardText(context),
    [LABELS.fireTime]: String(context.fireTimeUnixMs),
    [LABELS.attempt]: String(context.attempt),
    [LABELS.revision]: String(context.revision),
    [LABELS.agent]: agentLabelOf(agentId),
  };
}

/** The label selector of the Jobs an agent created and has not reported yet. */
export function unreportedSelector(agentId: string): string {
  return `${LABELS.managedBy}=${MANAGED_BY},${LABELS.agent}=${agentLabelOf(agentId)},!${LABELS.reported}`;
}

/**
 * The environment every container of the Job gets: the same SHARDLINE_* variables a script
 * gets (SHARDLINE_FENCING_TOKEN and SHARDLINE_REVISION among them), and TRACEPARENT/TRACESTATE so the pod's spans join the execution's trace. They come last
 * and replace a template's variables of the same name: a job cannot pass itself off as another
 * execution.
 */
export function jobEnvironment(context: ExecutionContext, frame: JobFrame): { name: string; value: string }[] {
  const env = executionEnvironment(context, frame.agentId, frame.traceContext);
  // Kubernetes expands $(NAME) in env values and reads $$ as $: doubling every $ keeps a
  // parameter such as "cost=$(total)" as it was written.
  return Object.entries(env).map(([name, value]) => ({ name, value: value.replaceAll("$", () => "$$") }));
}

/**
 * The batch/v1 Job that runs an execution. Throws (with the reason) when the pod template is not
 * a JSON object with a pod spec.
 */
export function buildJob(context: ExecutionContext, config: KubernetesRunConfig, frame: JobFrame): KubeObject & { apiVersion: string; kind: string } {
  const template = parseTemplate(config.podTemplateJson);
  const name = jobNameFor(context);
  const labels = jobLabels(context, frame.agentId);
  const env = jobEnvironment(context, frame);
  const withEnv = (container: Container): Container => {
    const ours = new Set(env.map((variable) => variable.name));
    return { ...container, env: [...(container.env ?? []).filter((variable) => !ours.has(variable.name)), ...env] };
  };
  const spec = template.spec!;
  const podSpec: Record<string, unknown> = {
    ...spec,
    restartPolicy: spec.restartPolicy ?? "Never",
    containers: (spec.containers as Container[]).map(withEnv),
    ...(Array.isArray(spec.initContainers) ? { initContainers: (spec.initContainers as Container[]).map(withEnv) } : {}),
  };
  const timeoutSeconds = Math.ceil(context.timeoutMs / 1000);
  const owner = frame.owner !== undefined && frame.owner.namespace === frame.namespace ? frame.owner : undefined;
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name,
      namespace: frame.namespace,
      labels,
      annotations: {
        [ANNOTATIONS.executionId]: context.executionId,
        [ANNOTATIONS.agentId]: frame.agentId,
        [ANNOTATIONS.executionContext]: contextAnnotation(context),
        [ANNOTATIONS.logContainer]: config.logContainer || String((spec.containers as Container[])[0]?.name ?? ""),
      },
      // Owned by the agent's pod (never across namespaces, which Kubernetes would read as an
      // owner that is gone): when the pod is deleted for good, the garbage collector deletes the
      // Jobs it did not get to stop. blockOwnerDeletion false needs no rights on the pod.
      ...(owner === undefined
        ? {}
        : { ownerReferences: [{ apiVersion: "v1", kind: "Pod", name: owner.name, uid: owner.uid, controller: false, blockOwnerDeletion: false }] }),
    } as KubeObject["metadata"],
    spec: {
      backoffLimit: config.backoffLimit,
      ttlSecondsAfterFinished: config.ttlSecondsAfterFinished,
      ...(timeoutSeconds > 0 ? { activeDeadlineSeconds: timeoutSeconds + DEADLINE_MARGIN_SECONDS } : {}),
      template: {
        metadata: {
          labels: { ...template.metadata?.labels, ...labels, [LABELS.execution]: name },
          ...(template.metadata?.annotations === undefined ? {} : { annotations: template.metadata.annotations }),
        },
        spec: podSpec,
      },
    },
  };
}

/** The context as the annotation keeps it: protobuf JSON, without the pod template (the Job has it). */
export function contextAnnotation(context: ExecutionContext): string {
  const { kubernetes: _template, ...rest } = context as ExecutionContext & { kubernetes?: unknown };
  return toJsonString(ExecutionContextSchema, rest as ExecutionContext);
}

function parseTemplate(json: string): PodTemplate {
  let template: unknown;
  try {
    template = JSON.parse(json);
  } catch (error) {
    throw new Error(`the pod template is not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  const spec = (template as PodTemplate | null)?.spec;
  if (typeof template !== "object" || template === null || typeof spec !== "object" || spec === null || !Array.isArray(spec.containers) || spec.containers.length === 0) {
    throw new Error("the pod template has no spec with containers");
  }
  return template as PodTemplate;
}

/** How a Job ended, once it did. */
export type JobOutcome = { state: "succeeded" } | { state: "failed"; reason: string; message: string };

/**
 * The Job's outcome from its conditions, or undefined while it runs. Complete and Failed are
 * final; SuccessCriteriaMet and FailureTarget (Kubernetes 1.31+) come before them while pods
 * still terminate, so they are not taken as the end.
 */
export function jobOutcome(job: KubeObject): JobOutcome | undefined {
  const conditions = (job.status?.conditions ?? []) as { type?: string; status?: string; reason?: string; message?: string }[];
  for (const condition of conditions) {
    if (condition.status !== "True") continue;
    if (condition.type === "Complete") return { state: "succeeded" };
    if (condition.type === "Failed") return { state: "failed", reason: condition.reason ?? "Failed", message: condition.message ?? "" };
  }
  return undefined;
}

/** What a pod's container says about how it ended or why it waits, e.g. "container main exited with code 3 (Error)". */
export function containerSummary(pod: KubeObject | undefined, container: string): string | undefined {
  const statuses = (pod?.status?.containerStatuses ?? []) as {
    name?: string;
    state?: { terminated?: { exitCode?: number; reason?: string; message?: string }; waiting?: { reason?: string; message?: string } };
  }[];
  const status = statuses.find((candidate) => candidate.name === container);
  const terminated = status?.state?.terminated;
  if (terminated !== undefined) {
    const reason = terminated.reason && terminated.reason !== "Error" && terminated.reason !== "Completed" ? `${terminated.reason}, ` : "";
    return `container ${container} exited with code ${terminated.exitCode ?? "unknown"}${reason ? ` (${reason.slice(0, -2)})` : ""}`;
  }
  const waiting = status?.state?.waiting;
  if (waiting?.reason) return `container ${container} was waiting: ${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""}`;
  return undefined;
}
