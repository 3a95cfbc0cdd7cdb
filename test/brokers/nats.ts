/**
 * NATS server in MQTT mode, started by the tests on free ports with
 * generated config. MQTT needs JetStream (sessions, QoS 1, retained messages)
 * and JetStream needs a server name. Speaks MQTT 3.1.1 only, and rejects
 * topics with `.` or spaces (they map onto NATS subject tokens).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { findBinary, makeTempDir, onFreePorts, startBrokerProcess } from "./broker-process.js";
import { kindSelected } from "./selection.js";

/** Options for {@link startNats}. */
export interface NatsOptions {
  /** More configuration lines (NATS config syntax), appended. */
  readonly extraConfig?: string;
}

/** A running NATS server with its MQTT listener. */
export interface NatsBroker {
  /** `mqtt://127.0.0.1:<mqttPort>` */
  readonly url: string;
  /** The MQTT port. */
  readonly port: number;
  /** The NATS client port (for `nats` tooling). */
  readonly natsPort: number;
  readonly pid: number;
  /** SIGTERM, wait for the exit, remove the temp dir (JetStream store included). Idempotent. */
  stop(): Promise<void>;
}

/** The nats-server binary: `$MQRPC_NATS_SERVER`, else on PATH or in /usr/sbin. */
export function natsPath(): string | undefined {
  return findBinary("nats-server", "MQRPC_NATS_SERVER");
}

/** Whether tests may use NATS: nats-server is installed and `MQRPC_BROKERS` does not leave it out. */
export function natsAvailable(): boolean {
  return natsPath() !== undefined && kindSelected("nats");
}

export async function startNats(options: NatsOptions = {}): Promise<NatsBroker> {
  const binary = natsPath();
  if (binary === undefined) {
    throw new Error(
      "nats-server is not installed (apt-get install nats-server, or set MQRPC_NATS_SERVER)",
    );
  }
  const dir = makeTempDir("mqrpc-nats-");
  try {
    const conf = join(dir.path, "nats.conf");
    return await onFreePorts(2, undefined, async ([natsPort = 0, mqttPort = 0]) => {
      writeFileSync(
        conf,
        [
          `listen: 127.0.0.1:${natsPort}`,
          `server_name: mqrpc_test_${mqttPort}`,
          `jetstream { store_dir: ${JSON.stringify(join(dir.path, "jetstream"))} }`,
          `mqtt { listen: 127.0.0.1:${mqttPort} }`,
          options.extraConfig ?? "",
          "",
        ].join("\n"),
      );
      const proc = await startBrokerProcess({
        name: "nats-server",
        binary,
        args: ["-c", conf],
        ports: [natsPort, mqttPort],
        ready: /Server is ready/,
      });
      return {
        url: `mqtt://127.0.0.1:${mqttPort}`,
        port: mqttPort,
        natsPort,
        pid: proc.pid,
        async stop() {
          await proc.stop();
          dir.remove();
        },
      };
    });
  } catch (error) {
    dir.remove();
    throw error;
  }
}
