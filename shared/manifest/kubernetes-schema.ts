import { z } from "zod";
import { DEFAULT_START_TIMEOUT_SECONDS, KUBERNETES_RESTART_POLICIES } from "./job-spec.js";
import { annotationMap, clean, dnsLabel, integer, labelMap, mapping, oneOf, text } from "./manifest-fields.js";
import { refuse, refuseValue } from "./schema-issues.js";

/**
 * spec.kubernetes: each execution becomes a Kubernetes Job made from a pod template. Shardline
 * checks the template where it depends on it (what the agent sets stays the agent's, the log
 * container exists, a Job's pods may not restart Always); the rest of the pod spec is passed
 * through untouched, for the API server to check against Kubernetes' own schema.
 */

/** The label prefix the agent writes on every Job and pod it makes; a template may not set it. */
const RESERVED_LABEL_PREFIX = "shardline.dev/";
/**
 * The largest pod template, as JSON: it travels in every execution's context, so a job with many
 * shards multiplies it. Real templates are a few KiB.
 */
const MAX_POD_TEMPLATE_BYTES = 32 * 1024;
const IMAGE_ALLOWED = "a container image reference without spaces, e.g. busybox:1.36 or registry.example.com/team/rollup@sha256:...";

/** A core/v1 Container: Shardline needs its name (for logs) and image; the rest is Kubernetes'. */
const container = z.looseObject(
  {
    name: dnsLabel(),
    image: z.string({ error: IMAGE_ALLOWED }).regex(/^\S+$/, { error: IMAGE_ALLOWED }),
  },
  { error: "a Kubernetes Container: a mapping with at least name and image" },
);

const CONTAINERS_ALLOWED = "a list of at least one container, each with a name and an image";

const podSpec = z
  .looseObject(
    {
      containers: z
        .array(container, { error: CONTAINERS_ALLOWED })
        .min(1, { error: CONTAINERS_ALLOWED })
        .describe("The pod's containers, each with a name unique in the pod and an image."),
      initContainers: z.array(container, { error: "a list of containers, each with a name and an image" }).nullish(),
      // Kubernetes refuses Always for a Job's pods; Never is the default so a failed pod stays to be read.
      restartPolicy: oneOf(KUBERNETES_RESTART_POLICIES)
        .nullish()
        .transform((policy) => policy ?? "Never")
        .describe("Never (default) or OnFailure; Kubernetes refuses Always for a Job."),
    },
    { error: "a Kubernetes PodSpec: a mapping with at least containers" },
  )
  .superRefine(
    (spec, ctx) => {
      // Kubernetes refuses a pod whose containers share a name, init containers included.
      const names = new Set<string>();
      for (const list of ["containers", "initContainers"] as const) {
        for (const [index, { name }] of (spec[list] ?? []).entries()) {
          if (names.has(name)) refuse(ctx, [list, index, "name"], "a container name used once in the pod, init containers included");
          names.add(name);
        }
      }
    },
    { when: clean },
  );

const podMetadata = mapping("spec.kubernetes.template.metadata", {
  labels: labelMap()
    .superRefine(
      (labels, ctx) => {
        for (const key of Object.keys(labels)) {
          if (key.startsWith(RESERVED_LABEL_PREFIX)) {
            refuseValue(ctx, [], key, `label keys outside ${RESERVED_LABEL_PREFIX}, which the agent sets on every pod it makes`);
          }
        }
      },
      { when: clean },
    )
    .default({})
    .describe("Labels every pod of the job gets, beside the shardline.dev/* labels the agent adds."),
  annotations: annotationMap().default({}).describe("Annotations every pod of the job gets."),
});

const podTemplate = mapping("spec.kubernetes.template", {
  metadata: podMetadata.prefault({}).describe("Labels and annotations for the pods; Kubernetes names them."),
  spec: podSpec.describe("A core/v1 PodSpec with at least one container; restartPolicy Never (default) or OnFailure."),
}).superRefine(
  (template, ctx) => {
    const bytes = Buffer.byteLength(JSON.stringify(template));
    if (bytes > MAX_POD_TEMPLATE_BYTES) {
      refuseValue(
        ctx,
        [],
        `${bytes} bytes of JSON`,
        `a pod template of at most ${MAX_POD_TEMPLATE_BYTES} bytes as JSON, a fixed limit (no flag raises it): mount large configuration from a ConfigMap`,
      );
    }
  },
  { when: clean },
);

/** spec.kubernetes, with its defaults and the log container filled in. */
export const kubernetesSchema = mapping("spec.kubernetes", {
  template: podTemplate.describe("A core/v1 PodTemplateSpec: the pods of the Job each execution creates."),
  backoffLimit: integer(0, 100)
    .default(0)
    .describe("The Job's spec.backoffLimit: failed pods Kubernetes replaces within one execution (spec.retries retries the execution)."),
  ttlSecondsAfterFinished: integer(0, 2_592_000).default(3600).describe("How long a finished Job stays for inspection."),
  logContainer: text().optional().describe("The container whose log tail is the execution's result; default the first container."),
  startTimeoutSeconds: integer(0, 86_400)
    .default(DEFAULT_START_TIMEOUT_SECONDS)
    .describe("How long a pod may take to start a container (scheduling, image pull) before the execution fails; 0 is no limit."),
})
  .superRefine(
    ({ template, logContainer }, ctx) => {
      const names = template.spec.containers.map((item) => item.name);
      if (logContainer !== undefined && !names.includes(logContainer)) {
        refuse(ctx, ["logContainer"], `the name of one of the template's containers: ${names.join(", ")}`);
      }
    },
    { when: clean },
  )
  .transform((kubernetes) => ({ ...kubernetes, logContainer: kubernetes.logContainer ?? kubernetes.template.spec.containers[0]!.name }))
  .describe("Run each execution as a Kubernetes Job in the agent's namespace (only agents started with --kubernetes take the job).");
