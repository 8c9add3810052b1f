import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { cp, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, posix, relative } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import * as k8s from "@kubernetes/client-node";
import type { Command, Option } from "commander";
import { pino } from "pino";
import { parse, parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectKubernetes } from "../agent/executors/kubernetes/kube-config.js";
import { jobNameFor } from "../agent/executors/kubernetes/job-manifest.js";
import { KubernetesExecutor, STOP_WAIT_MS } from "../agent/executors/kubernetes/kubernetes-executor.js";
import { readNodeLabels } from "../agent/executors/kubernetes/node-labels.js";
import { buildProgram } from "../cli/commands/program.js";
import { ExecutionContextSchema } from "../shared/gen/shardline/v1/agent_service_pb.js";
import { ExecutionState } from "../shared/gen/shardline/v1/types_pb.js";
import { FakeKubeApiServer } from "./harness/fake-kube-api-server.js";
import { CRD_PATH } from "../shared/manifest/crd.js";
import { controllerRbacRules, rbacGrants, renderKustomization, type Manifest } from "./harness/kustomize.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const KUSTOMIZE = join(ROOT, "deploy", "kustomize");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
/** How long a drained agent waits for the controller to close its stream (HALF_CLOSE_WAIT_MS in agent/core/drain.ts). */
const HALF_CLOSE_SECONDS = 2;

type Obj = Record<string, unknown>;
type Container = {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; configMapKeyRef?: { name: string; key: string } } }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
};
type PodSpec = { containers: Container[]; terminationGracePeriodSeconds?: number; serviceAccountName?: string; securityContext?: { runAsUser?: number; runAsNonRoot?: boolean }; volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[] };
type Workload = Manifest & { spec: { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } } };

/** Every directory with a kustomization: the bases and the overlays. */
const KUSTOMIZATIONS = findKustomizations(KUSTOMIZE);
const OVERLAYS = KUSTOMIZATIONS.filter((dir) => dir.startsWith("overlays/"));
const rendered = new Map<string, Manifest[]>();

beforeAll(async () => {
  for (const dir of KUSTOMIZATIONS) rendered.set(dir, await renderKustomization(join(KUSTOMIZE, dir)));
}, 120_000);

