/** What `mqrpc forward` does (its options: forward.ts). */
import { forwardPort } from "@mqrpc/net-bridge";
import type { InvalidArgumentError } from "commander";
import type { MqttClient } from "mqtt";
import { logBrokerChanges } from "../broker-changes.js";
import { probeBroker } from "../broker-probe.js";
import { endMqtt, openMqtt, resolveConnection } from "../connection.js";
import { CliError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "../exit-codes.js";
import { flagError } from "../option-errors.js";
import { parseHostPort } from "../option-parsers.js";
import { logEvent } from "../output.js";
import { listenForStop, unlessStopped, untilAborted } from "../stop-signal.js";
import type { ForwardFlags } from "./forward.js";

/**
 * Runs a port forward until SIGINT or SIGTERM, logging where it listens,
 * the broker connection's changes and its stop.
 *
 * @throws CliError naming the flag: exit 2 for a value `forwardPort`
 *   refuses, 1 when `--listen` cannot be listened on.
 */
export async function forward(flags: ForwardFlags): Promise<number> {
  const connection = resolveConnection(flags);
  let listen: { host: string; port: number };
  try {
    listen = parseHostPort(flags.listen, "127.0.0.1");
  } catch (e) {
    throw new CliError(
      `--listen "${flags.listen}": ${(e as InvalidArgumentError).message}`,
      EXIT_USAGE,
    );
  }
  const stop = listenForStop();
  // The caller side needs no last will: a client of the CLI's own, whose
  // connection changes are logged, carries every forwarded connection.
  let client: MqttClient | undefined;
  try {
    const unreachable = await probeBroker(connection, stop.signal);
    if (unreachable !== undefined) logEvent("warn", `${unreachable}; waiting for it`);
    client = openMqtt(connection);
    logBrokerChanges(client, connection.url);
    const running = await unlessStopped(
      forwardPort({
        mqtt: client,
        topicPrefix: connection.topicPrefix,
        serverId: flags.serverId,
        port: flags.port,
        listen,
        ...(flags.waitForServer === true ? { waitForServer: true } : {}),
        ...(flags.connectionTimeout !== undefined
          ? { connectTimeoutMs: flags.connectionTimeout }
          : {}),
      }).catch((e: unknown) => {
        if (e instanceof Error && (e as NodeJS.ErrnoException).syscall === "listen") {
          throw new CliError(`--listen "${flags.listen}": ${e.message}`, EXIT_FAILURE, {
            cause: e,
          });
        }
        throw flagError(e, {
          serverId: "--server-id",
          port: "--port",
          connectTimeoutMs: "--connection-timeout",
        });
      }),
      stop.signal,
      (f) => f.close(),
    );
    const { host, port } = running.address;
    logEvent(
      "listening",
      `${host.includes(":") ? `[${host}]` : host}:${port} -> ${flags.serverId} port ${flags.port}`,
    );
    await untilAborted(stop.signal);
    logEvent(
      "stopping",
      `on ${stop.received() ?? "signal"} (${running.connections} connections open)`,
    );
    await running.close();
    logEvent("stopped", `${host}:${port}`);
    return EXIT_OK;
  } catch (e) {
    if (stop.received() !== undefined) return EXIT_OK;
    throw e;
  } finally {
    if (client !== undefined) await endMqtt(client);
    stop.dispose();
  }
}
