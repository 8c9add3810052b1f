import { create, fromJsonString } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionContextSchema, type ExecutionContext } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { buildJob, jobOutcome, type KubernetesRunConfig } from "./job-manifest.js";
import { ANNOTATIONS, agentLabelOf, jobNameOf } from "./job-names.js";
import type { KubeObject } from "./kube-client.js";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function context(init: Partial<{ job: string; shard: number; attempt: number; timeoutMs: number; parameter: string; fencingToken: bigint }> = {}): ExecutionContext {
  const job = init.job ?? "billing-rollup";
  const shard = init.shard ?? 0;
  const attempt = init.attempt ?? 1;
  return create(ExecutionContextSchema, {
    executionId: `${job}/1700000000000/${shard}/${attempt}`,
    job,
    shard,
    shardCount: 10_000,
    parameter: init.parameter ?? "",
    fireTimeUnixMs: 1_700_000_000_000n,
    attempt,
    timeoutMs: init.timeoutMs ?? 0,
    fencingToken: init.fencingToken ?? 0n,
  });
}

const config = (template: unknown): KubernetesRunConfig => ({ podTemplateJson: JSON.stringify(template), backoffLimit: 2, ttlSecondsAfterFinished: 60, logContainer: "" });
const frame = { agentId: "node-a", namespace: "work", traceContext: {} };

type PodSpec = { containers: { name: string; env: { name: string; value: string }[] }[]; initContainers?: { env: { name: string; value: string }[] }[]; restartPolicy: string };
const podSpecOf = (job: KubeObject): PodSpec => (job.spec!.template as { spec: PodSpec }).spec;

describe("jobNameOf", () => {
  it("gives the same execution the same name, and another attempt another", () => {
    expect(jobNameOf("rollup/1700000000000/3/1", "rollup", "3")).toBe(jobNameOf("rollup/1700000000000/3/1", "rollup", "3"));
    expect(jobNameOf("rollup/1700000000000/3/1", "rollup", "3")).not.toBe(jobNameOf("rollup/1700000000000/3/2", "rollup", "3"));
  });

  it("stays a DNS-1123 label of at most 63 characters for the longest job name and shard, keeping the hash whole", () => {
    const job = `a${"-b".repeat(31)}`;
    const name = jobNameOf(`${job}/1700000000000/9999/100`, job, "9999");
    expect(name.length).toBeLessThanOrEqual(63);
    expect(name).toMatch(DNS_LABEL);
    expect(name).toMatch(/-9999-[a-z2-7]{10}$/);
    expect(jobNameOf(`${job}/1700000000000/9999/101`, job, "9999")).not.toBe(name);
  });
});

describe("agentLabelOf", () => {
  it("keeps an id that is a valid label value", () => {
    expect(agentLabelOf("ip-10-0-1-23.eu-west-1.compute.internal")).toBe("ip-10-0-1-23.eu-west-1.compute.internal");
  });

  it("shortens a longer id with a hash, still a valid label value", () => {
    const label = agentLabelOf(`node-${"x".repeat(100)}`);
    expect(label.length).toBeLessThanOrEqual(63);
    expect(label).toMatch(/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/);
    expect(agentLabelOf(`node-${"x".repeat(101)}`)).not.toBe(label);
  });
});

