import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The proto is the product for agents and clients in other languages (docs/protocol.md):
 * it must stay documented, and compatible with every contract Shardline released. Released
 * contracts are buf images in proto/released/ (its README says how to cut one); this runs
 * `buf breaking` against each, with the buf release package.json's scripts pin.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const PROTO = join(ROOT, "proto");
const RELEASED = join(PROTO, "released");
const AGENT_PROTO = join("shardline", "v1", "agent_service.proto");
const SCRIPTS = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
/** The buf package and version `npm run lint:proto` uses, so the test checks with the same rules. */
const BUF = /@bufbuild\/buf@\d+\.\d+\.\d+/.exec(SCRIPTS["lint:proto"] ?? "")?.[0];
const IMAGE_NAME = /^shardline-v1-(\d+)\.(\d+)\.(\d+)\.binpb$/;
/** The released images, oldest first. */
const IMAGES = readdirSync(RELEASED)
  .filter((name) => IMAGE_NAME.test(name))
  .sort((a, b) => compareVersions(versionOf(a), versionOf(b)));
/** buf exits with this when it found violations (as opposed to failing to run). */
const BUF_VIOLATIONS = 100;

interface BufResult {
  code: number;
  output: string;
}

/** Runs buf through npx; resolves with its exit code and everything it printed. */
function buf(args: string[]): Promise<BufResult> {
  return new Promise((resolve, reject) => {
    if (BUF === undefined) {
      reject(new Error('package.json\'s "lint:proto" script names no @bufbuild/buf@VERSION'));
      return;
    }
    execFile("npx", ["--yes", BUF, ...args], { cwd: ROOT, timeout: 50_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

function versionOf(image: string): number[] {
  return IMAGE_NAME.exec(image)!.slice(1).map(Number);
}

function compareVersions(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "shardline-proto-"));
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A copy of proto/ under the scratch directory with one file edited; fails if the edit matched nothing. */
async function editedCopy(name: string, file: string, edit: (text: string) => string): Promise<string> {
  const copy = join(scratch, name);
  await cp(PROTO, copy, { recursive: true });
  const path = join(copy, file);
  const before = await readFile(path, "utf8");
  const after = edit(before);
  expect(after, `the edit of ${file} for "${name}" matched nothing; update this test to the proto`).not.toBe(before);
  await writeFile(path, after);
  return copy;
}

describe("the contract's configuration", () => {
  it("lints with STANDARD and every COMMENT rule, and checks breaking changes with FILE", async () => {
    const config = parse(await readFile(join(PROTO, "buf.yaml"), "utf8")) as {
      modules: { path: string; excludes?: string[] }[];
      lint: { use: string[] };
      breaking: { use: string[] };
    };
    expect(config.lint.use).toEqual(
      expect.arrayContaining([
        "STANDARD",
        "COMMENT_ENUM",
        "COMMENT_ENUM_VALUE",
        "COMMENT_FIELD",
        "COMMENT_MESSAGE",
        "COMMENT_ONEOF",
        "COMMENT_RPC",
        "COMMENT_SERVICE",
      ]),
    );
    expect(config.breaking.use).toEqual(["FILE"]);
    expect(config.modules).toEqual([{ path: ".", excludes: ["released"] }]);
  });

  it("keeps a released image, and npm run proto:breaking checks against the latest", () => {
    expect(IMAGES.length).toBeGreaterThan(0);
    expect(SCRIPTS["proto:breaking"]).toBe(`npx --yes ${BUF} breaking proto --against proto/released/${IMAGES.at(-1)}`);
  });
});

describe("buf breaking against the released contracts", () => {
  it.each(IMAGES)("finds no breaking change since %s", async (image) => {
    const result = await buf(["breaking", "proto", "--against", join("proto", "released", image)]);
    expect(result.code, result.output).toBe(0);
  });

  it("reports a renumbered field, naming it", async () => {
    const copy = await editedCopy("renumbered", AGENT_PROTO, (text) => text.replace(/(message Heartbeat \{[^}]*\buint64 seq = )1;/, "$15;"));
    const result = await buf(["breaking", copy, "--against", join(RELEASED, IMAGES.at(-1)!)]);
    expect(result.code, result.output).toBe(BUF_VIOLATIONS);
    expect(result.output).toContain('field "1" with name "seq" on message "Heartbeat" was deleted');
  });

  it("reports a deleted field, naming it", async () => {
    const copy = await editedCopy("deleted", AGENT_PROTO, (text) => text.replace(/(message Cancel \{[^}]*?)\n[^\n]*\n {2}string reason = 2;/, "$1"));
    const result = await buf(["breaking", copy, "--against", join(RELEASED, IMAGES.at(-1)!)]);
    expect(result.code, result.output).toBe(BUF_VIOLATIONS);
    expect(result.output).toContain('field "2" with name "reason" on message "Cancel" was deleted');
  });
});

describe("buf lint", () => {
  it("refuses an undocumented field, naming it", async () => {
    const copy = await editedCopy("undocumented", AGENT_PROTO, (text) => text.replace(/(message Goodbye \{)(?:\n {2}\/\/[^\n]*)+/, "$1"));
    const result = await buf(["lint", copy]);
    expect(result.code, result.output).toBe(BUF_VIOLATIONS);
    expect(result.output).toContain('Field "reason" should have a non-empty comment for documentation.');
  });
});
