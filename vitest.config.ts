import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (path: string) =>
  fileURLToPath(new URL(`./packages/runtime/src/${path}`, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests, generated code and the runtime's own modules must share one
    // instance of @mqrpc/runtime (context keys are identities), so the
    // package name points at the sources here too.
    alias: [
      { find: /^@mqrpc\/runtime\/proto$/, replacement: src("proto.ts") },
      { find: /^@mqrpc\/runtime\/proto\/(.*)\.js$/, replacement: src("gen/$1.ts") },
      { find: /^@mqrpc\/runtime$/, replacement: src("index.ts") },
    ],
  },
  test: {
    include: ["packages/*/src/**/*.test.ts", "packages/*/test/**/*.test.ts", "test/**/*.test.ts"],
    // Most files wait on brokers, child processes and timers, not the CPU:
    // vitest's default (cores - 1, so one file at a time on two cores)
    // left CI mostly idle. MQRPC_TEST_WORKERS overrides.
    maxWorkers: Number(process.env.MQRPC_TEST_WORKERS ?? 2),
    testTimeout: 30_000,
    hookTimeout: 30_000,
    globalSetup: ["test/brokers/global-setup.ts"],
    // The default output, then one line on the browser suite (test/browser/).
    reporters: ["default", "./test/browser/summary-reporter.ts"],
    // A suite for brokers that MQRPC_BROKERS leaves out declares no tests;
    // the run's "mqrpc brokers covered" line says what was left out.
    passWithNoTests: true,
  },
});
