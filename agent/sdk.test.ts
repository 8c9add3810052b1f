import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ShardlineError } from "../shared/errors.js";
import { defineHandlers, loadHandlers } from "./sdk.js";

const dir = mkdtempSync(join(tmpdir(), "shardline-handlers-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function moduleFile(name: string, source: string): string {
  const file = join(dir, name);
  writeFileSync(file, source);
  return file;
}

async function loadError(path: string): Promise<ShardlineError> {
  const error = await loadHandlers(path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ShardlineError);
  return error as ShardlineError;
}

describe("loadHandlers", () => {
  it("returns the default export's handlers, from an absolute or a relative path", async () => {
    const file = moduleFile("good.mjs", "export default { hello: () => 'hi', 'billing-rollup': async () => 1 };");
    expect(Object.keys(await loadHandlers(file))).toEqual(["hello", "billing-rollup"]);
    expect(Object.keys(await loadHandlers(relative(process.cwd(), file)))).toEqual(["hello", "billing-rollup"]);
  });

  it("names --handlers when the file is missing", async () => {
    const error = await loadError(join(dir, "nope.mjs"));
    expect(error.code).toBe("invalid-argument");
    expect(error.details.field).toBe("--handlers");
    expect(error.message).toMatch(/^--handlers: no file at .*nope\.mjs/);
  });

  it("names --handlers when there is no default export", async () => {
    const error = await loadError(moduleFile("named.mjs", "export const hello = () => 1;"));
    expect(error.message).toMatch(/^--handlers: .* has no default export/);
  });

  it("names the entry that is not a function", async () => {
    const error = await loadError(moduleFile("bad-entry.mjs", "export default { ok: () => 1, broken: 42 };"));
    expect(error.message).toMatch(/entry "broken" is a number, not a function/);
  });

  it("names --handlers when the module cannot be imported", async () => {
    const error = await loadError(moduleFile("syntax.mjs", "export default {"));
    expect(error.message).toMatch(/^--handlers: cannot import/);
  });
});

describe("defineHandlers", () => {
  it("returns the map as given", () => {
    const map = { a: () => 1 };
    expect(defineHandlers(map)).toBe(map);
  });
});
