import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["**/*.test.ts"],
    exclude: ["node_modules/**", "dist/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Process-level tests start real controllers and agents; two cores do not take more at once.
    maxWorkers: 2,
  },
});