describe("buildJob", () => {
  it("puts the execution's variables last in every container, init containers too, replacing the template's of the same name", () => {
    const job = buildJob(
      context({ parameter: "a $b $$c $(HOME)" }),
      config({
        spec: {
          initContainers: [{ name: "fetch", image: "x" }],
          containers: [{ name: "main", image: "x", env: [{ name: "SHARDLINE_JOB", value: "forged" }, { name: "KEEP", value: "1" }] }],
        },
      }),
      frame,
    );
    const spec = podSpecOf(job);
    const env = spec.containers[0]!.env;
    expect(env.filter((v) => v.name === "SHARDLINE_JOB")).toEqual([{ name: "SHARDLINE_JOB", value: "billing-rollup" }]);
    expect(env[0]).toEqual({ name: "KEEP", value: "1" });
    // Each $ doubled: Kubernetes turns $$ back into $, and leaves no $(VAR) to expand.
    expect(env.find((v) => v.name === "SHARDLINE_PARAMETER")?.value).toBe("a $$b $$$$c $$(HOME)");
    expect(spec.initContainers![0]!.env.map((v) => v.name)).toContain("SHARDLINE_EXECUTION_ID");
    expect(spec.restartPolicy).toBe("Never");
  });

  it("gives every container the execution's fencing token as SHARDLINE_FENCING_TOKEN, in full, over the template's", () => {
    // 2^63 - 1: far past 2^53, where a JSON number would lose digits.
    const fencingToken = ((2n ** 31n - 1n) << 32n) + 4_294_967_295n;
    const job = buildJob(
      context({ fencingToken }),
      config({
        spec: {
          initContainers: [{ name: "migrate", image: "x" }],
          containers: [{ name: "main", image: "x", env: [{ name: "SHARDLINE_FENCING_TOKEN", value: "1" }] }, { name: "sidecar", image: "y" }],
        },
      }),
      frame,
    );
    const spec = podSpecOf(job);
    for (const container of [...spec.containers, ...spec.initContainers!]) {
      expect(container.env.filter((v) => v.name === "SHARDLINE_FENCING_TOKEN")).toEqual([{ name: "SHARDLINE_FENCING_TOKEN", value: "9223372036854775807" }]);
    }
    // The annotation a restarted agent takes the run back from keeps it too.
    const annotations = job.metadata.annotations as Record<string, string>;
    expect(fromJsonString(ExecutionContextSchema, annotations[ANNOTATIONS.executionContext]!).fencingToken).toBe(fencingToken);
  });

  it("sets activeDeadlineSeconds only for an execution with a timeout, a minute past it", () => {
    const template = { spec: { containers: [{ name: "main", image: "x" }] } };
    expect(buildJob(context(), config(template), frame).spec).not.toHaveProperty("activeDeadlineSeconds");
    expect(buildJob(context({ timeoutMs: 1500 }), config(template), frame).spec).toMatchObject({ activeDeadlineSeconds: 62, backoffLimit: 2, ttlSecondsAfterFinished: 60 });
  });

  it("makes the agent's pod the owner only within its own namespace", () => {
    const template = { spec: { containers: [{ name: "main", image: "x" }] } };
    const owner = { name: "agent-0", uid: "u1", namespace: "work" };
    expect(buildJob(context(), config(template), { ...frame, owner }).metadata).toHaveProperty("ownerReferences");
    expect(buildJob(context(), config(template), { ...frame, owner: { ...owner, namespace: "shardline" } }).metadata).not.toHaveProperty("ownerReferences");
  });

  it("refuses a template without containers", () => {
    expect(() => buildJob(context(), config({ spec: {} }), frame)).toThrow("the pod template has no spec with containers");
    expect(() => buildJob(context(), { ...config({}), podTemplateJson: "{" }, frame)).toThrow("the pod template is not JSON");
  });
});

describe("jobOutcome", () => {
  const job = (conditions: { type: string; status: string; reason?: string; message?: string }[]): KubeObject => ({ metadata: { name: "j" }, status: { conditions } });

  it("waits for Complete or Failed: SuccessCriteriaMet and FailureTarget come while pods still terminate", () => {
    expect(jobOutcome(job([]))).toBeUndefined();
    expect(jobOutcome(job([{ type: "SuccessCriteriaMet", status: "True" }]))).toBeUndefined();
    expect(jobOutcome(job([{ type: "FailureTarget", status: "True", reason: "BackoffLimitExceeded" }]))).toBeUndefined();
    expect(jobOutcome(job([{ type: "Complete", status: "True" }]))).toEqual({ state: "succeeded" });
    expect(jobOutcome(job([{ type: "Failed", status: "True", reason: "DeadlineExceeded", message: "too long" }]))).toEqual({ state: "failed", reason: "DeadlineExceeded", message: "too long" });
    expect(jobOutcome(job([{ type: "Complete", status: "False" }]))).toBeUndefined();
  });
});
