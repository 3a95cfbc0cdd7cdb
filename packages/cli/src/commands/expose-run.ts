/** What `mqrpc expose` does (its options: expose.ts). */
import { exposePort, type MqttSocket, MqttSocketError } from "@mqrpc/net-bridge";
import type { InvalidArgumentError } from "commander";
import { logBrokerChanges } from "../broker-changes.js";
import { probeBroker } from "../broker-probe.js";
import { resolveConnection } from "../connection.js";
import { CliError, EXIT_OK, EXIT_USAGE } from "../exit-codes.js";
import { flagError } from "../option-errors.js";
import { parseHostPort } from "../option-parsers.js";
import { logEvent, serverEventLogger } from "../output.js";
import {
  listenForStop,
  takenOverError,
  unlessStopped,
  untilStopOrTakeover,
} from "../stop-signal.js";
import type { ExposeFlags } from "./expose.js";

/**
 * Serves the virtual port until SIGINT or SIGTERM, logging its start, its
 * connections, those the caller's side reset, the broker connection's
 * changes and its stop.
 *
 * @throws CliError naming the flag (exit 2) for a value `exposePort` refuses.
 */
export async function expose(flags: ExposeFlags): Promise<number> {
  const connection = resolveConnection(flags);
  let target: { host: string; port: number };
  try {
    target = parseHostPort(flags.target, "127.0.0.1", 1);
  } catch (e) {
    throw new CliError(
      `--target "${flags.target}": ${(e as InvalidArgumentError).message}`,
      EXIT_USAGE,
    );
  }
  const stop = listenForStop();
  try {
    const unreachable = await probeBroker(connection, stop.signal);
    if (unreachable !== undefined) logEvent("warn", `${unreachable}; waiting for it`);
    const running = await unlessStopped(
      exposePort({
        mqtt: connection.options,
        topicPrefix: connection.topicPrefix,
        serverId: flags.serverId,
        port: flags.port,
        target,
        shutdownTimeoutMs: flags.shutdownTimeout,
        logger: serverEventLogger(),
      }).catch((e: unknown) => {
        throw flagError(e, {
          serverId: "--server-id",
          port: "--port",
          "target.port": `--target "${flags.target}": port`,
          shutdownTimeoutMs: "--shutdown-timeout",
        });
      }),
      stop.signal,
      (e) => e.close(),
    );
    running.listener.on("connection", (socket: MqttSocket) => {
      logEvent("connection", `${flags.serverId} port ${flags.port} (${running.connections} open)`);
      // A reset from the MQTT side (the caller reset it, went silent or
      // away) comes as an MqttSocketError; the target's own errors do not.
      socket.on("error", (e: Error) => {
        if (!(e instanceof MqttSocketError) || stop.signal.aborted) return;
        logEvent(
          "reset",
          `${flags.serverId} port ${flags.port} connection from ${socket.remoteAddress ?? "?"}: ${e.message}`,
        );
      });
    });
    running.listener.on("error", (e: Error) => logEvent("error", e.message));
    logBrokerChanges(running.listener.server.mqttClient, connection.url);
    const instance = running.listener.server.instanceId;
    logEvent(
      "online",
      `${flags.serverId} port ${flags.port} -> ${target.host}:${target.port} (instance ${instance}) on ${connection.url}`,
    );
    const takenOver = await untilStopOrTakeover(stop.signal, running.listener.server);
    if (takenOver !== undefined) {
      await running.close();
      throw takenOverError(flags.serverId, takenOver);
    }
    logEvent(
      "stopping",
      `on ${stop.received() ?? "signal"} (${running.connections} connections open)`,
    );
    await running.close();
    logEvent("offline", `${flags.serverId} port ${flags.port}`);
    return EXIT_OK;
  } catch (e) {
    if (stop.received() !== undefined) return EXIT_OK;
    throw e;
  } finally {
    stop.dispose();
  }
}
