/**
 * The broker connection options every command takes (`--mqtt`,
 * `--topic-prefix`, TLS, `--username`, `--password-file`, `--mqtt-version`,
 * `--client-id`, `--connect-timeout`). Light to load: what they turn into is
 * connection.ts, loaded when a command runs.
 */
import { type Command, Option } from "commander";
import { parseDuration, parseMqttVersion } from "./option-parsers.js";

/** The broker URL when neither `--mqtt` nor `MQRPC_MQTT_URL` gives one. */
export const DEFAULT_MQTT_URL = "mqtt://localhost:1883";

/** The connection options as commander parses them. */
export interface ConnectionFlags {
  readonly mqtt: string;
  readonly topicPrefix: string;
  readonly cacert?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly insecure?: boolean;
  readonly username?: string;
  readonly passwordFile?: string;
  readonly mqttVersion: 4 | 5;
  readonly clientId?: string;
  readonly connectTimeout: number;
}

/** Adds the connection options to `command`. */
export function addConnectionOptions(command: Command): Command {
  return command
    .addOption(
      new Option("--mqtt <url>", "broker URL: mqtt://, mqtts://, ws:// or wss://")
        .env("MQRPC_MQTT_URL")
        .default(DEFAULT_MQTT_URL),
    )
    .addOption(
      new Option("--topic-prefix <prefix>", "first topic levels of every mqrpc topic")
        .env("MQRPC_TOPIC_PREFIX")
        .default("mqrpc"),
    )
    .option(
      "--cacert <file>",
      "PEM file of the CA certificates that verify the broker (mqtts://, wss://)",
    )
    .option("--cert <file>", "PEM client certificate for mutual TLS (with --key)")
    .option("--key <file>", "PEM private key of --cert")
    .option("-k, --insecure", "do not verify the broker's TLS certificate")
    .addOption(
      new Option(
        "--username <name>",
        "MQTT username; the client id too (so A-Z a-z 0-9 _ -) unless --client-id gives one",
      ).env("MQRPC_USERNAME"),
    )
    .addOption(
      new Option(
        "--password-file <file>",
        "file holding the MQTT password (one line); never on the command line",
      ).env("MQRPC_PASSWORD_FILE"),
    )
    .addOption(
      new Option("--mqtt-version <version>", "MQTT protocol version: 3 (3.1.1) or 5")
        .argParser(parseMqttVersion)
        .default(4 as const, "3"),
    )
    .option(
      "--client-id <id>",
      "MQTT client id (A-Z a-z 0-9 _ -); default: the username, else a random one",
    )
    .addOption(
      new Option("--connect-timeout <duration>", "how long to wait for the broker's CONNACK")
        .argParser(parseDuration)
        .default(10_000, "10s"),
    );
}
