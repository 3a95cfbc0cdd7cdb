/**
 * `mqrpc call`: calls one method of a server with JSON, any RPC kind.
 * Request documents are converted to protobuf binary with the server's
 * schema (reflection or `--schema`) and sent through
 * `MqttTransport.rawStream`; responses are printed as JSON, one per line,
 * as they arrive.
 */

import { Command, Option } from "commander";
import { addConnectionOptions, type ConnectionFlags } from "../connection-options.js";
import { collect, parseByteSize, parseDuration, parseServerId } from "../option-parsers.js";
import { runAction } from "../run-action.js";
import { addSchemaOptions, type SchemaFlags } from "../schema/schema-options.js";

/** The options of the command, as commander parses them. */
export interface CallFlags extends ConnectionFlags, SchemaFlags {
  readonly data?: string;
  readonly header?: readonly string[];
  readonly timeout?: number;
  readonly emitDefaults?: boolean;
  readonly verbose?: boolean;
  readonly waitForServer?: boolean;
  readonly maxMessageSize?: number;
  readonly progress: boolean;
}

/** The `call` command. */
export function callCommand(): Command {
  const command = new Command("call")
    .summary("call a method with JSON: unary and every streaming kind")
    .description(
      "Call a method of a server with JSON: every RPC kind; responses print as JSON, one per line, as they arrive",
    )
    .argument("<server-id>", "the server (device) id", parseServerId)
    .argument(
      "<method>",
      "package.Service/Method (or package.Service.Method; Service/Method when the short name is unique)",
    )
    .option(
      "-d, --data <json>",
      "request message(s) as JSON: inline, @file, or @- for stdin; one document per message, " +
        "several for client and bidi streams (stdin is streamed as documents arrive). " +
        'A bytes field written "@path" is filled from that file. Default: {} for unary and ' +
        "server-streaming methods, no messages for client and bidi streams",
    )
    .option("-H, --header <header>", 'request metadata, "name: value"; repeatable', collect)
    .addOption(
      new Option(
        "--timeout <duration>",
        "deadline of the whole command, schema included: seconds (2.5) or 500ms, 10s, 1m; " +
          "past it the call ends with deadline_exceeded",
      ).argParser(parseDuration),
    )
    .option("--emit-defaults", "print fields with default values in responses")
    .option("-v, --verbose", "show request and response headers, trailers, and timing on stderr")
    .option(
      "--wait-for-server",
      "wait for the server to come online (within --timeout) instead of failing",
    )
    .addOption(
      new Option("--max-message-size <bytes>", "largest response message accepted (e.g. 16MiB)")
        .argParser(parseByteSize)
        .default(undefined, "4MiB"),
    )
    .option(
      "--no-progress",
      "no upload progress bar (shown only on a terminal, for bytes read from files)",
    );
  addSchemaOptions(command);
  addConnectionOptions(command);
  return command
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc call sensor-box.7 mqrpc.example.device.v1.DeviceService/GetInfo
  $ mqrpc call sensor-box.7 DeviceService/SetLed -d '{"brightness": 80, "color": "amber"}'
  $ mqrpc call sensor-box.7 DeviceService/StreamTelemetry -d '{"count": 5, "intervalMs": 200}'
  $ mqrpc call sensor-box.7 DeviceService/UploadFirmware -d '{"data": "@firmware.bin"}'
  $ printf '{"line":"uptime"}\\n{"line":"led"}\\n' | mqrpc call sensor-box.7 DeviceService/Console -d @-
  $ mqrpc call dev-42 acme.v1.Api/Get -H 'authorization: Bearer t0k3n' --timeout 2s -v
  $ mqrpc call dev-42 acme.v1.Api/Get --schema proto/ -d @request.json

Exit status: 0 when the call ends OK (or is stopped with SIGINT/SIGTERM),
64 + the status code when it fails (65 canceled … 69 not_found … 78 unavailable
… 80 unauthenticated; the status is printed on stderr as JSON, also when the
broker or reflection failed before the call), 1 for bad input, 2 for a bad
command line.`,
    )
    .action(
      runAction(async (serverId: string, method: string, flags: CallFlags) =>
        (await import("./call-run.js")).call(serverId, method, flags),
      ),
    );
}
