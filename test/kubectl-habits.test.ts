import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, requireBuiltCli, shardline } from "./harness/processes.js";
import { SqliteController } from "./harness/sqlite-controller.js";

const manifest = (name: string, shards: number, extra = "") => `# ${name}: kept as written
apiVersion: shardline.dev/v1
kind: ShardedJob
metadata:
  name: ${name}
spec:
  schedule: "0 0 * * *"
  timeZone: Asia/Shanghai
  shards: ${shards}
  handler: work${extra}
`;

/** What kubectl users reach for, through the binary against a controller process. */
describe("kubectl habits: get -o yaml round trip, all-or-nothing apply, dry run, diff, edit, explain, version, completion", () => {
  let dir = "";
  let controller: SqliteController;
  let env: Record<string, string> = {};
  const cli = (...args: string[]) => shardline(args, env);
  const file = async (name: string, text: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-habits-"));
    controller = new SqliteController("127.0.0.1", await freePort(), join(dir, "state.db"));
    await controller.start();
    env = { SHARDLINE_CONTROLLER: controller.address };
    expect((await cli("apply", "-f", await file("rollup.yaml", manifest("rollup", 2)))).stdout).toBe("job/rollup created\n");
    expect((await cli("apply", "-f", await file("reindex.yaml", manifest("reindex", 1)))).stdout).toBe("job/reindex created\n");
  }, 60_000);

  afterAll(async () => {
    await controller?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("prints a job as its manifest with its status apart, which applies back unchanged, one job or the List", async () => {
    const one = await cli("get", "job", "rollup", "-o", "yaml");
    expect(one.stdout).toMatch(/^apiVersion: shardline\.dev\/v1\nkind: ShardedJob\nmetadata:\n {2}name: rollup\nspec:\n/);
    expect(one.stdout).toMatch(/\nstatus:\n {2}revision: 1\n {2}paused: false\n/);
    expect(await cli("apply", "-f", await file("one.yaml", one.stdout))).toMatchObject({ code: 0, stdout: "job/rollup unchanged\n" });

    const all = await cli("get", "jobs", "-o", "json");
    expect(JSON.parse(all.stdout)).toMatchObject({ apiVersion: "v1", kind: "List", items: [{ metadata: { name: "reindex" } }, { metadata: { name: "rollup" } }] });
    expect(await cli("apply", "-f", await file("all.json", all.stdout))).toMatchObject({ code: 0, stdout: "job/reindex unchanged\njob/rollup unchanged\n" });
    expect((await cli("get", "jobs", "-o", "name")).stdout).toBe("job/reindex\njob/rollup\n");
  });

  it("applies several documents all or nothing: a bad one applies none, naming its document", async () => {
    const mixed = await file("mixed.yaml", `${manifest("fresh", 2)}---\n${manifest("rollup", 3)}---\n${manifest("broken", 0)}`);
    const refused = await cli("apply", "-f", mixed);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(new RegExp(`^shardline: --file "${mixed.replace(/[/.]/g, "\\$&")}", document 3 of 3: spec\\.shards: 0 is not allowed; .*nothing was applied\\n$`));
    expect((await cli("get", "job", "fresh")).code).toBe(3);
    expect(JSON.parse((await cli("get", "job", "rollup", "-o", "json")).stdout)).toMatchObject({ spec: { shards: 2 }, status: { revision: 1 } });
  });

  it("dry-runs on the server and on the client, storing nothing", async () => {
    const changed = await file("changed.yaml", `${manifest("rollup", 4)}---\n${manifest("newcomer", 1)}`);
    expect(await cli("apply", "-f", changed, "--dry-run=server")).toMatchObject({
      code: 0,
      stdout: "job/rollup configured (server dry run)\njob/newcomer created (server dry run)\n",
    });
    expect(await cli("apply", "-f", changed, "--dry-run=client")).toMatchObject({ code: 0, stdout: "job/rollup checked (client dry run)\njob/newcomer checked (client dry run)\n" });
    expect((await cli("get", "job", "newcomer")).code).toBe(3);
    expect(JSON.parse((await cli("get", "job", "rollup", "-o", "json")).stdout)).toMatchObject({ spec: { shards: 2 }, status: { revision: 1 } });
  });

  it("diffs a file against what the controller holds: 0 and nothing when the same, 10 and a unified diff when not", async () => {
    expect(await cli("diff", "-f", await file("same.yaml", manifest("rollup", 2)))).toMatchObject({ code: 0, stdout: "" });
    const diff = await cli("diff", "-f", await file("more.yaml", `${manifest("rollup", 5)}---\n${manifest("brand-new", 1)}`));
    expect(diff.code).toBe(10);
    expect(diff.stdout).toContain("--- job/rollup (controller, revision 1)\n");
    expect(diff.stdout).toMatch(/\n-shards: 2\n\+shards: 5\n/);
    expect(diff.stdout).toContain("--- job/brand-new (controller: none)\n");
    expect(diff.stderr).toBe("shardline: 2 jobs would change\n");
    expect((await cli("get", "job", "brand-new")).code).toBe(3);
  });

  it("edits a job in $EDITOR: a refused change comes back with the error on top, a good one is applied", async () => {
    // A scripted editor: the first time it sets shards 0 (refused); the second, it checks the
    // error is shown on top and sets shards 3.
    const calls = join(dir, "editor-calls");
    await writeFile(calls, "");
    const editor = await file(
      "editor.mjs",
      `import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
const [path] = process.argv.slice(2);
const text = readFileSync(path, "utf8");
appendFileSync(${JSON.stringify(calls)}, text.split("\\n")[0] + "\\n");
const count = readFileSync(${JSON.stringify(calls)}, "utf8").trim().split("\\n").length;
writeFileSync(path, text.replace(/^( *)shards: \\d+/m, count === 1 ? "$1shards: 0" : "$1shards: 3"));
`,
    );
    const edited = await shardline(["edit", "rollup"], { ...env, EDITOR: `${process.execPath} ${editor}` });
    expect(edited, edited.stderr).toMatchObject({ code: 0, stdout: "job/rollup edited\n" });
    const firstLines = (await readFile(calls, "utf8")).trim().split("\n");
    expect(firstLines).toHaveLength(2);
    expect(firstLines[1]).toMatch(/^# error: spec\.shards: 0 is not allowed/);
    expect(JSON.parse((await cli("get", "job", "rollup", "-o", "json")).stdout)).toMatchObject({ spec: { shards: 3 }, status: { revision: 2 } });

    // An editor that changes nothing cancels.
    expect(await shardline(["edit", "rollup"], { ...env, EDITOR: "true" })).toMatchObject({ code: 0, stdout: "", stderr: "Edit cancelled, no changes made.\n" });
  });

  it("explains manifest fields from the controller's own schema, prints versions and completion scripts", async () => {
    const explained = await cli("explain", "ShardedJob.spec.retries");
    expect(explained.stdout).toContain("FIELD: retries <object>\n");
    expect(explained.stdout).toMatch(/\n {2}limit\t<integer> {2}\(Default: 0; Range: 0 to 100\)\n/);
    expect(await cli("explain", "ShardedJob.spec.nope")).toMatchObject({ code: 2, stderr: expect.stringContaining("expected a field of ShardedJob.spec: schedule,") as string });

    expect((await cli("version")).stdout).toMatch(/^Client Version: \d+\.\d+\.\d+ \(API shardline\.v1\)\nController Version: \d+\.\d+\.\d+ \(API shardline\.v1\)\n$/);
    expect((await shardline(["version"], { SHARDLINE_CONTROLLER: "127.0.0.1:1" })).code).toBe(5);

    const bash = await cli("completion", "bash");
    expect(bash.stdout).toContain("complete -F _shardline shardline\n");
    expect((await cli("completion", "fish")).stdout).toContain("complete -c shardline -n '__fish_use_subcommand' -a 'apply'");
    expect((await cli("completion", "powershell")).code).toBe(2);
  });
});
