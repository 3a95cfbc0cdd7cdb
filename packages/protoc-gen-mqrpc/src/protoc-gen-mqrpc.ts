/**
 * The plugin object: protoplugin's ECMAScript plugin with mqrpc's generator
 * and parameters. `bin/protoc-gen-mqrpc` runs it under protoc / buf.
 */
import { readFileSync } from "node:fs";
import { createEcmaScriptPlugin, type Plugin } from "@bufbuild/protoplugin";
import { generateTs } from "./generate-ts.js";
import { parsePluginOptions } from "./plugin-options.js";

/** This package's version, read from its package.json (beside both src/ and dist/). */
function packageVersion(): string {
  const manifest: unknown = JSON.parse(
    readFileSync(new URL("../package.json", import.meta.url), "utf8"),
  );
  const version =
    typeof manifest === "object" && manifest !== null && "version" in manifest
      ? manifest.version
      : undefined;
  if (typeof version !== "string") {
    throw new Error("protoc-gen-mqrpc: package.json has no version");
  }
  return version;
}

const version = `v${packageVersion()}`;

/** protoplugin's ECMAScript plugin with mqrpc's generator and parameters. */
function createPlugin(): Plugin {
  return createEcmaScriptPlugin({
    name: "protoc-gen-mqrpc",
    version,
    parseOptions: parsePluginOptions,
    generateTs,
  });
}

/**
 * protoc-gen-mqrpc: generates `<name>_mqrpc.ts` with per-service MQTT
 * settings, `create<Service>Client` and `register<Service>`. `target=ts`
 * emits TypeScript; `target=js` and `target=dts` (protoplugin's default when
 * no target is given) are transpiled from it by protoplugin. Each `run` uses
 * a fresh protoplugin plugin: one keeps the targets it transpiled for in a
 * run and transpiles for them in every later run of the same object.
 */
export const protocGenMqrpc: Plugin = {
  name: "protoc-gen-mqrpc",
  version,
  run: (request) => createPlugin().run(request),
};
