import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { AgentState } from "../shared/gen/shardline/v1/types_pb.js";
import { type AdminClient, adminClient, type CliProcess, ControllerProcess, freePort, requireBuiltCli, startAgent, waitFor } from "./harness/processes.js";

const HANDLERS = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "recording-handlers.mjs");
const JOB = `
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata: {name: sweep}
spec:
  shards: 4
  handler: work
`;
/** A lease far shorter than the freeze below: without stall tolerance, every lease would lapse. */
const LEASE = ["--lease-ttl", "1000", "--heartbeat-interval", "250"];
const FREEZE_MS = 3_000;

describe("a controller frozen for longer than a lease (SIGSTOP, as a long GC pause or a starved CPU)", () => {
  let dir = "";
  let controller: ControllerProcess | undefined;
  const agents: CliProcess[] = [];
  let admin: AdminClient | undefined;

  afterEach(async () => {
    admin?.close();
    controller?.process?.kill("SIGCONT");
    await Promise.all(agents.splice(0).map((agent) => agent.stop()));
    await controller?.process?.stop();
    if (dir !== "") await rm(dir, { recursive: true, force: true });
  });

  it("extends the leases by the time it could not run when it wakes, so no shard moves", async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-stall-"));
    controller = new ControllerProcess(await freePort(), join(dir, "state.db"), LEASE);
    await controller.start();
    admin = adminClient(controller.address);
    for (const id of ["agent-a", "agent-b"]) agents.push(startAgent(controller.address, id, HANDLERS));
    await admin.applyJob({ manifest: JOB });
    const placed = await waitFor("four shards on two agents", async () => {
      const list = (await admin!.listAssignments({ job: "sweep" })).assignments;
      return list.length === 4 && new Set(list.map((a) => a.agent)).size === 2 ? list : undefined;
    });

    controller.process!.kill("SIGSTOP");
    await new Promise((resolve) => setTimeout(resolve, FREEZE_MS));
    controller.process!.kill("SIGCONT");

    // The agents, strict by their own clocks, fenced and reconnect; the controller kept their
    // shards for them: same owners, same generations, no lease expired.
    await waitFor("both agents ready again", async () => {
      const list = (await admin!.listAgents({})).agents;
      return list.length === 2 && list.every((a) => a.state === AgentState.READY && a.shards.length === 2) ? true : undefined;
    });
    const after = (await admin.listAssignments({ job: "sweep" })).assignments;
    expect(after.map((a) => [a.shard, a.agent, a.generation])).toEqual(placed.map((a) => [a.shard, a.agent, a.generation]));
    const output = controller.process!.output;
    expect(output).toMatch(/the controller could not run for \d+ ms; agent leases are extended by as much/);
    expect(output).not.toMatch(/lease expired/);
  });
});
