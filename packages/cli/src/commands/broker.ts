/**
 * `mqrpc broker`: the embedded Aedes broker of `@mqrpc/runtime`, for
 * development (MQTT 3.1.1, TCP and optionally WebSockets). Runs until
 * SIGINT or SIGTERM.
 */

import { Command, Option } from "commander";
import { parsePort } from "../option-parsers.js";
import { runAction } from "../run-action.js";

/** The options of the command, as commander parses them. */
export interface BrokerFlags {
  readonly port: number;
  readonly host: string;
  readonly wsPort?: number;
}

/** The `broker` command. */
export function brokerCommand(): Command {
  return new Command("broker")
    .summary("run the embedded MQTT broker for development")
    .description(
      "Run the embedded MQTT broker (Aedes, MQTT 3.1.1) for development; prints its URL and runs " +
        "until SIGINT or SIGTERM. The connection options of other commands do not apply",
    )
    .addOption(
      new Option("--port <port>", "TCP port (0: a free one)").argParser(parsePort).default(1883),
    )
    .option("--host <host>", "interface to listen on", "127.0.0.1")
    .addOption(
      new Option(
        "--ws-port <port>",
        "also serve MQTT over WebSockets (for browsers) on this port (0: a free one)",
      ).argParser(parsePort),
    )
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc broker
  $ mqrpc broker --port 0 --ws-port 8081
  $ MQRPC_MQTT_URL=mqtt://127.0.0.1:1883 mqrpc list`,
    )
    .action(
      runAction(async (flags: BrokerFlags) => (await import("./broker-run.js")).broker(flags)),
    );
}
