/**
 * The options that say where a server's schema comes from: `--schema`
 * files, or server reflection over MQTT (`--reflect-header`).
 */
import type { Command } from "commander";
import { collect } from "../option-parsers.js";

/** The schema flags as commander parses them. */
export interface SchemaFlags {
  readonly schema?: readonly string[];
  readonly reflectHeader?: readonly string[];
}

/** Adds `--schema` and `--reflect-header` to `command`. */
export function addSchemaOptions(command: Command): Command {
  return command
    .option(
      "--schema <path>",
      "use this schema instead of server reflection: a .proto directory, a buf module or " +
        "workspace, a .proto file (built with buf build), or a buf build image / " +
        "FileDescriptorSet file (binary; .json for JSON); repeatable",
      collect,
    )
    .option(
      "--reflect-header <header>",
      'request metadata for the reflection call, as "name: value"; repeatable',
      collect,
    );
}

/** Whether the schema needs the broker (no `--schema`). */
export function needsReflection(flags: SchemaFlags): boolean {
  return flags.schema === undefined || flags.schema.length === 0;
}
