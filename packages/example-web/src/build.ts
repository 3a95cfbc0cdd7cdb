/**
 * Builds the dashboard with esbuild: src/dashboard.ts (with its CSS) bundled
 * for browsers, minified, with source maps, next to a copy of index.html.
 * Bundling for the `browser` platform picks the browser builds of
 * @mqrpc/runtime and MQTT.js through their `browser` export conditions.
 *
 * `npm run build -w packages/example-web` writes dist/; `npm run demo:web`
 * builds into dist/ before serving it.
 */
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as esbuild from "esbuild";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** Options of {@link buildDashboard}. */
export interface DashboardBuildOptions {
  /** Where to write index.html, dashboard.js and dashboard.css; default packages/example-web/dist. */
  readonly outdir?: string;
  /** More esbuild plugins (the tests resolve @mqrpc/runtime to its sources with one). */
  readonly plugins?: readonly esbuild.Plugin[];
}

/** Builds the dashboard into `outdir` and returns that directory. */
export async function buildDashboard(options: DashboardBuildOptions = {}): Promise<string> {
  const outdir = options.outdir ?? here("../dist");
  mkdirSync(outdir, { recursive: true });
  await esbuild.build({
    entryPoints: [here("dashboard.ts")],
    outdir,
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    minify: true,
    sourcemap: true,
    logLevel: "warning",
    plugins: [...(options.plugins ?? [])],
  });
  copyFileSync(here("index.html"), join(outdir, "index.html"));
  return outdir;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const outdir = await buildDashboard();
  console.log(`dashboard built into ${outdir}`);
}
