/**
 * `mqrpc gateway`: serves existing gRPC servers ("upstreams") over MQTT as
 * one server id, with `createGrpcGateway` of `@mqrpc/gateway`.
 */
import { Command, Option } from "commander";
import { addConnectionOptions, type ConnectionFlags } from "../connection-options.js";
import { collect, parseByteSize, parseDuration, parseServerId } from "../option-parsers.js";
import { runAction } from "../run-action.js";

/** The options of the command, as commander parses them. */
export interface GatewayFlags extends ConnectionFlags {
  readonly serverId: string;
  readonly upstream: readonly string[];
  readonly reflection: boolean;
  readonly shared?: boolean | string;
  readonly startTimeout: number;
  readonly upstreamConnectTimeout: number;
  readonly upstreamKeepaliveTime?: number;
  readonly upstreamKeepaliveTimeout?: number;
  readonly shutdownTimeout: number;
  readonly maxMessageSize?: number;
}

/** The `gateway` command. */
export function gatewayCommand(): Command {
  const command = new Command("gateway")
    .summary("serve existing gRPC servers over MQTT as one server id")
    .description(
      "Serve existing gRPC servers (upstreams, any language) over MQTT as one server id: callers see a " +
        "native mqrpc server (presence, reflection, every RPC kind). Runs until SIGINT or SIGTERM, then " +
        "lets calls finish (--shutdown-timeout), announces the server offline and exits 0",
    )
    .addOption(
      new Option("--server-id <id>", "the server id callers address")
        .argParser(parseServerId)
        .makeOptionMandatory(),
    )
    .requiredOption(
      "--upstream <url[=services]>",
      "an upstream gRPC server: http://host:port, https://host:port or unix:/path; its services are " +
        "learned by gRPC server reflection, or listed after = (comma-separated), or read from a " +
        "FileDescriptorSet after =@ (e.g. =@image.binpb); repeatable",
      collect,
    )
    .option("--no-reflection", "do not answer gRPC server reflection over MQTT")
    .option(
      "--shared [group]",
      "serve as a replica through a shared subscription (group: default the server id)",
    )
    .addOption(
      new Option(
        "--start-timeout <duration>",
        "how long to wait for upstreams learned by reflection",
      )
        .argParser(parseDuration)
        .default(10_000, "10s"),
    )
    .addOption(
      new Option(
        "--upstream-connect-timeout <duration>",
        "how long a new upstream connection has to answer HTTP/2 before its calls fail UNAVAILABLE",
      )
        .argParser(parseDuration)
        .default(20_000, "20s"),
    )
    .addOption(
      new Option(
        "--upstream-keepalive-time <duration>",
        "send an HTTP/2 PING to an upstream whose calls have been silent this long (gRPC keepalive " +
          "time; keep it at or above what the upstream permits, 5m for gRPC servers by default)",
      )
        .argParser(parseDuration)
        .default(undefined, "off"),
    )
    .addOption(
      new Option(
        "--upstream-keepalive-timeout <duration>",
        "how long an upstream has to acknowledge a keepalive PING before its calls fail UNAVAILABLE",
      )
        .argParser(parseDuration)
        .default(undefined, "20s"),
    )
    .addOption(
      new Option("--shutdown-timeout <duration>", "how long calls in progress may finish at a stop")
        .argParser(parseDuration)
        .default(5_000, "5s"),
    )
    .addOption(
      new Option("--max-message-size <bytes>", "largest message accepted (e.g. 16MiB)")
        .argParser(parseByteSize)
        .default(undefined, "4MiB"),
    );
  addConnectionOptions(command);
  return command
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc gateway --server-id plant-7 --upstream http://127.0.0.1:50051
  $ mqrpc gateway --server-id plant-7 --upstream http://127.0.0.1:50051=acme.power.v1.PowerService \\
      --upstream unix:/run/meter.sock=@meter.binpb --mqtt mqtts://broker:8883 --cacert ca.pem`,
    )
    .action(
      runAction(async (flags: GatewayFlags) => (await import("./gateway-run.js")).gateway(flags)),
    );
}
