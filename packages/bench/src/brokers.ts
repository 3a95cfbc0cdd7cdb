/**
 * The brokers the per-broker rows run on: embedded Aedes in a peer
 * process, and Mosquitto 2 (`set_tcp_nodelay true`, `$SYS` every second for
 * the scale rows' counts) when installed.
 */
import { mosquittoAvailable, startMosquitto } from "../../../test/brokers/mosquitto.js";
import { startPeer } from "./peers.js";

/** A running broker. */
export interface Broker {
  /** `aedes` or `mosquitto`. */
  readonly name: string;
  /** `mqtt://127.0.0.1:<port>` */
  readonly url: string;
  /** The broker's process id: the Aedes peer, or Mosquitto itself. */
  readonly pid: number;
  stop(): Promise<void>;
}

/** Starts the brokers `pick` selects by name, Aedes first; Mosquitto only when installed. */
export async function startBrokers(pick: (name: string) => boolean): Promise<Broker[]> {
  const brokers: Broker[] = [];
  try {
    if (pick("aedes")) {
      const aedes = await startPeer("aedes");
      brokers.push({
        name: "aedes",
        url: aedes.info.url as string,
        pid: aedes.pid,
        stop: () => aedes.stop(),
      });
    }
    if (pick("mosquitto") && mosquittoAvailable()) {
      // $SYS every second: the scale rows count connections and subscriptions there.
      const mosquitto = await startMosquitto({ extraConfig: "sys_interval 1" });
      brokers.push({
        name: "mosquitto",
        url: mosquitto.url,
        get pid() {
          return mosquitto.pid;
        },
        stop: () => mosquitto.stop(),
      });
    }
  } catch (e) {
    for (const broker of brokers) await broker.stop();
    throw e;
  }
  return brokers;
}