describe("deploy/kustomize", () => {
  it("has the bases and overlays the deployment needs", () => {
    expect(KUSTOMIZATIONS).toEqual(
      expect.arrayContaining([
        "namespace",
        "controller/base",
        "controller/sqlite",
        "controller/etcd",
        "agent/base",
        "agent/daemonset",
        "agent/deployment",
        "overlays/single-cluster",
        "overlays/ha",
        "overlays/multi-cluster/east",
        "overlays/multi-cluster/west",
        "crd",
        "components/prometheus-operator",
        "components/etcd",
        "components/controller-rbac-namespaced",
        "components/controller-rbac-cluster",
      ]),
    );
  });

  it.each(KUSTOMIZATIONS)("%s renders objects that are valid against the Kubernetes schemas, with no unknown field", async (dir) => {
    const objects = rendered.get(dir)!;
    expect(objects.length).toBeGreaterThan(0);
    for (const object of objects) {
      const what = `${dir}: ${object.kind} ${object.metadata.name}`;
      const Model = await modelOf(object);
      expect(() => new Model(object).validate(), what).not.toThrow();
      // kubernetes-models checks types and required fields but lets unknown fields through; the
      // client library's model knows every field name of the built-in kinds.
      if (object.apiVersion !== "monitoring.coreos.com/v1") expect(unknownFields(object, clientModelName(object)), what).toEqual([]);
    }
  });

  it.each(OVERLAYS)("%s puts everything in one namespace, which it creates, with unique names", (dir) => {
    const objects = rendered.get(dir)!;
    const namespaces = objects.filter((o) => o.kind === "Namespace").map((o) => o.metadata.name);
    expect(namespaces).toEqual(["shardline"]);
    const ids = new Set<string>();
    const clusterScoped = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"]);
    for (const object of objects.filter((o) => o.kind !== "Namespace")) {
      expect(object.metadata.namespace, `${object.kind} ${object.metadata.name}`).toBe(clusterScoped.has(object.kind) ? undefined : "shardline");
      const id = `${object.kind}/${object.metadata.name}`;
      expect(ids.has(id), id).toBe(false);
      ids.add(id);
    }
  });

  it.each(OVERLAYS)("%s selects what exists: Services, budgets, policies, monitors and autoscalers find their pods and ports", (dir) => {
    const objects = rendered.get(dir)!;
    const workloads = objects.filter(isWorkload);
    const podsMatching = (selector: Record<string, string>) => workloads.filter((w) => matches(selector, w.spec.template.metadata.labels));
    for (const workload of workloads) expect(matches(workload.spec.selector.matchLabels, workload.spec.template.metadata.labels), workload.metadata.name).toBe(true);
    for (const service of objects.filter((o) => o.kind === "Service")) {
      const spec = service.spec as { selector: Record<string, string>; ports: { targetPort: string | number }[] };
      const pods = podsMatching(spec.selector);
      expect(pods.length, `Service ${service.metadata.name}`).toBeGreaterThan(0);
      for (const port of spec.ports) for (const pod of pods) expect(containerPortNames(pod), `Service ${service.metadata.name}`).toContain(port.targetPort);
    }
    for (const object of objects.filter((o) => o.kind === "PodDisruptionBudget" || o.kind === "NetworkPolicy")) {
      const spec = object.spec as { selector?: { matchLabels: Record<string, string> }; podSelector?: { matchLabels: Record<string, string> }; ingress?: { ports?: { port: string | number }[] }[] };
      const pods = podsMatching((spec.selector ?? spec.podSelector)!.matchLabels);
      expect(pods.length, `${object.kind} ${object.metadata.name}`).toBeGreaterThan(0);
      for (const rule of spec.ingress ?? []) for (const port of rule.ports ?? []) for (const pod of pods) expect(containerPortNames(pod)).toContain(port.port);
    }
    for (const monitor of objects.filter((o) => o.kind === "ServiceMonitor")) {
      const spec = monitor.spec as { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] };
      const services = objects.filter((o) => o.kind === "Service" && matches(spec.selector.matchLabels, o.metadata.labels ?? {}));
      expect(services.length, `ServiceMonitor ${monitor.metadata.name}`).toBeGreaterThan(0);
      for (const service of services) {
        const ports = (service.spec as { ports: { name: string }[] }).ports.map((p) => p.name);
        for (const endpoint of spec.endpoints) expect(ports).toContain(endpoint.port);
      }
      expect(spec.endpoints.map((e) => e.path)).toEqual(["/metrics"]);
    }
    for (const hpa of objects.filter((o) => o.kind === "HorizontalPodAutoscaler")) {
      const target = (hpa.spec as { scaleTargetRef: { kind: string; name: string } }).scaleTargetRef;
      expect(workloads.some((w) => w.kind === target.kind && w.metadata.name === target.name), `HPA ${hpa.metadata.name}`).toBe(true);
      const deployment = workloads.find((w) => w.metadata.name === target.name)!;
      expect(deployment.spec, "a Deployment under an HPA leaves replicas to it").not.toHaveProperty("replicas");
    }
    for (const workload of workloads) {
      for (const volume of workload.spec.template.spec.volumes ?? []) {
        if (volume.persistentVolumeClaim) expect(objects.some((o) => o.kind === "PersistentVolumeClaim" && o.metadata.name === volume.persistentVolumeClaim!.claimName)).toBe(true);
      }
      const account = workload.spec.template.spec.serviceAccountName;
      expect(objects.some((o) => o.kind === "ServiceAccount" && o.metadata.name === account), `${workload.metadata.name}'s service account`).toBe(true);
    }
  });

  it.each(OVERLAYS)("%s runs the shardline image of this version, as a non-root user, with flags and values the CLI accepts", (dir) => {
    const objects = rendered.get(dir)!;
    const program = buildProgram({ stdout: () => {}, stderr: () => {}, readStdin: async () => "", env: {}, onSignal: () => () => {} });
    for (const workload of objects.filter(isShardlineWorkload)) {
      const pod = workload.spec.template.spec;
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: imageUser() });
      for (const container of pod.containers) {
        const where = `${workload.kind} ${workload.metadata.name}, container ${container.name}`;
        expect(container.image, where).toBe(`shardline:${VERSION}`);
        const [subcommand, ...flags] = container.args ?? [];
        const command = program.commands.find((c) => c.name() === subcommand);
        expect(command, `${where}: subcommand ${subcommand}`).toBeDefined();
        const env = environmentOf(container, objects, where);
        for (const flag of flags) {
          const [name, ...rest] = flag.split("=");
          const option = optionOf(command!, name!);
          expect(option, `${where}: ${name} is not a flag of \`shardline ${subcommand}\``).toBeDefined();
          if (rest.length === 0) {
            expect(option!.required || option!.optional, `${where}: ${name} takes no value`).toBe(false);
            continue;
          }
          // Kubernetes expands $(VAR) from the container's env; an undefined one would stay as it is.
          const value = rest.join("=").replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_match, variable: string) => {
            expect(env.has(variable), `${where}: ${flag} uses $(${variable}), which the container's env does not define`).toBe(true);
            return env.get(variable)!;
          });
          expect(() => option!.parseArg?.(value, undefined as never), `${where}: ${name}=${value}`).not.toThrow();
        }
        if (subcommand === "controller" || subcommand === "agent") {
          const address = (flagName: string) => flags.find((f) => f.startsWith(`${flagName}=`))?.split("=")[1];
          // The default is 127.0.0.1: probes and Services could not reach it.
          expect(address("--http"), `${where}: --http`).toBe("0.0.0.0:7071");
          expect(portOf(container, "http")).toBe(7071);
          if (subcommand === "controller") {
            expect(address("--listen")).toBe("0.0.0.0:7070");
            expect(portOf(container, "grpc")).toBe(7070);
          }
          expect(container.readinessProbe?.httpGet).toEqual({ path: "/readyz", port: "http" });
          expect(container.livenessProbe?.httpGet).toEqual({ path: "/healthz", port: "http" });
        }
        if (subcommand === "agent") {
          // Agent ids must be unique over every cluster sharing the controller.
          expect(flags.find((f) => f.startsWith("--id="))).toMatch(/^--id=\$\(SHARDLINE_CLUSTER\)\.\$\((NODE_NAME|POD_NAME)\)$/);
          expect(flags).toContain("--label=cluster=$(SHARDLINE_CLUSTER)");
          expect(env.get("SHARDLINE_CONTROLLER"), `${where}: the controller address`).toMatch(/^[^,]+:\d+/);
        }
      }
    }
  });

  it.each(OVERLAYS)("%s gives each pod the time its shutdown takes: preStop, then the drain", (dir) => {
    for (const workload of rendered.get(dir)!.filter(isShardlineWorkload)) {
      const pod = workload.spec.template.spec;
      const container = pod.containers[0]!;
      const preStop = container.lifecycle?.preStop?.exec?.command ?? [];
      const preStopSeconds = preStop[0] === "sleep" ? Number(preStop[1]) : 0;
      const grace = pod.terminationGracePeriodSeconds ?? 30;
      if (container.args?.[0] === "agent") {
        const drainGrace = Number(container.args.find((a) => a.startsWith("--drain-grace="))?.split("=")[1] ?? 30);
        // Running executions get the drain grace, a stopped Kubernetes Job up to STOP_WAIT_MS to be
        // gone, then the stream closes; SIGKILL must not come first.
        expect(grace, `${workload.kind} ${workload.metadata.name}`).toBeGreaterThanOrEqual(preStopSeconds + drainGrace + STOP_WAIT_MS / 1000 + HALF_CLOSE_SECONDS);
      } else {
        expect(preStopSeconds, "the controller's preStop").toBeGreaterThan(0);
        expect(grace).toBeGreaterThanOrEqual(preStopSeconds + 10);
      }
    }
  });

  it("grants the agent exactly what the Kubernetes executor asks for in its namespace, and get on nodes for its zone", async () => {
    const objects = rendered.get("overlays/single-cluster")!;
    type Binding = Manifest & { roleRef: { kind: string; name: string }; subjects: { kind: string; name: string; namespace: string }[] };
    const grantsOf = (role: Manifest) => {
      const granted = new Set<string>();
      for (const rule of (role as Manifest & { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }).rules) {
        for (const group of rule.apiGroups) for (const resource of rule.resources) for (const verb of rule.verbs) granted.add(`${group}/${resource}:${verb}`);
      }
      return granted;
    };
    const agentAccount = [{ kind: "ServiceAccount", name: "shardline-agent", namespace: "shardline" }];

    const role = objects.find((o) => o.kind === "Role" && o.metadata.name === "shardline-agent")!;
    const binding = objects.find((o) => o.kind === "RoleBinding")! as Binding;
    expect(binding.roleRef.name).toBe("shardline-agent");
    expect(binding.subjects).toEqual(agentAccount);
    expect(grantsOf(role)).toEqual(await verbsTheExecutorUses());

    // The agent's: get on nodes (the controller's own ClusterRole is checked below).
    const clusterRoles = objects.filter((o) => o.kind === "ClusterRole" && o.metadata.name.startsWith("shardline-agent"));
    expect(clusterRoles.map((o) => o.metadata.name)).toEqual(["shardline-agent-nodes"]);
    expect(grantsOf(clusterRoles[0]!)).toEqual(await verbsNodeLabelsUse());
    const clusterBindings = (objects.filter((o) => o.kind === "ClusterRoleBinding") as Binding[]).filter((b) => b.roleRef.name.startsWith("shardline-agent"));
    expect(clusterBindings.map((b) => [b.roleRef.kind, b.roleRef.name, b.subjects])).toEqual([["ClusterRole", "shardline-agent-nodes", agentAccount]]);
    // The controller's pods get a token: they follow ShardedJobs (--jobs-from kubernetes), and a
    // pod without one would not start (no Kubernetes configuration).
    const controllerAccount = objects.find((o) => o.kind === "ServiceAccount" && o.metadata.name === "shardline-controller")!;
    expect(controllerAccount.automountServiceAccountToken).toBe(true);
    for (const dir of ["controller/sqlite", "controller/etcd"]) {
      for (const workload of rendered.get(dir)!.filter(isShardlineWorkload)) {
        const pod = workload.spec.template.spec as { automountServiceAccountToken?: boolean; containers: { args?: string[] }[] };
        expect(pod.containers[0]!.args, `${dir}: ${workload.metadata.name}`).toContain("--jobs-from=kubernetes");
        expect(pod.automountServiceAccountToken, `${dir}: ${workload.metadata.name} mounts no token`).not.toBe(false);
      }
    }
  });

  it("runs the same agent container as a DaemonSet and as a Deployment, and the same controller on SQLite and etcd", () => {
    const agentOf = (dir: string) => rendered.get(dir)!.filter(isWorkload)[0]!.spec.template.spec.containers[0]!;
    const { args: daemonArgs, ...daemon } = agentOf("agent/daemonset");
    const { args: deploymentArgs, ...deployment } = agentOf("agent/deployment");
    expect(deployment).toEqual(daemon);
    // Only the id differs: the node's name for one agent per node, the pod's name otherwise; and
    // a node's replacement pod, which shares its id, waits for the old one to let go of it.
    const idless = (args: string[] | undefined) => (args ?? []).filter((arg) => !arg.startsWith("--id=") && arg !== "--wait-for-id");
    expect(idless(deploymentArgs)).toEqual(idless(daemonArgs));
    expect(daemonArgs).toEqual(expect.arrayContaining(["--id=$(SHARDLINE_CLUSTER).$(NODE_NAME)", "--wait-for-id"]));
    expect(deploymentArgs).toContain("--id=$(SHARDLINE_CLUSTER).$(POD_NAME)");
    expect(deploymentArgs).not.toContain("--wait-for-id");
    const controllerOf = (dir: string) => rendered.get(dir)!.find((o) => o.kind === "Deployment")! as Workload;
    const sqlite = controllerOf("controller/sqlite");
    const etcd = controllerOf("controller/etcd");
    expect(sqlite.spec).toMatchObject({ replicas: 1, strategy: { type: "Recreate" } });
    expect(etcd.spec).toMatchObject({ replicas: 3 });
    const shared = ({ image, ports, readinessProbe, livenessProbe, lifecycle }: Container) => ({ image, ports, readinessProbe, livenessProbe, lifecycle });
    expect(shared(etcd.spec.template.spec.containers[0]!)).toEqual(shared(sqlite.spec.template.spec.containers[0]!));
    expect(sqlite.spec.template.spec.containers[0]!.args).toContain("--store=sqlite:/var/lib/shardline/shardline.db");
    expect(etcd.spec.template.spec.containers[0]!.args).toEqual(expect.arrayContaining(["--store=$(SHARDLINE_STORE)", "--advertise=$(POD_IP):7070"]));
    const budget = rendered.get("controller/etcd")!.find((o) => o.kind === "PodDisruptionBudget")!;
    expect(budget.spec).toMatchObject({ minAvailable: 2 });
  });

  it("runs the controller on SQLite as one replica replaced with Recreate, in every kustomization that has it: a second controller on the file is refused", () => {
    const onSqlite = KUSTOMIZATIONS.flatMap((dir) =>
      rendered
        .get(dir)!
        .filter(isWorkload)
        .filter((w) => w.kind === "Deployment" && w.spec.template.spec.containers.some((c) => (c.args ?? []).some((arg) => arg.startsWith("--store=sqlite:"))))
        .map((w) => ({ dir, spec: w.spec as Workload["spec"] & { replicas?: number; strategy?: { type?: string } } })),
    );
    expect(onSqlite.map((d) => d.dir)).toEqual(expect.arrayContaining(["controller/sqlite", "overlays/single-cluster", "overlays/multi-cluster/east"]));
    for (const { dir, spec } of onSqlite) expect([dir, spec.replicas, spec.strategy?.type]).toEqual([dir, 1, "Recreate"]);
  });

  it("connects the agents of two clusters, labelled apart, to one controller", () => {
    const east = rendered.get("overlays/multi-cluster/east")!;
    const west = rendered.get("overlays/multi-cluster/west")!;
    const settings = (objects: Manifest[]) => (objects.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith("shardline-agent"))!.data ?? {}) as Record<string, string>;
    expect(settings(east).cluster).toBe("east");
    expect(settings(west).cluster).toBe("west");
    expect(west.filter((o) => o.kind === "Deployment" && o.metadata.name === "shardline-controller")).toEqual([]);
    expect(east.filter((o) => o.kind === "Deployment" && o.metadata.name === "shardline-controller")).toHaveLength(1);
    // West's agents dial east's controller from outside, through the Service east exposes for them.
    expect(settings(west).controller).not.toBe(settings(east).controller);
    const external = east.find((o) => o.kind === "Service" && (o.spec as { type?: string }).type === "LoadBalancer")!;
    expect((external.spec as { ports: { port: number }[] }).ports.map((p) => p.port)).toEqual([Number(settings(west).controller!.split(":").at(-1))]);
  });
});

