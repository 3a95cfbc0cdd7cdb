import { createEcmaScriptPlugin } from "@bufbuild/protoplugin";
import { generateTs } from "./generate-ts.js";
import { parsePluginOptions } from "./plugin-options.js";

/** The version written into generated files' headers. */
const VERSION = "0.1.0";

/**
 * The plugin. Only `target=ts` output is generated; the TypeScript compiler
 * of the consuming project produces JavaScript.
 */
export const protocGenMqrpc = createEcmaScriptPlugin({
  name: "protoc-gen-mqrpc",
  version: `v${VERSION}`,
  parseOptions: parsePluginOptions,
  generateTs,
});
