/** What `mqrpc forward` does (its options: forward.ts). */
import { forwardPort } from "@mqrpc/net-bridge";
import type { InvalidArgumentError } from "commander";
import { probeBroker } from "../broker-probe.js";
import { resolveConnection } from "../connection.js";
import { CliError, EXIT_OK, EXIT_USAGE } from "../exit-codes.js";
import { parseHostPort } from "../option-parsers.js";
import { logEvent } from "../output.js";
import { listenForStop, unlessStopped, untilAborted } from "../stop-signal.js";
import type { ForwardFlags } from "./forward.js";

/** Runs a port forward until SIGINT or SIGTERM, logging where it listens and its stop. */
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
  try {
    const unreachable = await probeBroker(connection, stop.signal);
    if (unreachable !== undefined) logEvent("warn", `${unreachable}; waiting for it`);
    const running = await unlessStopped(
      forwardPort({
        mqtt: connection.options,
        topicPrefix: connection.topicPrefix,
        serverId: flags.serverId,
        port: flags.port,
        listen,
        ...(flags.waitForServer === true ? { waitForServer: true } : {}),
        ...(flags.connectionTimeout !== undefined
          ? { connectTimeoutMs: flags.connectionTimeout }
          : {}),
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
    stop.dispose();
  }
}
