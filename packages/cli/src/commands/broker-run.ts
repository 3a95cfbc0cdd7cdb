/** What `mqrpc broker` does (its options: broker.ts). */
import { startEmbeddedBroker } from "@mqrpc/runtime";
import { EXIT_OK } from "../exit-codes.js";
import { logEvent } from "../output.js";
import { listenForStop, untilAborted } from "../stop-signal.js";
import type { BrokerFlags } from "./broker.js";

/** Runs the embedded broker until SIGINT or SIGTERM, logging its URLs and its stop; resolves to the exit code. */
export async function broker(flags: BrokerFlags): Promise<number> {
  const stop = listenForStop();
  try {
    const running = await startEmbeddedBroker({
      port: flags.port,
      host: flags.host,
      ...(flags.wsPort !== undefined ? { websocket: { port: flags.wsPort } } : {}),
    });
    logEvent("listening", running.url);
    if (running.wsUrl !== undefined) logEvent("listening", running.wsUrl);
    await untilAborted(stop.signal);
    logEvent("stopping", `on ${stop.received() ?? "signal"}`);
    await running.close();
    logEvent("stopped", running.url);
    return EXIT_OK;
  } finally {
    stop.dispose();
  }
}
