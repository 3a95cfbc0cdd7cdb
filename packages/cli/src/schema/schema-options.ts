/**
 * The options that say where a server's schema comes from: `--schema`
 * files, or server reflection over MQTT (`--reflect-header`).
 */
import type { Command } from "commander";
import { collect } from "../option-parsers.js";

/** `--schema` as commander parses it. */
export interface SchemaFileFlags {
  readonly schema?: readonly string[];
}

/** The schema flags of a command that makes a reflection call itself (`describe`, `call`). */
export interface SchemaFlags extends SchemaFileFlags {
  readonly reflectHeader?: readonly string[];
}

/**
 * Adds `--schema` alone to `command`: for `ingress`, whose reflection calls
 * are made by `@mqrpc/gateway` per device, with no metadata of the CLI's.
 */
export function addSchemaFileOption(command: Command): Command {
  return command.option(
    "--schema <path>",
    "use this schema instead of server reflection: a .proto directory, a buf module or " +
      "workspace, a .proto file (built with buf build), or a buf build image / " +
      "FileDescriptorSet file (binary; .json for JSON); repeatable",
    collect,
  );
}

/** Adds `--schema` and `--reflect-header` to `command`. */
export function addSchemaOptions(command: Command): Command {
  return addSchemaFileOption(command).option(
    "--reflect-header <header>",
    'request metadata for the reflection call, as "name: value"; repeatable',
    collect,
  );
}

/** Whether the schema needs the broker (no `--schema`). */
export function needsReflection(flags: SchemaFileFlags): boolean {
  return flags.schema === undefined || flags.schema.length === 0;
}
