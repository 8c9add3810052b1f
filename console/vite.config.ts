import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));

/**
 * The web console's build: one hashed bundle (script and stylesheet) under dist/console/assets/,
 * and dist/console/index.html, which the controller serves at `/` (controller/shell/console-assets.ts).
 * Preact's JSX goes through Vite's own transform (oxc), so no Babel preset is needed.
 */
export default defineConfig({
  root: here,
  base: "/",
  // Nothing is copied verbatim: everything the page loads comes out of the bundle, hashed.
  publicDir: false,
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: fileURLToPath(new URL("../dist/console", import.meta.url)),
    emptyOutDir: true,
    assetsDir: "assets",
    // No data: URLs: the page's Content-Security-Policy allows files from the controller only.
    assetsInlineLimit: 0,
    // The polyfill would be an extra module; every browser the console supports has modulepreload.
    modulePreload: { polyfill: false },
    target: "es2022",
    sourcemap: false,
    reportCompressedSize: false,
  },
});
