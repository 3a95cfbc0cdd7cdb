/**
 * Browser bundles made with esbuild for the tests, as a web app's build
 * makes them: platform `browser` (so the `browser` export conditions of
 * @mqrpc/runtime and MQTT.js are taken), ES2022, minified.
 *
 * `@mqrpc/runtime` is resolved to the sources of the file its `browser`
 * export condition names (dist/index.browser.js is built from
 * src/index.browser.ts), so that the tests bundle the code under test, not
 * whatever was last built into dist/.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const runtimeDir = fileURLToPath(new URL("../../packages/runtime/", import.meta.url));

/** packages/runtime/package.json's `exports`, as far as these tests read it. */
export interface RuntimeExports {
  readonly ".": Readonly<Record<string, unknown>>;
}

/** The runtime package's `exports` map. */
export function runtimeExports(): RuntimeExports {
  const manifest = JSON.parse(readFileSync(`${runtimeDir}package.json`, "utf8")) as {
    exports: RuntimeExports;
  };
  return manifest.exports;
}

/**
 * The source file behind an export target of the runtime package:
 * `./dist/x.js` is compiled from `src/x.ts` (tsconfig: rootDir src, outDir dist).
 */
export function runtimeSourceOf(target: string): string {
  const match = /^\.\/dist\/(.+)\.js$/.exec(target);
  if (match === null) throw new Error(`not a dist/*.js export target: ${target}`);
  return `${runtimeDir}src/${match[1]}.ts`;
}

/** The `browser` condition's target of the runtime's main export, e.g. `./dist/index.browser.js`. */
export function runtimeBrowserTarget(): string {
  const browser = runtimeExports()["."].browser as { default?: unknown } | undefined;
  if (typeof browser?.default !== "string") {
    throw new Error('packages/runtime/package.json: exports["."].browser.default is missing');
  }
  return browser.default;
}

/**
 * Resolves `@mqrpc/runtime` (and `/proto`) to the runtime's sources, the
 * main entry through its `browser` export condition.
 */
export const runtimeFromSources: esbuild.Plugin = {
  name: "mqrpc-runtime-sources",
  setup(build) {
    build.onResolve({ filter: /^@mqrpc\/runtime(\/proto)?$/ }, (args) => ({
      path:
        args.path === "@mqrpc/runtime"
          ? runtimeSourceOf(runtimeBrowserTarget())
          : `${runtimeDir}src/proto.ts`,
    }));
  },
};

/** What {@link bundleForBrowser} made. */
export interface BrowserBundle {
  /** The JavaScript. */
  readonly code: Uint8Array;
  readonly metafile: esbuild.Metafile;
}

/**
 * Bundles `entry` for browsers into memory: an ES module, or with
 * `globalName` a classic script that assigns the entry's exports to it.
 */
export async function bundleForBrowser(
  entry: string,
  options: { readonly globalName?: string } = {},
): Promise<BrowserBundle> {
  const result = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: "browser",
    target: "es2022",
    format: options.globalName === undefined ? "esm" : "iife",
    ...(options.globalName === undefined ? {} : { globalName: options.globalName }),
    minify: true,
    write: false,
    metafile: true,
    outfile: "bundle.js",
    logLevel: "silent",
    plugins: [runtimeFromSources],
  });
  const output = result.outputFiles.find((f) => f.path.endsWith(".js"));
  if (output === undefined) throw new Error(`esbuild produced no JavaScript for ${entry}`);
  return { code: output.contents, metafile: result.metafile };
}
