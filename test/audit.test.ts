import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliProcess, freePort, requireBuiltCli, shardline, waitFor } from "./harness/processes.js";
import { SqliteController } from "./harness/sqlite-controller.js";

const ALICE = "alice-admin-token-0123456789";
const OLIVER = "oliver-operator-token-0123456";
const VERA = "vera-viewer-token-0123456789a";

/** The audit trail through the binary: who changed what, refusals included, listed and followed. */
describe("shardline events --audit", () => {
  let dir = "";
  let controller: SqliteController;
  const as = (token: string, ...args: string[]) => shardline(args, { SHARDLINE_CONTROLLER: controller.address, SHARDLINE_TOKEN: token });
  const follower: CliProcess[] = [];

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-audit-"));
    await writeFile(join(dir, "tokens"), `${ALICE},alice,admin\n${OLIVER},oliver,operator\n${VERA},vera,viewer\n`);
    controller = new SqliteController("127.0.0.1", await freePort(), join(dir, "state.db"), ["--token-file", join(dir, "tokens")]);
    await controller.start();
  }, 60_000);

  afterAll(async () => {
    for (const process of follower) await process.stop();
    await controller?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("lists who changed what, and who was refused, with their token's names; -w follows new records", async () => {
    await writeFile(join(dir, "rollup.yaml"), "apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: rollup}\nspec: {shards: 2, handler: work}\n");
    expect((await as(ALICE, "apply", "-f", join(dir, "rollup.yaml"))).code).toBe(0);
    expect((await as(OLIVER, "pause", "rollup")).code).toBe(0);
    expect((await as(VERA, "resume", "rollup")).code).toBe(7);

    const listed = await as(VERA, "events", "--audit");
    expect(listed.code).toBe(0);
    const lines = listed.stdout.trimEnd().split("\n").map((line) => line.replace(/^\S+ audit /, ""));
    // The harness's calls before any token, refused, are recorded too when the controller already
    // led (it serves a moment before it leads: then a refusal is logged, not stored).
    const harness = lines.filter((line) => / ListJobs: unauthenticated: /.test(line));
    for (const line of harness) expect(line).toMatch(/^no valid token \(127\.0\.0\.1:\d+\) ListJobs: unauthenticated: /);
    expect(lines.filter((line) => !harness.includes(line))).toEqual([
      "alice (admin) ApplyJob rollup: applied revision 1",
      "oliver (operator) PauseJob rollup: paused",
      expect.stringMatching(/^vera \(viewer\) ResumeJob rollup: permission_denied: ResumeJob: vera has role viewer, and this needs operator$/) as string,
    ]);
    const json = (await as(VERA, "events", "--audit", "--job", "rollup", "-o", "json")).stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(json[1]).toMatchObject({ caller: "oliver", role: "operator", method: "PauseJob", target: "rollup", summary: "paused", outcome: "ok", error: null });

    // Following: what is done from here on shows as it happens, and only that.
    const following = new CliProcess("events", ["events", "--audit", "-w"], { SHARDLINE_CONTROLLER: controller.address, SHARDLINE_TOKEN: VERA });
    follower.push(following);
    await waitFor("the recorded trail printed", () => (following.output.includes("oliver (operator) PauseJob rollup: paused") ? true : undefined), 30_000);
    // The watch behind -w is open once a trigger's audit event shows; retried until it does.
    await waitFor(
      "a new record followed",
      async () => {
        await as(OLIVER, "resume", "rollup");
        return /\saudit oliver \(operator\) ResumeJob rollup: resumed\n/.test(following.output) ? true : undefined;
      },
      30_000,
      500,
    );
    expect(following.output.match(/ApplyJob rollup/g)).toHaveLength(1);
  }, 120_000);
});
