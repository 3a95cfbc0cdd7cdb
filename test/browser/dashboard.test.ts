/**
 * The web dashboard (packages/example-web) in headless Chromium, started
 * as `npm run demo:web` starts it (built with esbuild, two example devices,
 * the embedded broker's WebSocket listener, the local web server), driven
 * like a user: the device list shows the devices online, GetInfo and
 * SetLed answer, the chart receives telemetry points, a file uploads with
 * its progress bar full and its checksum verified. Leaves a screenshot in
 * test-results/browser/dashboard.png.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWebDemo, type WebDemo } from "../../packages/example-web/src/demo-server.js";
import { kindSelected } from "../brokers/selection.js";
import { runtimeFromSources } from "./bundle.js";
import {
  chromiumForSuite,
  type HeadlessChromium,
  launchChromium,
  type TrackedPage,
} from "./chromium.js";

const SCREENSHOT = fileURLToPath(
  new URL("../../test-results/browser/dashboard.png", import.meta.url),
);

const chromiumBinary = chromiumForSuite();

// The dashboard runs on the embedded broker, so MQRPC_BROKERS without
// aedes leaves it out like the other Aedes suites.
if (chromiumBinary !== undefined && kindSelected("aedes")) {
  describe("the web dashboard in Chromium", () => {
    let chromium: HeadlessChromium;
    let demo: WebDemo;
    let outdir: string;
    let tracked: TrackedPage;
    let page: Page;

    beforeAll(async () => {
      outdir = mkdtempSync(join(tmpdir(), "mqrpc-dashboard-"));
      [demo, chromium] = await Promise.all([
        startWebDemo({ outdir, plugins: [runtimeFromSources] }),
        launchChromium(chromiumBinary),
      ]);
      tracked = await chromium.newPage();
      page = tracked.page;
      await page.setViewportSize({ width: 1200, height: 900 });
    });

    afterAll(async () => {
      await chromium?.close();
      await demo?.close();
      if (outdir !== undefined) rmSync(outdir, { recursive: true, force: true });
    });

    it("lists the devices, calls one, charts its telemetry, uploads a file", async () => {
      await page.goto(demo.url);
      const [first, second] = demo.deviceIds;
      const button = (id: string | undefined) =>
        page.locator(`#devices button[data-server-id="${id}"]`);
      await button(first).waitFor();
      await button(second).waitFor();
      expect(await page.locator("#devices button").count()).toBe(2);

      await button(first).click();
      expect(await page.locator('#info dd[data-field="device"]').textContent()).toBe(first);
      expect(await page.locator('#info dd[data-field="model"]').textContent()).toBe("mqrpc-sim-1");
      expect(await button(first).getAttribute("aria-pressed")).toBe("true");

      await page.fill("#led-brightness", "35");
      await page.selectOption("#led-color", "teal");
      await page.click('#led-form button[type="submit"]');
      await page.locator("#led-result", { hasText: "LED now 35% teal" }).waitFor();
      await page.fill("#led-brightness", "150");
      await page.click('#led-form button[type="submit"]');
      await page
        .locator("#led-result.error", {
          hasText: "InvalidArgument: brightness must be 0..100, got 150",
        })
        .waitFor();

      // The chart receives points (StreamTelemetry every 250 ms).
      await page.waitForFunction(
        () => Number(document.getElementById("chart")?.dataset.samples ?? 0) >= 8,
      );
      expect(await page.locator("#chart canvas").count()).toBeGreaterThan(0);

      await page.setInputFiles("#firmware-file", {
        name: "firmware.bin",
        mimeType: "application/octet-stream",
        buffer: randomBytes(1024 * 1024 + 123),
      });
      await page.click('#upload-form button[type="submit"]');
      await page.locator("#upload-result", { hasText: "verified" }).waitFor();
      expect(await page.locator("#upload-result").textContent()).toMatch(
        /^1048699 bytes in [\d.]+ s to slot b, sha256 [0-9a-f]{16}… verified$/,
      );
      expect(
        await page.locator("#upload-progress").evaluate((p) => (p as HTMLProgressElement).value),
      ).toBe(100);
      expect(await page.locator("#link-state").getAttribute("data-state")).toBe("connected");

      mkdirSync(join(SCREENSHOT, ".."), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      expect(statSync(SCREENSHOT).size).toBeGreaterThan(10_000);
      expect(tracked.errors).toEqual([]);
    });
  });
}
