/**
 * `mqrpc expose`: a virtual port of a server id served by a local TCP
 * target (`ssh -R` over MQTT), with `exposePort` of `@mqrpc/net-bridge`.
 */
import { Command, Option } from "commander";
import { addConnectionOptions, type ConnectionFlags } from "../connection-options.js";
import { parseDuration, parseNonZeroPort, parseServerId } from "../option-parsers.js";
import { runAction } from "../run-action.js";

/** The options of the command, as commander parses them. */
export interface ExposeFlags extends ConnectionFlags {
  readonly serverId: string;
  readonly port: number;
  readonly target: string;
  readonly shutdownTimeout: number;
}

/** The `expose` command. */
export function exposeCommand(): Command {
  const command = new Command("expose")
    .summary("serve a virtual port with a local TCP target (ssh -R over MQTT)")
    .description(
      "Serve virtual port --port of --server-id by connecting each connection to one TCP target, so a " +
        "device exposes its SSH daemon or local HTTP/gRPC server with no inbound port. Runs until SIGINT " +
        "or SIGTERM, then lets connections run for --shutdown-timeout, announces the server offline and exits 0",
    )
    .addOption(
      new Option("--server-id <id>", "the server id callers address (e.g. this device's id)")
        .argParser(parseServerId)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--port <port>", "the virtual port to serve, 1 to 65535")
        .argParser(parseNonZeroPort)
        .makeOptionMandatory(),
    )
    .requiredOption(
      "--target <host:port>",
      "the TCP address every connection goes to (host default 127.0.0.1)",
    )
    .addOption(
      new Option("--shutdown-timeout <duration>", "how long open connections may run at a stop")
        .argParser(parseDuration)
        .default(5_000, "5s"),
    );
  addConnectionOptions(command);
  return command
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc expose --server-id sensor-box.7 --port 22 --target 127.0.0.1:22
  $ mqrpc expose --server-id plant-7 --port 50051 --target :50051 --mqtt mqtts://broker:8883 --cacert ca.pem`,
    )
    .action(
      runAction(async (flags: ExposeFlags) => (await import("./expose-run.js")).expose(flags)),
    );
}
