/**
 * Resolves the MQTT settings of each method at generation time, with the
 * precedence method option > service option > file option > plugin
 * parameter. Fields that no level sets stay unset, so the runtime default
 * applies to them.
 */
import { type DescMethod, getOption, hasOption } from "@bufbuild/protobuf";
import {
  file_options,
  type MqttOptions,
  method_options,
  service_options,
} from "./gen/mqrpc/v1/options_pb.js";
import type { PluginOptions } from "./plugin-options.js";

/** The settings generated for one method: only the fields some level sets. */
export interface ResolvedSettings {
  readonly batchedStream?: boolean;
  readonly batchLingerMs?: number;
}

/** The options set on `method`, its service and its file, most specific first. */
function optionLevels(method: DescMethod): MqttOptions[] {
  const service = method.parent;
  const file = service.file;
  const levels: MqttOptions[] = [];
  if (hasOption(method, method_options)) levels.push(getOption(method, method_options));
  if (hasOption(service, service_options)) levels.push(getOption(service, service_options));
  if (hasOption(file, file_options)) levels.push(getOption(file, file_options));
  return levels;
}

/** Resolves `method`'s settings from its options and the plugin parameters. */
export function resolveSettings(method: DescMethod, defaults: PluginOptions): ResolvedSettings {
  const levels = optionLevels(method);
  const batchedStream =
    levels.find((o) => o.batchedStream !== undefined)?.batchedStream ?? defaults.batchedStream;
  const batchLingerMs =
    levels.find((o) => o.batchLingerMs !== undefined)?.batchLingerMs ?? defaults.batchLingerMs;
  return {
    ...(batchedStream !== undefined ? { batchedStream } : {}),
    ...(batchLingerMs !== undefined ? { batchLingerMs } : {}),
  };
}
