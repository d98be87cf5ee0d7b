import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // One throwaway PostgreSQL for the run; test files get their own database on it.
    globalSetup: ["test/support/postgres.ts"],
    // Integration tests start real servers on ephemeral loopback ports; keep files in parallel but
    // bounded, since the machine has two cores.
    maxWorkers: 2,
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
