/**
 * `mqrpc ingress`: an HTTP/2 gRPC (and gRPC-Web, Connect) endpoint for
 * standard clients that reach devices over MQTT, with `createGrpcIngress`
 * of `@mqrpc/gateway`.
 */
import { Command, Option } from "commander";
import { addConnectionOptions, type ConnectionFlags } from "../connection-options.js";
import { parseByteSize, parseDuration } from "../option-parsers.js";
import { runAction } from "../run-action.js";
import { addSchemaFileOption, type SchemaFileFlags } from "../schema/schema-options.js";

/** The options of the command, as commander parses them. */
export interface IngressFlags extends ConnectionFlags, SchemaFileFlags {
  readonly listen: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly reflection: boolean;
  readonly reflectionTimeout: number;
  readonly maxMessageSize?: number;
  readonly keepaliveTime: number;
  readonly keepaliveTimeout: number;
}

/** The `ingress` command. */
export function ingressCommand(): Command {
  const command = new Command("ingress")
    .summary("serve gRPC, gRPC-Web and Connect clients, calling devices over MQTT")
    .description(
      "Listen for gRPC (HTTP/2), gRPC-Web and Connect clients (grpcurl, buf curl, any gRPC stub) and " +
        "carry each call to a device over MQTT; the device is named by the request header " +
        "mqrpc-server-id (see @mqrpc/gateway). Runs until SIGINT or SIGTERM, then exits 0",
    )
    .option("--listen <host:port>", "address to listen on (port 0: a free one)", "127.0.0.1:0")
    .option("--tls-cert <file>", "serve TLS with this PEM certificate (with --tls-key)")
    .option("--tls-key <file>", "PEM private key of --tls-cert")
    .option(
      "--no-reflection",
      "do not ask devices for their schema by reflection (JSON and Connect calls need --schema then)",
    )
    .addOption(
      new Option("--reflection-timeout <duration>", "deadline of a reflection call to a device")
        .argParser(parseDuration)
        .default(10_000, "10s"),
    )
    .addOption(
      new Option(
        "--max-message-size <bytes>",
        "largest message forwarded: a client's request, a device's response (e.g. 16MiB)",
      )
        .argParser(parseByteSize)
        .default(undefined, "4MiB"),
    )
    .addOption(
      new Option(
        "--keepalive-time <duration>",
        "PING each HTTP/2 client this often; one that does not answer within --keepalive-timeout is disconnected and its calls cancelled",
      )
        .argParser(parseDuration)
        .default(2 * 60 * 60 * 1000, "2h"),
    )
    .addOption(
      new Option(
        "--keepalive-timeout <duration>",
        "how long a client has to answer a keepalive PING",
      )
        .argParser(parseDuration)
        .default(20_000, "20s"),
    );
  addSchemaFileOption(command);
  addConnectionOptions(command);
  return command
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc ingress --listen 127.0.0.1:8080
  $ grpcurl -plaintext -H 'mqrpc-server-id: sensor-box.7' 127.0.0.1:8080 \\
      mqrpc.example.device.v1.DeviceService/GetInfo
  $ mqrpc ingress --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem --schema proto/`,
    )
    .action(
      runAction(async (flags: IngressFlags) => (await import("./ingress-run.js")).ingress(flags)),
    );
}
