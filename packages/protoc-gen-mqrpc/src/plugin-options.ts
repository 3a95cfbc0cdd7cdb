/**
 * The plugin parameters protoc-gen-mqrpc accepts on top of protoplugin's
 * standard ones (target, import_extension, rewrite_imports, …). They set the
 * lowest-precedence level of the per-method MQTT settings: method option >
 * service option > file option > plugin parameter > runtime default.
 */

/** Defaults for every method, from the plugin parameter. */
export interface PluginOptions {
  /** `batched_stream=true|false`. */
  readonly batchedStream?: boolean;
  /** `batch_linger_ms=<non-negative integer>`. */
  readonly batchLingerMs?: number;
}

/** The parameters this plugin adds, in the order the error messages list them. */
export const PLUGIN_PARAMETERS = ["batched_stream", "batch_linger_ms"] as const;

/** The parameters protoplugin itself handles; they never reach {@link parsePluginOptions}. */
const STANDARD_PARAMETERS = [
  "target",
  "import_extension",
  "js_import_style",
  "rewrite_imports",
  "map_imports",
  "keep_empty_files",
  "ts_nocheck",
  "elide_plugin_version",
  "bootstrap_wkt",
];

/** The largest linger the option's uint32 field can hold. */
const MAX_UINT32 = 0xffff_ffff;

/**
 * Parses the plugin's own parameters (protoplugin's `parseOptions` hook).
 * Anything unknown, repeated or malformed throws, naming the parameter;
 * protoplugin reports the error to protoc / buf as the plugin's failure.
 */
export function parsePluginOptions(
  raw: ReadonlyArray<{ readonly key: string; readonly value: string }>,
): PluginOptions {
  let batchedStream: boolean | undefined;
  let batchLingerMs: number | undefined;
  const seen = new Set<string>();
  for (const { key, value } of raw) {
    if (seen.has(key)) {
      throw new Error(`plugin parameter ${key} is given more than once`);
    }
    seen.add(key);
    switch (key) {
      case "batched_stream":
        if (value !== "true" && value !== "false") {
          throw new Error(
            `invalid value "${value}" for plugin parameter batched_stream: use true or false`,
          );
        }
        batchedStream = value === "true";
        break;
      case "batch_linger_ms":
        if (!/^\d+$/.test(value) || Number(value) > MAX_UINT32) {
          throw new Error(
            `invalid value "${value}" for plugin parameter batch_linger_ms: ` +
              `use a non-negative integer (milliseconds, at most ${MAX_UINT32})`,
          );
        }
        batchLingerMs = Number(value);
        break;
      default:
        throw new Error(
          `unknown plugin parameter "${key}": protoc-gen-mqrpc accepts ` +
            `${PLUGIN_PARAMETERS.join(", ")}, and the standard parameters ` +
            `${STANDARD_PARAMETERS.join(", ")}`,
        );
    }
  }
  return {
    ...(batchedStream !== undefined ? { batchedStream } : {}),
    ...(batchLingerMs !== undefined ? { batchLingerMs } : {}),
  };
}
