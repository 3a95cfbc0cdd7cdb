/**
 * rpc-fixture's startServer/startTransport with bounded teardown: the tests
 * that use these put servers into states where close() may hang on a
 * runtime that gets them wrong (a handler blocked on flow control, a link
 * that stalls), and a hung close must fail the test, not the whole run.
 */
import {
  createMqttServer,
  createMqttTransport,
  type MqttServer,
  type MqttServerOptions,
  type MqttTransport,
  type MqttTransportOptions,
} from "@mqrpc/runtime";
import type { BrokerTarget } from "../brokers/targets.js";
import { within } from "./outcome.js";
import { type Closer, mqttOptions } from "./rpc-fixture.js";

/** How long teardown waits for one close. */
export const CLOSE_BOUND_MS = 15_000;

/** A server registered in `closer` with a bounded close; warnings are kept, not printed. */
export async function boundedServer(
  closer: Closer,
  target: BrokerTarget,
  options: Partial<MqttServerOptions> & { serverId: string },
  warnings: string[] = [],
): Promise<MqttServer> {
  const server = await createMqttServer({
    mqtt: mqttOptions(target),
    logger: { warn: (m) => warnings.push(m) },
    ...options,
  });
  return closer.add(server, (s) => within(s.close(), CLOSE_BOUND_MS, "server.close()"));
}

/** A transport registered in `closer` with a bounded close. */
export function boundedTransport(
  closer: Closer,
  target: BrokerTarget,
  options: Partial<MqttTransportOptions> & { serverId: string },
): MqttTransport {
  const transport = createMqttTransport({ mqtt: mqttOptions(target), ...options });
  return closer.add(transport, (t) => within(t.close(), CLOSE_BOUND_MS, "transport.close()"));
}

/** Waits `ms`: only where time itself is the subject (a stall, a pause, a grace period). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
