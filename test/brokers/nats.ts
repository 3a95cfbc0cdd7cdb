/**
 * NATS server in MQTT mode (needs JetStream and a server name), started by
 * the tests on free ports with generated config. Speaks MQTT 3.1.1 only.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { binaryPresent, startBrokerProcess } from "./broker-process.js";
import { freePort } from "./free-port.js";

export const NATS_SERVER = "/usr/sbin/nats-server";

export function natsAvailable(): boolean {
  return binaryPresent(NATS_SERVER);
}

/** A running NATS server with its MQTT listener. */
export interface NatsBroker {
  readonly url: string;
  stop(): Promise<void>;
}

export async function startNats(): Promise<NatsBroker> {
  const dir = mkdtempSync(join(tmpdir(), "mqrpc-nats-"));
  const [port, mqttPort] = [await freePort(), await freePort()];
  const conf = join(dir, "nats.conf");
  writeFileSync(
    conf,
    [
      `listen: 127.0.0.1:${port}`,
      `server_name: mqrpc_test_${mqttPort}`,
      `jetstream { store_dir: "${join(dir, "js")}" }`,
      `mqtt { listen: 127.0.0.1:${mqttPort} }`,
      "",
    ].join("\n"),
  );
  const proc = await startBrokerProcess(NATS_SERVER, ["-c", conf], mqttPort);
  return {
    url: `mqtt://127.0.0.1:${mqttPort}`,
    async stop() {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
