import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ShardlineError } from "../shared/errors.js";
import { defineHandlers, defineListeners, LeaseLostError, loadHandlerModule, loadHandlers } from "./sdk.js";

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

describe("loadHandlerModule", () => {
  async function moduleError(path: string): Promise<ShardlineError> {
    const error = await loadHandlerModule(path).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ShardlineError);
    return error as ShardlineError;
  }

  it("returns the handlers and the named listeners export", async () => {
    const file = moduleFile(
      "with-listeners.mjs",
      "export default { hello: () => 'hi' }; export const listeners = { beforeExecution() {}, afterExecution() {} };",
    );
    const loaded = await loadHandlerModule(file);
    expect(Object.keys(loaded.handlers)).toEqual(["hello"]);
    expect(Object.keys(loaded.listeners ?? {})).toEqual(["beforeExecution", "afterExecution"]);
  });

  it("returns no listeners for a module without them, as loadHandlers did", async () => {
    const loaded = await loadHandlerModule(moduleFile("plain.mjs", "export default { hello: () => 'hi' };"));
    expect(Object.keys(loaded.handlers)).toEqual(["hello"]);
    expect(loaded.listeners).toBeUndefined();
  });

  it("accepts a module with listeners and no default export, for a script- or HTTP-only agent", async () => {
    const loaded = await loadHandlerModule(moduleFile("only-listeners.mjs", "export const listeners = { afterExecution() {} };"));
    expect(loaded.handlers).toEqual({});
    expect(Object.keys(loaded.listeners ?? {})).toEqual(["afterExecution"]);
  });

  it.each([
    ["a misspelt hook", "export const listeners = { beforeExecute() {} };", /"listeners" export has "beforeExecute"; it may only have beforeExecution and afterExecution/],
    ["a hook that is not a function", "export const listeners = { afterExecution: 1 };", /"listeners" export's "afterExecution" is a number, not a function/],
    ["listeners that are a function", "export function listeners() {}", /"listeners" export is a function, not an object/],
  ])("names --handlers for %s", async (_what, source, message) => {
    const error = await moduleError(moduleFile(`bad-listeners-${Math.random()}.mjs`, `export default {}; ${source}`));
    expect(error.details.field).toBe("--handlers");
    expect(error.message).toMatch(message);
  });

  it("still wants a default export when there are no listeners either", async () => {
    expect((await moduleError(moduleFile("neither.mjs", "export const x = 1;"))).message).toMatch(/has no default export/);
  });
});

describe("defineListeners", () => {
  it("returns the listeners as given", () => {
    const listeners = { afterExecution: () => {} };
    expect(defineListeners(listeners)).toBe(listeners);
  });
});

describe("defineHandlers", () => {
  it("returns the map as given", () => {
    const map = { a: () => 1 };
    expect(defineHandlers(map)).toBe(map);
  });
});

describe("LeaseLostError", () => {
  it("is a ShardlineError (failed-precondition) that carries the execution, its fencing token and why, and its cause", () => {
    const cause = new Error("fenced");
    const error = new LeaseLostError("the lease lapsed", "billing/1700000000000/3/1", 12_884_901_895n, "lease-lapsed", { cause });
    expect(error).toBeInstanceOf(ShardlineError);
    expect(error).toMatchObject({ code: "failed-precondition", message: "the lease lapsed", executionId: "billing/1700000000000/3/1", fencingToken: 12_884_901_895n, reason: "lease-lapsed" });
    expect(error.cause).toBe(cause);
  });
});
