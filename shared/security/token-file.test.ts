import { mkdtemp, rm, writeFile, rename } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ShardlineError } from "../errors.js";
import { parseTokenFile, TokenFile } from "./token-file.js";

const ADMIN = "a".repeat(32);
const VIEWER = "v".repeat(32);
const AGENT = "g".repeat(32);

describe("parseTokenFile", () => {
  it("reads TOKEN,NAME,ROLE lines, skipping comments and blank lines", () => {
    const holders = parseTokenFile(`# who may do what\n${ADMIN},alice,admin\n\n ${VIEWER} , grafana , viewer \n${AGENT},agents,agent\n`, "tokens");
    expect([...holders]).toEqual([
      { name: "alice", role: "admin" },
      { name: "grafana", role: "viewer" },
      { name: "agents", role: "agent" },
    ]);
  });

  it.each([
    ["a line with two fields", `${ADMIN},alice`, "tokens line 1: 2 fields"],
    ["a short token", "short,alice,admin", "tokens line 1: the token is not allowed"],
    ["an unknown role", `${ADMIN},alice,root`, 'tokens line 1: role "root" is not allowed; expected one of viewer, operator, admin, agent'],
    ["a name used twice", `${ADMIN},alice,admin\n${VIEWER},alice,viewer`, "tokens line 2: name alice is used twice"],
    ["a token given twice", `${ADMIN},alice,admin\n${ADMIN},bob,viewer`, "tokens line 2: this token is already given to another name"],
    ["a bad name", `${ADMIN},al ice,admin`, 'tokens line 1: name "al ice" is not allowed'],
  ])("refuses %s, naming the line and never the token", (_what, text, message) => {
    const error = (() => {
      try {
        parseTokenFile(text, "tokens");
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ShardlineError);
    expect((error as Error).message).toContain(message);
    expect((error as Error).message).not.toContain(ADMIN);
  });
});

describe("TokenFile", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "shardline-tokens-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("tells who holds a token, and nobody for one it does not know", async () => {
    await writeFile(join(dir, "tokens"), `${ADMIN},alice,admin\n${VIEWER},grafana,viewer\n`);
    const tokens = new TokenFile(join(dir, "tokens"));
    expect(tokens.authenticate(ADMIN)).toEqual({ name: "alice", role: "admin" });
    expect(tokens.authenticate(VIEWER)).toEqual({ name: "grafana", role: "viewer" });
    expect(tokens.authenticate("x".repeat(32))).toBeUndefined();
    expect(tokens.authenticate("")).toBeUndefined();
  });

  it("takes a rotated file at the next call, as a Kubernetes Secret's mount is swapped", async () => {
    const path = join(dir, "tokens");
    await writeFile(path, `${ADMIN},alice,admin\n`);
    const tokens = new TokenFile(path);
    expect(tokens.authenticate(ADMIN)?.name).toBe("alice");

    // A mounted Secret changes by an atomic rename of a new file over the old one.
    await writeFile(join(dir, "next"), `${VIEWER},alice,viewer\n`);
    await rename(join(dir, "next"), path);

    expect(tokens.authenticate(ADMIN)).toBeUndefined();
    expect(tokens.authenticate(VIEWER)).toEqual({ name: "alice", role: "viewer" });
  });

  it("keeps the tokens in force when a change does not parse, and says why", async () => {
    const path = join(dir, "tokens");
    await writeFile(path, `${ADMIN},alice,admin\n`);
    const errors: unknown[] = [];
    const tokens = new TokenFile(path, (error) => errors.push(error));

    await writeFile(join(dir, "next"), `${VIEWER},bob,superuser\n`);
    await rename(join(dir, "next"), path);

    expect(tokens.authenticate(ADMIN)?.name).toBe("alice");
    expect(String(errors[0])).toContain('role "superuser" is not allowed');
  });

  it("refuses to start from a file that cannot be read, naming the flag", () => {
    expect(() => new TokenFile(join(dir, "missing"))).toThrow(/--token-file: cannot read/);
  });
});
