/**
 * `mqrpc describe`: the services, methods and message types of a server,
 * through gRPC server reflection over MQTT or from `--schema`.
 */

import { Command, Option } from "commander";
import { addConnectionOptions, type ConnectionFlags } from "../connection-options.js";
import { parseDuration, parseServerId } from "../option-parsers.js";
import { runAction } from "../run-action.js";
import { addSchemaOptions, type SchemaFlags } from "../schema/schema-options.js";

/** The options of the command, as commander parses them. */
export interface DescribeFlags extends ConnectionFlags, SchemaFlags {
  readonly format: "text" | "json";
  readonly timeout: number;
  readonly descriptorSetOut?: string;
  readonly includeReflection?: boolean;
}

/** The `describe` command. */
export function describeCommand(): Command {
  const command = new Command("describe")
    .summary("show a server's services, methods and types (reflection or --schema)")
    .description(
      "Show a server's services and methods, or one symbol (service, method, message, enum), " +
        "through gRPC server reflection over MQTT or from --schema",
    )
    .argument("<server-id>", "the server (device) id", parseServerId)
    .argument(
      "[symbol]",
      "fully qualified name: package.Service, package.Service/Method, package.Message, package.Enum",
    )
    .addOption(
      new Option("--format <format>", "output format").choices(["text", "json"]).default("text"),
    )
    .addOption(
      new Option("--timeout <duration>", "deadline of the reflection call")
        .argParser(parseDuration)
        .default(10_000, "10s"),
    )
    .option(
      "--descriptor-set-out <file>",
      "also write the schema as a FileDescriptorSet (binary) to use later with --schema",
    )
    .option("--include-reflection", "also list the reflection services themselves");
  addSchemaOptions(command);
  addConnectionOptions(command);
  return command
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc describe sensor-box.7
  $ mqrpc describe sensor-box.7 mqrpc.example.device.v1.DeviceService/UploadFirmware
  $ mqrpc describe sensor-box.7 mqrpc.example.device.v1.Telemetry --format json
  $ mqrpc describe sensor-box.7 --descriptor-set-out device.binpb
  $ mqrpc describe sensor-box.7 --schema proto/          # no broker needed
  $ mqrpc describe sensor-box.7 --schema image.binpb     # buf build -o image.binpb`,
    )
    .action(
      runAction(async (serverId: string, symbol: string | undefined, flags: DescribeFlags) =>
        (await import("./describe-run.js")).describe(serverId, symbol, flags),
      ),
    );
}
