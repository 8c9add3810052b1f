import { describe, expect, it } from "vitest";
import type { KubeObject } from "./kube-client.js";
import { podStart } from "./pod-start.js";

function pod(name: string, status: Record<string, unknown>, created = "2026-12-01T00:00:00Z"): KubeObject {
  return { metadata: { name, creationTimestamp: created }, status };
}

const waiting = (reason: string, message = "") => ({ phase: "Pending", containerStatuses: [{ name: "main", state: { waiting: { reason, message } } }] });

describe("podStart", () => {
  it("is waiting with no reason while there is no pod yet, or the container is being created", () => {
    expect(podStart([])).toEqual({ kind: "waiting", why: "" });
    expect(podStart([pod("p", waiting("ContainerCreating"))])).toEqual({ kind: "waiting", why: "" });
  });

  it("is started once a container runs or ran, whatever older pods say", () => {
    expect(podStart([pod("p", { phase: "Running" })])).toEqual({ kind: "started" });
    expect(podStart([pod("p", { phase: "Pending", initContainerStatuses: [{ name: "init", state: { running: {} } }] })])).toEqual({ kind: "started" });
    expect(podStart([pod("old", waiting("ImagePullBackOff"), "2026-12-01T00:00:00Z"), pod("new", { phase: "Failed" }, "2026-12-01T00:01:00Z")])).toEqual({ kind: "started" });
  });

  it("names the reason, message, pod and container of a pod stuck on its image or its configuration", () => {
    expect(podStart([pod("p", waiting("ImagePullBackOff", 'Back-off pulling image "nope:1"'))])).toEqual({
      kind: "waiting",
      why: 'ImagePullBackOff: Back-off pulling image "nope:1" (pod p, container main)',
    });
    expect(podStart([pod("p", waiting("CreateContainerConfigError", 'secret "db" not found'))])).toEqual({
      kind: "waiting",
      why: 'CreateContainerConfigError: secret "db" not found (pod p, container main)',
    });
  });

  it("names an unschedulable pod's reason", () => {
    const unschedulable = { phase: "Pending", conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: "0/3 nodes are available" }] };
    expect(podStart([pod("p", unschedulable)])).toEqual({ kind: "waiting", why: "Unschedulable: 0/3 nodes are available (pod p)" });
  });

  it("gives up at once on an image name that cannot be parsed or may not be pulled", () => {
    expect(podStart([pod("p", waiting("InvalidImageName", 'invalid image name "Bad Image"'))]).kind).toBe("hopeless");
    expect(podStart([pod("p", waiting("ErrImageNeverPull"))]).kind).toBe("hopeless");
  });
});
