import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/** What the console may weigh, gzipped, script and stylesheet together: it is loaded over whatever link reaches the controller. */
const BUDGET_GZIP_BYTES = 200 * 1024;

const CONFIG = fileURLToPath(new URL("vite.config.ts", import.meta.url));

describe("the console's bundle", () => {
  let out: string;
  let files: { name: string; bytes: Buffer }[];
  let page: string;

  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), "shardline-console-bundle-"));
    await build({ configFile: CONFIG, logLevel: "silent", build: { outDir: out, emptyOutDir: true } });
    const names = await readdir(join(out, "assets"));
    files = await Promise.all(names.map(async (name) => ({ name, bytes: await readFile(join(out, "assets", name)) })));
    page = await readFile(join(out, "index.html"), "utf8");
  }, 120_000);
  afterAll(async () => {
    if (out !== undefined) await rm(out, { recursive: true, force: true });
  });

  it(`stays under ${BUDGET_GZIP_BYTES / 1024} KB gzipped`, () => {
    const code = files.filter((file) => /\.(js|css)$/.test(file.name));
    const sizes = code.map((file) => ({ name: file.name, gzip: gzipSync(file.bytes, { level: 9 }).length }));
    const total = sizes.reduce((sum, file) => sum + file.gzip, 0);
    const listing = sizes.map((file) => `${file.name} ${(file.gzip / 1024).toFixed(1)} KB`).join(", ");
    if (total > BUDGET_GZIP_BYTES) {
      throw new Error(
        `the console's bundle is ${(total / 1024).toFixed(1)} KB gzipped (${listing}), over its budget of ${BUDGET_GZIP_BYTES / 1024} KB: find what grew (npx vite build --config console/vite.config.ts) before raising the budget`,
      );
    }
    expect(code.some((file) => file.name.endsWith(".js"))).toBe(true);
  });

  it("is one hashed script and one hashed stylesheet under assets/, which index.html names", () => {
    const scripts = files.filter((file) => file.name.endsWith(".js"));
    const styles = files.filter((file) => file.name.endsWith(".css"));
    expect(scripts).toHaveLength(1);
    expect(styles).toHaveLength(1);
    for (const file of [...scripts, ...styles]) {
      expect(file.name).toMatch(/^[\w-]+-[\w-]{8}\.(js|css)$/);
      expect(page).toContain(`/assets/${file.name}`);
    }
  });

  it("loads nothing from outside the controller and runs no inline script (the Content-Security-Policy allows neither)", () => {
    const scriptTags = [...page.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/g)];
    expect(scriptTags.length).toBeGreaterThan(0);
    for (const [tag, body] of scriptTags) {
      expect(tag).toMatch(/\ssrc="\/assets\//);
      expect(body!.trim()).toBe("");
    }
    expect(page).not.toMatch(/\bstyle=/);
    expect(page).not.toMatch(/(href|src)="(https?:)?\/\//);
    const css = files.filter((file) => file.name.endsWith(".css")).map((file) => file.bytes.toString()).join("\n");
    expect(css).not.toMatch(/@import|url\(\s*["']?(https?:|\/\/|data:)/);
  });
});
