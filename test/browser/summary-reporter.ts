/**
 * A vitest reporter (next to the default one, see vitest.config.ts) that
 * ends a run with one line on the browser suite, as global-setup.ts does
 * for the brokers, from the suite's own results:
 *
 *   mqrpc browser suite: 21 passed in Chromium 156.0.8078.114 (headless), over
 *   the embedded broker's WebSocket listener (Aedes, MQTT 3.1.1), Mosquitto's
 *   websockets listener (MQTT 5)
 *
 * or why it did not run in a browser. Silent when the run selected no file
 * of the suite.
 */
import { execFileSync } from "node:child_process";
import type { Reporter, TestModule } from "vitest/node";
import { CHROMIUM_MISSING, chromiumPath } from "./chromium.js";

const SUITE_DIR = "/test/browser/";

export default class BrowserSuiteSummary implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const modules = testModules.filter((m) => m.moduleId.includes(SUITE_DIR));
    if (modules.length === 0) return;
    const counts = { passed: 0, failed: 0, skipped: 0, pending: 0 };
    const over = new Set<string>();
    let inBrowser = 0;
    for (const module of modules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        counts[state]++;
        if (state !== "passed") continue;
        // Tests that ran in Chromium sit in a suite named "… in Chromium";
        // those of rpc.test.ts in one per broker, named "over …".
        let browser = false;
        for (let parent = test.parent; parent.type === "suite"; parent = parent.parent) {
          if (parent.name.endsWith(" in Chromium")) browser = true;
          if (parent.name.startsWith("over ")) over.add(parent.name.slice("over ".length));
        }
        if (browser) inBrowser++;
      }
    }
    // A file that failed before declaring tests (Chromium missing under
    // MQRPC_REQUIRE_BROKERS=1, a bundle that does not build) has none to count.
    const unloaded = modules.filter(
      (m) => m.state() === "failed" && m.children.allTests().next().done === true,
    ).length;
    const tally = [
      `${counts.passed} passed`,
      ...(counts.failed > 0 ? [`${counts.failed} failed`] : []),
      ...(counts.skipped > 0 ? [`${counts.skipped} skipped`] : []),
      ...(unloaded > 0 ? [`${unloaded} file${unloaded === 1 ? "" : "s"} failed to load`] : []),
    ].join(", ");
    const chromium = chromiumPath();
    const where =
      inBrowser === 0
        ? `none in a browser (${chromium === undefined ? CHROMIUM_MISSING : "no browser test ran"})`
        : `${inBrowser} of them in ${chromiumVersion(chromium)} (headless)` +
          (over.size > 0 ? `, over ${[...over].join(", ")}` : "");
    console.log(`mqrpc browser suite: ${tally}; ${where}`);
  }
}

/** `Chromium 156.0.8078.114`, or the path when the binary does not say. */
function chromiumVersion(path: string | undefined): string {
  if (path === undefined) return "Chromium";
  try {
    const output = execFileSync(path, ["--version"], {
      encoding: "utf8",
      timeout: 10_000,
      stdio: "pipe",
    });
    return /Chromium [\d.]+/.exec(output)?.[0] ?? path;
  } catch {
    return path;
  }
}
