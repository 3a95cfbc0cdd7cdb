/**
 * `mqrpc forward`: a local TCP port forwarded to a virtual port of a server
 * id (`ssh -L` over MQTT), with `forwardPort` of `@mqrpc/net-bridge`.
 */
import { Command, Option } from "commander";
import { addConnectionOptions, type ConnectionFlags } from "../connection-options.js";
import { parseDuration, parseNonZeroPort, parseServerId } from "../option-parsers.js";
import { runAction } from "../run-action.js";

/** The options of the command, as commander parses them. */
export interface ForwardFlags extends ConnectionFlags {
  readonly serverId: string;
  readonly port: number;
  readonly listen: string;
  readonly waitForServer?: boolean;
  readonly connectionTimeout?: number;
}

/** The `forward` command. */
export function forwardCommand(): Command {
  const command = new Command("forward")
    .summary("forward a local TCP port to a server's virtual port (ssh -L over MQTT)")
    .description(
      "Listen on a local TCP port and carry every connection over MQTT to a virtual port of a server id " +
        "(served there by `mqrpc expose` or listenMqtt), for programs that only take a host and port. " +
        "Runs until SIGINT or SIGTERM, then resets open connections and exits 0",
    )
    .addOption(
      new Option("--server-id <id>", "the server (device) id")
        .argParser(parseServerId)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--port <port>", "the virtual port to reach, 1 to 65535")
        .argParser(parseNonZeroPort)
        .makeOptionMandatory(),
    )
    .option(
      "--listen <host:port>",
      "local address to listen on (port 0: a free one)",
      "127.0.0.1:0",
    )
    .option(
      "--wait-for-server",
      "connections wait for the server to come online instead of failing",
    )
    .addOption(
      new Option(
        "--connection-timeout <duration>",
        "how long a connection may take to be accepted",
      ).argParser(parseDuration),
    );
  addConnectionOptions(command);
  return command
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc forward --server-id sensor-box.7 --port 22 --listen 127.0.0.1:2222 &
  $ ssh -p 2222 pi@127.0.0.1
  $ mqrpc forward --server-id plant-7 --port 50051 --listen :50051   # a gRPC server behind a device`,
    )
    .action(
      runAction(async (flags: ForwardFlags) => (await import("./forward-run.js")).forward(flags)),
    );
}
