/**
 * Gets a server's schema the way its options say (schema-options.ts): the
 * `--schema` files, or server reflection over MQTT.
 */
import type { MqttTransport } from "@mqrpc/runtime";
import { parseMetadata } from "../call/metadata-flags.js";
import { reflectSchema } from "./reflection.js";
import type { Schema } from "./schema.js";
import { loadSchemaInputs } from "./schema-files.js";
import { needsReflection, type SchemaFlags } from "./schema-options.js";

/**
 * The schema from `--schema`, or asked of the server through `transport`.
 *
 * @throws CliError for unreadable or unresolvable `--schema` inputs;
 *   ConnectError as the reflection call fails.
 */
export async function obtainSchema(
  flags: SchemaFlags,
  transport: MqttTransport | undefined,
  options: {
    readonly timeoutMs: number;
    readonly signal: AbortSignal;
    readonly includeReflection?: boolean;
  },
): Promise<Schema> {
  if (!needsReflection(flags) || transport === undefined) {
    return loadSchemaInputs(flags.schema ?? []);
  }
  return reflectSchema(transport, {
    timeoutMs: options.timeoutMs,
    header: parseMetadata(flags.reflectHeader, "--reflect-header"),
    signal: options.signal,
    ...(options.includeReflection !== undefined
      ? { includeReflection: options.includeReflection }
      : {}),
  });
}
