/**
 * Resolves the MQTT settings of each method at generation time, with the
 * precedence method > service > file > plugin parameter. Fields no level
 * sets stay unset, so the runtime default applies.
 */
import { type DescMethod, getOption, hasOption } from "@bufbuild/protobuf";
import {
  file_options,
  type MqttOptions,
  method_options,
  service_options,
} from "@mqrpc/runtime/proto";
import type { PluginOptions } from "./plugin-options.js";

/** The settings generated for one method. */
export interface ResolvedSettings {
  batchedStream?: boolean;
  batchLingerMs?: number;
}

/** Resolves `method`'s settings from its options and the plugin defaults. */
export function resolveSettings(method: DescMethod, defaults: PluginOptions): ResolvedSettings {
  const levels: MqttOptions[] = [];
  if (hasOption(method, method_options)) levels.push(getOption(method, method_options));
  if (hasOption(method.parent, service_options))
    levels.push(getOption(method.parent, service_options));
  if (hasOption(method.parent.file, file_options))
    levels.push(getOption(method.parent.file, file_options));
  const resolved: ResolvedSettings = {};
  const batchedStream =
    levels.find((o) => o.batchedStream !== undefined)?.batchedStream ?? defaults.batchedStream;
  if (batchedStream !== undefined) resolved.batchedStream = batchedStream;
  const batchLingerMs =
    levels.find((o) => o.batchLingerMs !== undefined)?.batchLingerMs ?? defaults.batchLingerMs;
  if (batchLingerMs !== undefined) resolved.batchLingerMs = batchLingerMs;
  return resolved;
}
