/**
 * The plugin parameters protoc-gen-mqrpc accepts on top of protoplugin's
 * standard ones (target, import_extension, rewrite_imports, …). They set the
 * lowest-precedence level of the per-method MQTT settings.
 */

/** Defaults for every method, from the plugin parameter. */
export interface PluginOptions {
  /** `batched_stream=true|false`. */
  readonly batchedStream?: boolean;
  /** `batch_linger_ms=<non-negative integer>`. */
  readonly batchLingerMs?: number;
}

const ACCEPTED = ["batched_stream", "batch_linger_ms"];

/** Parses the plugin's own parameters; anything else is rejected by name. */
export function parsePluginOptions(
  raw: ReadonlyArray<{ key: string; value: string }>,
): PluginOptions {
  let batchedStream: boolean | undefined;
  let batchLingerMs: number | undefined;
  for (const { key, value } of raw) {
    switch (key) {
      case "batched_stream":
        if (value !== "true" && value !== "false" && value !== "") {
          throw new Error(
            `invalid value "${value}" for plugin parameter batched_stream: use true or false`,
          );
        }
        batchedStream = value !== "false";
        break;
      case "batch_linger_ms":
        if (!/^\d+$/.test(value) || Number(value) > 0xffffffff) {
          throw new Error(
            `invalid value "${value}" for plugin parameter batch_linger_ms: use a non-negative integer`,
          );
        }
        batchLingerMs = Number(value);
        break;
      default:
        throw new Error(
          `unknown plugin parameter "${key}"; protoc-gen-mqrpc accepts ${ACCEPTED.join(", ")} besides the standard protoplugin parameters (target, import_extension, js_import_style, keep_empty_files, ts_nocheck, rewrite_imports)`,
        );
    }
  }
  return {
    ...(batchedStream !== undefined ? { batchedStream } : {}),
    ...(batchLingerMs !== undefined ? { batchLingerMs } : {}),
  };
}
