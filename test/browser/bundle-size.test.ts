/**
 * The client in a browser bundle: @mqrpc/runtime's `browser` export
 * condition leads to an entry without the embedded broker, so a web build
 * of a minimal client (one transport, one unary call) holds no Node
 * built-in, no Aedes, no `ws` and no Node build of MQTT.js, and stays
 * within its size budget. Runs without Chromium (esbuild only).
 *
 * The budget. MQTT.js's own browser build (dist/mqtt.esm.js, with its
 * Buffer and stream polyfills) is about 103 KiB gzipped and is the floor of
 * any MQTT client in a browser; mqrpc cannot shrink it, so the budget is
 * measured above it: everything else (mqrpc's client, frame layer and
 * presence, Connect and protobuf-es) may add at most 64 KiB gzipped. It
 * adds about 50 KiB today; 64 leaves room for features but not for a
 * regression of the kind this guards against: a polyfill dragged in (a
 * Buffer shim alone is ~20 KiB), a second copy of protobuf-es or MQTT.js,
 * or the server's and broker's code reaching the client's graph.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";
import { describe, expect, it } from "vitest";
import {
  bundleForBrowser,
  runtimeBrowserTarget,
  runtimeExports,
  runtimeSourceOf,
} from "./bundle.js";

const BUDGET_ABOVE_MQTT_JS_GZIP_BYTES = 64 * 1024;

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const gzipSize = (bytes: Uint8Array) => gzipSync(bytes, { level: 9 }).byteLength;
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

/** Inputs of a bundle that must never reach a browser. */
const NODE_ONLY = [
  /^node:/,
  /(^|\/)node_modules\/aedes/,
  /(^|\/)node_modules\/ws\//,
  /(^|\/)node_modules\/mqtt\/build\//,
  /(^|\/)node_modules\/mqtt-packet\//,
  /packages\/runtime\/src\/broker\/embedded-broker\.ts$/,
];

describe("@mqrpc/runtime in a browser bundle", () => {
  it("exports a browser entry before the Node one, built from src/index.browser.ts", () => {
    const main = runtimeExports()["."];
    const conditions = Object.keys(main);
    // Bundlers take the first condition that matches, so `browser` must
    // come before `import` (which a browser build matches too).
    expect(conditions.indexOf("browser")).toBeGreaterThanOrEqual(0);
    expect(conditions.indexOf("browser")).toBeLessThan(conditions.indexOf("import"));
    expect(runtimeSourceOf(runtimeBrowserTarget())).toBe(
      here("../../packages/runtime/src/index.browser.ts"),
    );
  });

  it("the browser entry exports everything the Node entry does but startEmbeddedBroker", async () => {
    const node = await import("../../packages/runtime/src/index.js");
    const browser = await import("../../packages/runtime/src/index.browser.js");
    const expected = Object.keys(node)
      .filter((name) => name !== "startEmbeddedBroker")
      .sort();
    expect(Object.keys(browser).sort()).toEqual(expected);
  });

  it("the Node entry cannot be bundled for a browser (what the browser condition avoids)", async () => {
    const failure = await esbuild
      .build({
        entryPoints: [here("../../packages/runtime/src/index.ts")],
        bundle: true,
        platform: "browser",
        write: false,
        logLevel: "silent",
      })
      .then(
        () => undefined,
        (e: unknown) => e as esbuild.BuildFailure,
      );
    expect(failure?.errors.map((e) => e.text).join("\n")).toMatch(/node:net|node:crypto|aedes/);
  });

  it("a minimal client bundles without Node built-ins, Aedes or ws, within its size budget", async () => {
    const bundle = await bundleForBrowser(here("page/minimal-client.ts"));
    const inputs = Object.keys(bundle.metafile.inputs);
    const nodeOnly = inputs.filter((input) => NODE_ONLY.some((pattern) => pattern.test(input)));
    expect(nodeOnly).toEqual([]);
    // MQTT.js comes as its browser build, and nothing is left for the page
    // to import at run time.
    expect(inputs).toContain("node_modules/mqtt/dist/mqtt.esm.js");
    const [output] = Object.values(bundle.metafile.outputs);
    expect(output?.imports).toEqual([]);

    const mqttJs = readFileSync(here("../../node_modules/mqtt/dist/mqtt.esm.js"));
    const gzip = gzipSize(bundle.code);
    const mqttJsGzip = gzipSize(mqttJs);
    console.log(
      `minimal browser client: ${kib(bundle.code.byteLength)} raw, ${kib(gzip)} gzipped ` +
        `(MQTT.js's browser build ${kib(mqttJsGzip)} of it; the rest ${kib(gzip - mqttJsGzip)}, ` +
        `budget ${kib(BUDGET_ABOVE_MQTT_JS_GZIP_BYTES)})`,
    );
    expect(gzip - mqttJsGzip).toBeLessThanOrEqual(BUDGET_ABOVE_MQTT_JS_GZIP_BYTES);
  });
});