/** The optional parts an overlay may add to its bases (each only adds objects). */
const OPTIONAL_PARTS = ["components/prometheus-operator", "components/controller-rbac-namespaced", "components/controller-rbac-cluster"];

/**
 * Renders a kustomization made the way a user adds optional parts: `overlay` and `parts` as its
 * bases, in the overlay's namespace, from a directory outside the repository (paths relative,
 * as kubectl 1.20 requires).
 */
async function renderWith(overlay: string, parts: string[]): Promise<Manifest[]> {
  const dir = await mkdtemp(join(tmpdir(), "shardline-overlay-"));
  try {
    const bases = [overlay, ...parts].map((base) => `  - ${relative(dir, join(KUSTOMIZE, base))}`).join("\n");
    await writeFile(join(dir, "kustomization.yaml"), `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shardline\nbases:\n${bases}\n`);
    return await renderKustomization(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe("deploy/kustomize: the ShardedJob CRD and the optional parts", () => {
  const committedCrd = parse(readFileSync(join(ROOT, CRD_PATH), "utf8")) as Manifest;

  it.each(["overlays/single-cluster", "overlays/ha", "overlays/multi-cluster/east"])("%s installs the ShardedJob CRD as npm run schema wrote it", (dir) => {
    const crds = rendered.get(dir)!.filter((o) => o.kind === "CustomResourceDefinition");
    expect(crds).toEqual([committedCrd]);
  });

  it("leaves the CRD out of the agents-only cluster, where no controller would follow a ShardedJob", () => {
    expect(rendered.get("overlays/multi-cluster/west")!.filter((o) => o.kind === "CustomResourceDefinition")).toEqual([]);
  });

  it("includes no ServiceMonitor in any base or overlay: the Prometheus Operator is optional", () => {
    const withMonitors = KUSTOMIZATIONS.filter((dir) => dir !== "components/prometheus-operator" && rendered.get(dir)!.some((o) => o.kind === "ServiceMonitor"));
    expect(withMonitors).toEqual([]);
    expect(rendered.get("components/prometheus-operator")!.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(["ServiceMonitor/shardline-agent", "ServiceMonitor/shardline-controller"]);
  });

  it.each(OVERLAYS)("%s takes every optional part added to its bases, and the ServiceMonitors find their Services and ports", async (dir) => {
    const parts = dir.endsWith("west") ? ["components/prometheus-operator"] : OPTIONAL_PARTS.filter((part) => !part.endsWith("cluster"));
    const objects = await renderWith(dir, parts);
    const ids = objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`);
    expect(new Set(ids).size).toBe(ids.length);
    const base = rendered.get(dir)!;
    expect(objects.length).toBe(base.length + parts.reduce((sum, part) => sum + rendered.get(part)!.length, 0));
    for (const monitor of objects.filter((o) => o.kind === "ServiceMonitor")) {
      const spec = monitor.spec as { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] };
      const services = objects.filter((o) => o.kind === "Service" && matches(spec.selector.matchLabels, o.metadata.labels ?? {}));
      if (dir.endsWith("west") && monitor.metadata.name === "shardline-controller") {
        // West runs no controller: its monitor finds nothing, which Prometheus takes as no target.
        expect(services).toEqual([]);
        continue;
      }
      expect(services.length, `${dir}: ServiceMonitor ${monitor.metadata.name}`).toBeGreaterThan(0);
      for (const service of services) for (const endpoint of spec.endpoints) expect((service.spec as { ports: { name: string }[] }).ports.map((p) => p.name)).toContain(endpoint.port);
    }
  });

  it("grants the controller the same rules namespaced and cluster-wide: ShardedJobs, their status and Events, nothing else", async () => {
    const namespaced = await controllerRbacRules("namespaced");
    const cluster = await controllerRbacRules("cluster");
    expect(cluster).toEqual(namespaced);
    expect(rbacGrants(namespaced)).toEqual(
      new Set([
        "shardline.dev/shardedjobs:list",
        "shardline.dev/shardedjobs:watch",
        "shardline.dev/shardedjobs:patch",
        "shardline.dev/shardedjobs/status:patch",
        "events.k8s.io/events:create",
      ]),
    );
    // As a user adds them: beside an overlay, which holds the account they bind.
    const account = [{ kind: "ServiceAccount", name: "shardline-controller", namespace: "shardline" }];
    type Binding = Manifest & { roleRef: { kind: string; name: string }; subjects: unknown[] };
    const bindingIn = async (part: string, kind: string) => (await renderWith("overlays/single-cluster", [part])).find((o) => o.kind === kind && o.metadata.name === "shardline-controller") as Binding;
    const roleBinding = await bindingIn("components/controller-rbac-namespaced", "RoleBinding");
    // The overlays bind the cluster-wide one already.
    const clusterBinding = rendered.get("overlays/single-cluster")!.find((o) => o.kind === "ClusterRoleBinding" && o.metadata.name === "shardline-controller") as Binding;
    expect([roleBinding.metadata.namespace, roleBinding.roleRef, roleBinding.subjects]).toEqual(["shardline", { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "shardline-controller" }, account]);
    expect([clusterBinding.roleRef, clusterBinding.subjects]).toEqual([{ apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "shardline-controller" }, account]);
    // Both bind the account every controller workload runs as.
    for (const dir of ["controller/sqlite", "controller/etcd"]) {
      expect(rendered.get(dir)!.filter(isShardlineWorkload).map((w) => w.spec.template.spec.serviceAccountName)).toEqual(["shardline-controller"]);
    }
  });

  it("runs, in the HA overlay, the three-member etcd the controllers' store names, one member per node, each with its own volume", () => {
    const objects = rendered.get("overlays/ha")!;
    type StatefulSet = Workload & {
      spec: Workload["spec"] & {
        replicas: number;
        serviceName: string;
        podManagementPolicy: string;
        volumeClaimTemplates: { metadata: { name: string }; spec: { accessModes: string[] } }[];
        template: { spec: PodSpec & { affinity?: { podAntiAffinity?: { requiredDuringSchedulingIgnoredDuringExecution?: { topologyKey: string; labelSelector: { matchLabels: Record<string, string> } }[] } } } };
      };
    };
    const etcd = objects.find((o) => o.kind === "StatefulSet") as StatefulSet;
    expect(etcd.metadata.name).toBe("etcd");
    expect(etcd.spec).toMatchObject({ replicas: 3, serviceName: "etcd", podManagementPolicy: "Parallel" });
    const container = etcd.spec.template.spec.containers[0]! as Container & { volumeMounts: { name: string; mountPath: string }[] };
    // A pinned 3.5 patch release, never a moving tag.
    expect(container.image).toMatch(/^[a-z0-9.\-/]+\/etcd:v3\.5\.\d+$/);
    expect(etcd.spec.volumeClaimTemplates.map((t) => [t.metadata.name, t.spec.accessModes])).toEqual([["data", ["ReadWriteOnce"]]]);
    const dataDir = container.args!.find((a) => a.startsWith("--data-dir="))!.split("=")[1]!;
    expect(container.volumeMounts.some((m) => m.name === "data" && dataDir.startsWith(`${m.mountPath}/`))).toBe(true);
    const antiAffinity = etcd.spec.template.spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? [];
    expect(antiAffinity.map((term) => [term.topologyKey, matches(term.labelSelector.matchLabels, etcd.spec.template.metadata.labels)])).toEqual([["kubernetes.io/hostname", true]]);

    const headless = objects.find((o) => o.kind === "Service" && o.metadata.name === etcd.spec.serviceName)!;
    expect(headless.spec).toMatchObject({ clusterIP: "None", publishNotReadyAddresses: true });
    const budget = objects.find((o) => o.kind === "PodDisruptionBudget" && matches((o.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels, etcd.spec.template.metadata.labels))!;
    expect(budget.spec).toMatchObject({ minAvailable: 2 });

    // The flags as each member's pod sees them, $(POD_NAME) and $(POD_NAMESPACE) expanded.
    const flagsOf = (member: string) =>
      new Map(container.args!.map((arg) => arg.replaceAll("$(POD_NAME)", member).replaceAll("$(POD_NAMESPACE)", "shardline").split(/=(.*)/s).slice(0, 2) as [string, string]));
    const members = [0, 1, 2].map((n) => `etcd-${n}`);
    const peers = members.map((member) => `${member}=${flagsOf(member).get("--initial-advertise-peer-urls")}`);
    for (const member of members) {
      expect(flagsOf(member).get("--name")).toBe(member);
      expect(flagsOf(member).get("--initial-cluster")).toBe(peers.join(","));
      expect(flagsOf(member).get("--initial-cluster-state")).toBe("new");
    }
    expect(peers[0]).toBe("etcd-0=http://etcd-0.etcd.shardline.svc:2380");
    const store = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith("shardline-controller"))!.data as { store: string };
    const clientUrls = members.map((member) => flagsOf(member).get("--advertise-client-urls")!.replace(/^http:\/\//, ""));
    expect(store.store).toBe(`etcd://${clientUrls.join(",")}`);
  });
});

describe("deploy/Dockerfile", () => {
  const dockerfile = readFileSync(join(ROOT, "deploy", "Dockerfile"), "utf8");
  const stages = parseStages(dockerfile);
  const ignore = readFileSync(join(ROOT, "deploy", "Dockerfile.dockerignore"), "utf8");

  it("builds in one stage and runs Node 24 in another, as an unprivileged user", () => {
    expect(stages.map((s) => s.name)).toEqual(["build", "runtime"]);
    expect(dockerfile).toMatch(/^ARG NODE_MAJOR=24$/m);
    // The same Node major and Debian release in both: the native addon built in one loads in the other.
    expect(stages[0]!.from).toBe("node:${NODE_MAJOR}-bookworm-slim");
    expect(stages[1]!.from).toBe("node:${NODE_MAJOR}-bookworm-slim");
    const user = stages[1]!.instructions.filter((i) => i.op === "USER").at(-1)?.args;
    expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    expect(stages[1]!.instructions.find((i) => i.op === "ENTRYPOINT")?.args).toContain("/app/dist/cli/main.js");
    expect(stages[0]!.instructions.map((i) => i.args).join("\n")).toMatch(/npm ci[\s\S]*npm run build[\s\S]*npm prune --omit=dev/);
  });

  it("sends the build files that exist, and no tests", () => {
    for (const source of buildSources(stages[0]!)) {
      expect(existsSync(join(ROOT, source)), `COPY ${source}`).toBe(true);
      expect(ignored(ignore, source), `COPY ${source} is excluded by Dockerfile.dockerignore`).toBe(false);
    }
    expect(ignored(ignore, "agent/executors/kubernetes/kubernetes-executor.test.ts")).toBe(true);
    expect(ignored(ignore, "test/deploy-manifests.test.ts")).toBe(true);
    expect(ignored(ignore, "node_modules/yaml/package.json")).toBe(true);
  });

  describe("built from what the context sends, and laid out as the runtime stage copies it", () => {
    let root: string;
    let built: string;
    let app: string;
    const processes: ChildProcess[] = [];

    beforeAll(async () => {
      root = await mkdtemp(join(tmpdir(), "shardline-image-"));
      built = await buildFromContext(stages[0]!, ignore, join(root, "build"));
      app = await imageLayout(stages[1]!, built, join(root, "app"));
    }, 180_000);

    afterAll(async () => {
      for (const child of processes) if (child.exitCode === null) child.kill("SIGKILL");
      await rm(root, { recursive: true, force: true });
    });

    it("copies every part of the build's output the CLI loads", () => {
      const copied = stages[1]!.instructions.filter((i) => i.op === "COPY" && i.args.startsWith("--from=build")).map((i) => i.args.split(/\s+/)[1]!);
      expect(copied).toEqual(expect.arrayContaining(["/app/package.json", "/app/node_modules"]));
      expect(copied.filter((p) => p.startsWith("/app/dist/")).map((p) => basename(p)).sort()).toEqual(readdirSync(join(built, "dist")).sort());
    });

    it("runs a controller and an agent with the production dependencies alone", async () => {
      const main = join(app, "dist", "cli", "main.js");
      const controller = start(main, ["controller", "--listen=127.0.0.1:0", "--http=127.0.0.1:0", `--store=sqlite:${join(root, "shardline.db")}`], processes);
      const [, grpc, http] = (await controller.line(/controller listening on (\S+) \(gRPC\) and (\S+) \(HTTP\)/)) as string[];
      await until(async () => (await fetch(`http://${http}/readyz`)).ok, "the controller's /readyz");
      const agent = start(main, ["agent", `--controller=${grpc}`, "--id=test.node-1", "--label=cluster=test", "--allow-http", "--http=127.0.0.1:0"], processes);
      const [, agentHttp] = (await agent.line(/serving \/healthz, \/readyz and \/metrics on (\S+) \(HTTP\)/)) as string[];
      await until(async () => (await fetch(`http://${agentHttp}/readyz`)).ok, "the agent's /readyz");
      expect((await fetch(`http://${agentHttp}/healthz`)).ok).toBe(true);
      agent.child.kill("SIGTERM");
      expect(await agent.exit, agent.output()).toBe(0);
      controller.child.kill("SIGTERM");
      expect(await controller.exit, controller.output()).toBe(0);
    });
  });
});

describe("examples/kubernetes-handlers", () => {
  const EXAMPLE = join(ROOT, "examples", "kubernetes-handlers");
  const dockerfile = readFileSync(join(EXAMPLE, "Dockerfile"), "utf8");
  const stages = parseStages(dockerfile);
  let objects: Manifest[];
  let base: Manifest[];
  const agentOf = (from: Manifest[]) => from.find((o): o is Workload => o.kind === "DaemonSet" && o.metadata.name === "shardline-agent")!;
  const containerOf = (from: Manifest[]) => agentOf(from).spec.template.spec.containers[0]! as Container & { volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[] };
  const volumesOf = (from: Manifest[]) => agentOf(from).spec.template.spec.volumes! as { name: string; configMap?: { name: string; defaultMode?: number } }[];
  /** What the patch adds to the agent container's args: the flags after the base's. */
  const added = () => containerOf(objects).args!.slice(containerOf(base).args!.length);
  const flag = (name: string) => added().find((arg) => arg.startsWith(`${name}=`))?.slice(name.length + 1);

  beforeAll(async () => {
    objects = await renderKustomization(EXAMPLE);
    base = rendered.get("agent/daemonset")!;
  }, 60_000);

  it("renders objects that are valid against the Kubernetes schemas, with no unknown field", async () => {
    for (const object of objects) {
      const what = `${object.kind} ${object.metadata.name}`;
      const Model = await modelOf(object);
      expect(() => new Model(object).validate(), what).not.toThrow();
      if (object.apiVersion !== "monitoring.coreos.com/v1") expect(unknownFields(object, clientModelName(object)), what).toEqual([]);
    }
  });

  it("changes only the agent container of deploy/kustomize/agent/daemonset: its image, flags, env and mounts added, and the scripts' ConfigMap; RBAC as it was", () => {
    const byId = (from: Manifest[]) => new Map(from.filter((o) => o.kind !== "ConfigMap").map((o) => [`${o.kind}/${o.metadata.name}`, o]));
    const [ours, theirs] = [byId(objects), byId(base)];
    expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
    // Generated names end in a hash of the contents, which differs between kustomize versions.
    const configMaps = (from: Manifest[]) => Object.fromEntries(from.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata.name.replace(/-[a-z0-9]{10}$/, ""), o.data]));
    expect(configMaps(objects)).toEqual({ ...configMaps(base), "shardline-agent-scripts": expect.anything() });
    for (const [id, object] of ours) {
      if (id !== "DaemonSet/shardline-agent") expect(object, id).toEqual(theirs.get(id));
    }

    const [container, baseContainer] = [containerOf(objects), containerOf(base)];
    // The image the Dockerfile's `docker build -t` line makes, in place of shardline:VERSION.
    expect(container.image).toBe(/docker build -t (\S+)/.exec(dockerfile)![1]);
    expect(container.args!.slice(0, baseContainer.args!.length)).toEqual(baseContainer.args);
    expect(added().map((arg) => arg.split("=")[0])).toEqual(["--handlers", "--allow-script"]);
    const program = buildProgram({ stdout: () => {}, stderr: () => {}, readStdin: async () => "", env: {}, onSignal: () => () => {} });
    const agent = program.commands.find((c) => c.name() === "agent")!;
    for (const arg of added()) {
      const [name, ...value] = arg.split("=");
      expect(() => optionOf(agent, name!)!.parseArg?.(value.join("="), undefined as never), arg).not.toThrow();
    }
    expect(container.env).toEqual([...baseContainer.env!, { name: "ORDERS_API_URL", value: expect.stringMatching(/^http:\/\//) }]);
    expect(container.volumeMounts).toEqual([...baseContainer.volumeMounts, { name: "scripts", mountPath: expect.any(String), readOnly: true }]);
    expect(volumesOf(objects).slice(0, -1)).toEqual(volumesOf(base));

    // Everything else in the pod template, the DaemonSet's rollout and grace included, is the base's.
    const rest = (from: Manifest[]) => {
      const copy = structuredClone(agentOf(from));
      const pod = copy.spec.template.spec;
      const { image: _image, args: _args, env: _env, volumeMounts: _mounts, ...others } = pod.containers[0]! as Container & { volumeMounts: unknown };
      pod.containers[0] = others as Container;
      delete pod.volumes;
      return copy;
    };
    expect(rest(objects)).toEqual(rest(base));
  });

  it("mounts the scripts' ConfigMap where --allow-script points, executable by the agent's user, and the script job names that path", async () => {
    const mount = containerOf(objects).volumeMounts.find((m) => m.name === "scripts")!;
    const volume = volumesOf(objects).find((v) => v.name === "scripts")!.configMap!;
    const configMap = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === volume.name) as (Manifest & { data: Record<string, string> }) | undefined;
    expect(configMap, `ConfigMap ${volume.name}`).toBeDefined();
    const script = flag("--allow-script")!;
    expect(dirname(script)).toBe(mount.mountPath);
    expect(configMap!.data[basename(script)]).toBe(readFileSync(join(EXAMPLE, "scripts", basename(script)), "utf8"));
    // The kubelet's files are root's: the agent (UID 1000) reads and runs them as "other".
    expect((volume.defaultMode ?? 0o644) & 0o005).toBe(0o005);
    const jobs = parseAllDocuments(readFileSync(join(EXAMPLE, "jobs.yaml"), "utf8")).map((d) => d.toJS() as { spec: { script?: { command: string }; handler?: string } });
    expect(jobs.flatMap((j) => (j.spec.script ? [j.spec.script.command] : []))).toEqual([script]);
    expect(jobs.flatMap((j) => (j.spec.handler ? [j.spec.handler] : []))).toEqual(Object.keys((await import(join(EXAMPLE, basename(flag("--handlers")!)))).default as object));
  });

  it("builds FROM the Shardline image of this version, installs the module's dependencies on the Node that image runs, and puts the module where --handlers points", () => {
    const args = dockerArgs(dockerfile);
    const expand = (text: string) => text.replace(/\$\{(\w+)\}/g, (_match, name: string) => args.get(name) ?? `\${${name}}`);
    expect(expand(stages.at(-1)!.from)).toMatch(new RegExp(`/shardline:${VERSION.replaceAll(".", "\\.")}$`));
    // The Shardline image's user and entrypoint stay.
    expect(stages.at(-1)!.instructions.map((i) => i.op).filter((op) => ["USER", "ENTRYPOINT", "CMD"].includes(op))).toEqual([]);
    const shardline = readFileSync(join(ROOT, "deploy", "Dockerfile"), "utf8");
    const shardlineRuntime = parseStages(shardline).at(-1)!.from.replace(/\$\{(\w+)\}/g, (_match, name: string) => dockerArgs(shardline).get(name)!);
    const deps = stages[0]!;
    expect(expand(deps.from)).toBe(shardlineRuntime);
    expect(deps.instructions.filter((i) => i.op === "RUN").map((i) => i.args)).toEqual([expect.stringMatching(/^npm ci --omit=dev\b/)]);

    const ignore = readFileSync(join(EXAMPLE, ".dockerignore"), "utf8");
    for (const stage of stages) {
      for (const copy of stage.instructions.filter((i) => i.op === "COPY" && !i.args.startsWith("--from="))) {
        for (const source of copy.args.split(/\s+/).slice(0, -1)) {
          expect(existsSync(join(EXAMPLE, source)), `COPY ${source}`).toBe(true);
          expect(ignored(ignore, source), `COPY ${source} is excluded by .dockerignore`).toBe(false);
        }
      }
    }
    expect(contextFileOf(EXAMPLE, stages, stages.length - 1, flag("--handlers")!)).toBe("orders.mjs");

    // npm ci refuses a lock out of step with package.json.
    const pkg = JSON.parse(readFileSync(join(EXAMPLE, "package.json"), "utf8")) as { name: string; version: string; dependencies?: Record<string, string> };
    const lock = JSON.parse(readFileSync(join(EXAMPLE, "package-lock.json"), "utf8")) as { name: string; packages: Record<string, { name?: string; version?: string; dependencies?: Record<string, string> }> };
    expect(lock.packages[""]).toMatchObject({ name: pkg.name, version: pkg.version });
    expect(lock.packages[""]!.dependencies ?? {}).toEqual(pkg.dependencies ?? {});
  });
});

/** The Kubernetes executor's requests in a run that succeeds, one cancelled, and a recovery, as RBAC `group/resource:verb`. */
async function verbsTheExecutorUses(): Promise<Set<string>> {
  const fake = await FakeKubeApiServer.start();
  const dir = await mkdtemp(join(tmpdir(), "shardline-rbac-"));
  await fake.kubeconfig("shardline", join(dir, "kubeconfig"));
  const access = await connectKubernetes({ kubeconfig: join(dir, "kubeconfig") });
  const reports: { id: string; state: ExecutionState }[] = [];
  const executor = new KubernetesExecutor({
    agentId: "rbac",
    logger: pino({ level: "silent" }),
    client: access.client,
    namespace: access.namespace,
    configOf: () => ({ podTemplateJson: JSON.stringify({ spec: { containers: [{ name: "main", image: "busybox" }] } }), backoffLimit: 0, ttlSecondsAfterFinished: 60, logContainer: "" }),
    maxResultBytes: 4096,
    report: (update) => reports.push({ id: update.executionId, state: update.state }),
  });
  try {
    const context = (shard: number) => create(ExecutionContextSchema, { executionId: `rbac/1/${shard}/1`, job: "rbac", shard, shardCount: 2, fireTimeUnixMs: 1n, attempt: 1 });
    const done = (id: string) => until(async () => reports.some((r) => r.id === id && r.state !== ExecutionState.RUNNING), `the end of ${id}`);
    const succeeding = executor.create(context(0));
    succeeding.start();
    await until(async () => fake.job("shardline", jobNameFor(context(0))) !== undefined, "the Job");
    fake.succeed("shardline", jobNameFor(context(0)), { log: "ok\n" });
    await done("rbac/1/0/1");
    // The same execution again (a repeated dispatch): 409, then the Job is read and adopted.
    reports.length = 0;
    executor.create(context(0)).start();
    await done("rbac/1/0/1");
    const cancelled = executor.create(context(1));
    cancelled.start();
    await until(async () => reports.some((r) => r.id === "rbac/1/1/1"), "RUNNING");
    cancelled.stop(ExecutionState.CANCELLED, "cancelled");
    await done("rbac/1/1/1");
    await executor.recover();
    await until(async () => fake.job("shardline", jobNameFor(context(0)))?.metadata.labels?.["shardline.dev/reported"] === "true", "the reported label");
  } finally {
    executor.close();
    access.client.close();
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const verbs = new Set<string>();
  for (const request of fake.requests) {
    const match = /^\/(?:api\/v1|apis\/(batch)\/v1)\/namespaces\/[^/]+\/([a-z]+)(?:\/([^/]+)(\/log)?)?$/.exec(request.path)!;
    const [, group = "", resource, name, log] = match;
    const verb =
      request.method === "POST" ? "create" : request.method === "DELETE" ? "delete" : request.method === "PATCH" ? "patch" : request.query.watch ? "watch" : name ? "get" : "list";
    verbs.add(`${group}/${resource}${log ? "/log" : ""}:${verb}`);
  }
  return verbs;
}

/** What --label-from-node asks the API server for, as RBAC `group/resource:verb`. */
async function verbsNodeLabelsUse(): Promise<Set<string>> {
  const fake = await FakeKubeApiServer.start();
  const dir = await mkdtemp(join(tmpdir(), "shardline-rbac-"));
  await fake.kubeconfig("shardline", join(dir, "kubeconfig"));
  const access = await connectKubernetes({ kubeconfig: join(dir, "kubeconfig") });
  fake.setNode("node-1", { "topology.kubernetes.io/zone": "eu-1a" });
  try {
    await readNodeLabels({ client: access.client, node: "node-1", copies: [{ from: "topology.kubernetes.io/zone", to: "zone" }], logger: pino({ level: "silent" }) });
  } finally {
    access.client.close();
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  }
  return new Set(
    fake.requests.map((request) => {
      const [, resource, name] = /^\/api\/v1\/([a-z]+)(?:\/([^/]+))?$/.exec(request.path)!;
      return `/${resource}:${request.method === "GET" ? (name ? "get" : "list") : request.method}`;
    }),
  );
}

function findKustomizations(root: string): string[] {
  const found: string[] = [];
  const walk = (dir: string): void => {
    if (existsSync(join(dir, "kustomization.yaml"))) found.push(relative(root, dir));
    for (const entry of readdirSync(dir)) if (statSync(join(dir, entry)).isDirectory()) walk(join(dir, entry));
  };
  walk(root);
  return found.sort();
}

async function modelOf(object: Manifest): Promise<new (data: unknown) => { validate(): void }> {
  const { apiVersion, kind } = object;
  const module: Record<string, new (data: unknown) => { validate(): void }> =
    apiVersion === "monitoring.coreos.com/v1"
      ? await import(`@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`)
      : await import(`kubernetes-models/${apiVersion}/${kind}`);
  const Model = module[kind];
  if (Model === undefined) throw new Error(`no schema for ${apiVersion} ${kind}`);
  return Model;
}

/** The client library's model name of a built-in kind: apps/v1 Deployment is V1Deployment, autoscaling/v2 ... V2HorizontalPodAutoscaler. */
function clientModelName(object: Manifest): string {
  const version = object.apiVersion.split("/").at(-1)!;
  return `${version[0]!.toUpperCase()}${version.slice(1)}${object.kind}`;
}

type AttributeType = { name: string; baseName: string; type: string };
const models = k8s as unknown as Record<string, { getAttributeTypeMap?: () => AttributeType[] } | undefined>;

/** Dotted paths of the fields of `value` that the model `type` does not have (typos such as readinesProbe). */
function unknownFields(value: unknown, type: string, path = ""): string[] {
  if (value === null || typeof value !== "object") return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) return (value as unknown[]).flatMap((item, index) => unknownFields(item, array[1]!, `${path}.${index}`));
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return Object.entries(value as Obj).flatMap(([key, item]) => unknownFields(item, map[1]!, `${path}.${key}`));
  const attributes = models[type]?.getAttributeTypeMap?.();
  if (attributes === undefined) return [];
  return Object.entries(value as Obj).flatMap(([key, item]) => {
    const attribute = attributes.find((a) => a.baseName === key);
    return attribute === undefined ? [`${path}.${key}`.slice(1)] : unknownFields(item, attribute.type, `${path}.${key}`);
  });
}

function isWorkload(object: Manifest): object is Workload {
  return object.kind === "Deployment" || object.kind === "DaemonSet" || object.kind === "StatefulSet";
}

/** The controller's and the agents' workloads, which run the shardline image (etcd's does not). */
function isShardlineWorkload(object: Manifest): object is Workload {
  return isWorkload(object) && object.metadata.labels?.["app.kubernetes.io/name"] === "shardline";
}

function matches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

function containerPortNames(workload: Workload): (string | number)[] {
  return workload.spec.template.spec.containers.flatMap((c) => (c.ports ?? []).flatMap((p) => [p.name ?? p.containerPort, p.containerPort]));
}

function portOf(container: Container, name: string): number | undefined {
  return container.ports?.find((p) => p.name === name)?.containerPort;
}

/** The container's environment as the pod would see it: literal values, sample downward API values, ConfigMap values. */
function environmentOf(container: Container, objects: Manifest[], where: string): Map<string, string> {
  const samples: Record<string, string> = { "spec.nodeName": "node-1", "metadata.name": "shardline-agent-7d9f8", "metadata.namespace": "shardline", "metadata.uid": "3f1c", "status.podIP": "10.0.0.7" };
  const env = new Map<string, string>();
  for (const variable of container.env ?? []) {
    const from = variable.valueFrom;
    if (variable.value !== undefined) env.set(variable.name, variable.value);
    else if (from?.fieldRef) env.set(variable.name, samples[from.fieldRef.fieldPath] ?? "x");
    else if (from?.configMapKeyRef) {
      const { name, key } = from.configMapKeyRef;
      const map = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === name);
      expect(map, `${where}: ConfigMap ${name}`).toBeDefined();
      const value = (map!.data as Record<string, string> | undefined)?.[key];
      expect(value, `${where}: ConfigMap ${name} has no ${key}`).toBeDefined();
      env.set(variable.name, value!);
    }
  }
  return env;
}

function optionOf(command: Command, flag: string): Option | undefined {
  return command.options.find((option) => option.long === flag);
}

/** The UID the image runs as (its last USER). */
function imageUser(): number {
  const stages = parseStages(readFileSync(join(ROOT, "deploy", "Dockerfile"), "utf8"));
  return Number(stages.at(-1)!.instructions.filter((i) => i.op === "USER").at(-1)!.args.split(":")[0]);
}

interface Stage {
  name: string;
  from: string;
  instructions: { op: string; args: string }[];
}

/** The stages of a Dockerfile with their instructions (continuation lines joined, comments dropped). */
function parseStages(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.replace(/\\\n/g, " ").split("\n").map((line) => line.trim()).filter((line) => line !== "" && !line.startsWith("#"));
  for (const line of lines) {
    const [op, ...rest] = line.split(/\s+/);
    const args = rest.join(" ");
    if (op === "FROM") {
      const [from, , name] = rest;
      stages.push({ name: name ?? String(stages.length), from: from!, instructions: [] });
    } else {
      stages.at(-1)?.instructions.push({ op: op!, args });
    }
  }
  return stages;
}

/** Whether a context path is left out by a .dockerignore made of `*`, `!path` and `**` patterns, last match winning. */
function ignored(dockerignore: string, path: string): boolean {
  let excluded = false;
  for (const raw of dockerignore.split("\n").map((l) => l.trim())) {
    if (raw === "" || raw.startsWith("#")) continue;
    const negate = raw.startsWith("!");
    const pattern = (negate ? raw.slice(1) : raw).replace(/\/$/, "");
    // `**/` is any depth of directories, `*` any name part.
    const source = pattern
      .split("**/")
      .map((part) => part.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*"))
      .join("(.*/)?");
    const regex = new RegExp(`^${source}(/.*)?$`);
    if (regex.test(path)) excluded = !negate;
  }
  return excluded;
}

/** The paths the build stage copies from the context. */
function buildSources(build: Stage): string[] {
  return build.instructions.filter((i) => i.op === "COPY" && !i.args.startsWith("--")).flatMap((i) => i.args.split(/\s+/).slice(0, -1));
}

/**
 * Does what the build stage does with what the context sends it: copies the files its COPY
 * instructions name, less what Dockerfile.dockerignore leaves out, and compiles them as `npm run
 * build` does (with this checkout's node_modules, as `npm ci` would install them). Returns the
 * build directory, whose dist/ is what the runtime stage copies.
 */
async function buildFromContext(build: Stage, dockerignore: string, into: string): Promise<string> {
  const copyTree = async (source: string): Promise<void> => {
    if (ignored(dockerignore, source)) return;
    const from = join(ROOT, source);
    if (statSync(from).isDirectory()) {
      for (const entry of readdirSync(from)) await copyTree(join(source, entry));
    } else {
      await mkdir(dirname(join(into, source)), { recursive: true });
      await cp(from, join(into, source));
    }
  };
  for (const source of buildSources(build)) await copyTree(source);
  await symlink(join(ROOT, "node_modules"), join(into, "node_modules"), "dir");
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  await promisify(execFile)(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: into }).catch((error: { stdout?: string }) => {
    throw new Error(`the build stage's \`npm run build\` fails on what the context sends:\n${error.stdout ?? String(error)}`);
  });
  return into;
}

/**
 * The runtime stage's /app in a temporary directory: what it copies from the build stage, with
 * node_modules holding only the production dependencies (linked from this checkout), so that a
 * runtime import of a dev dependency, or of a file the image leaves out, fails here.
 */
async function imageLayout(runtime: Stage, built: string, app: string): Promise<string> {
  await mkdir(join(app, "node_modules"), { recursive: true });
  for (const copy of runtime.instructions.filter((i) => i.op === "COPY" && i.args.startsWith("--from=build"))) {
    const [, source, target] = copy.args.split(/\s+/) as [string, string, string];
    if (source === "/app/node_modules") continue;
    await cp(join(built, relative("/app", source)), join(app, relative(".", target)), { recursive: true });
  }
  const { stdout } = await promisify(execFile)("npm", ["ls", "--omit=dev", "--all", "--parseable"], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 });
  const top = join(ROOT, "node_modules");
  for (const path of stdout.split("\n")) {
    const rest = relative(top, path);
    if (path === "" || rest === "" || rest.startsWith("..") || rest.includes("node_modules")) continue;
    const parts = rest.split("/");
    if (parts.length !== (parts[0]!.startsWith("@") ? 2 : 1)) continue;
    const link = join(app, "node_modules", rest);
    if (existsSync(link)) continue;
    await mkdir(dirname(link), { recursive: true });
    await symlink(path, link, "dir");
  }
  return app;
}

interface Started {
  child: ChildProcess;
  line(pattern: RegExp): Promise<RegExpExecArray>;
  exit: Promise<number | null>;
  output(): string;
}

function start(main: string, args: string[], processes: ChildProcess[]): Started {
  const child = spawn(process.execPath, [main, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NODE_ENV: "production" } });
  processes.push(child);
  let output = "";
  const waiters: { pattern: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  const onData = (chunk: Buffer): void => {
    output += chunk.toString();
    for (const waiter of [...waiters]) {
      const match = waiter.pattern.exec(output);
      if (match) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(match);
      }
    }
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    exit,
    output: () => output,
    line: (pattern) =>
      new Promise((resolve, reject) => {
        const match = pattern.exec(output);
        if (match) return resolve(match);
        waiters.push({ pattern, resolve });
        void exit.then((code) => reject(new Error(`${args[0]} exited (${code}) before printing ${pattern}:\n${output}`)));
      }),
  };
}

async function until(probe: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A Dockerfile's ARG defaults. */
function dockerArgs(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^ARG (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

/**
 * The file of the build context (relative to `context`) that ends up at `path` in the image of
 * stage `index`, following COPY --from back through earlier stages; undefined if no COPY puts a
 * file there. A later COPY to the same path wins, as in the image.
 */
function contextFileOf(context: string, stages: Stage[], index: number, path: string): string | undefined {
  let workdir = "/";
  const copies: { from?: string; sources: string[]; dest: string; intoDirectory: boolean }[] = [];
  for (const instruction of stages[index]!.instructions) {
    if (instruction.op === "WORKDIR") workdir = posix.resolve(workdir, instruction.args);
    if (instruction.op !== "COPY") continue;
    const words = instruction.args.split(/\s+/);
    const from = words[0]!.startsWith("--from=") ? words.shift()!.slice("--from=".length) : undefined;
    const dest = words.pop()!;
    copies.push({ ...(from === undefined ? {} : { from }), sources: words, dest: posix.resolve(workdir, dest), intoDirectory: dest.endsWith("/") || words.length > 1 });
  }
  for (const copy of copies.reverse()) {
    for (const source of copy.sources) {
      // A directory's contents go into dest; a file goes into dest as itself, or becomes dest.
      const under = path.startsWith(`${copy.dest}/`) ? path.slice(copy.dest.length + 1) : undefined;
      const asFile = copy.intoDirectory ? (path === posix.join(copy.dest, posix.basename(source)) ? source : undefined) : path === copy.dest ? source : undefined;
      if (copy.from !== undefined) {
        const stage = stages.findIndex((s) => s.name === copy.from);
        const found =
          (under === undefined ? undefined : contextFileOf(context, stages, stage, posix.join(source, under))) ??
          (asFile === undefined ? undefined : contextFileOf(context, stages, stage, asFile));
        if (found !== undefined) return found;
      } else if (existsSync(join(context, source)) && statSync(join(context, source)).isDirectory()) {
        if (under !== undefined && existsSync(join(context, source, under))) return posix.join(source, under);
      } else if (asFile !== undefined) {
        return posix.normalize(asFile);
      }
    }
  }
  return undefined;
}
