/**
 * An edge Mosquitto bridged to a cloud Mosquitto, started by the tests on
 * free ports: the classic IoT topology, a broker on the gateway box that
 * forwards the mqrpc topic tree to the central broker and back.
 *
 * The bridge's `connection` block is read from docs/DEPLOYMENT.md (the
 * fenced block after the marker line naming this file) and used as it is,
 * with only its `address` pointed at this run's cloud broker (through a
 * {@link FaultProxy}, so that a test can drop the bridge's link) and,
 * where a test asks, its `bridge_protocol_version` changed. So the tests run
 * the configuration the docs give.
 *
 * `untilBridged()` waits for the bridge's own state notification on the edge
 * broker (`$SYS/broker/connection/<remote_clientid>/state`, retained, "1"
 * while connected): an event, not a sleep.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { connectAsync, type MqttClient } from "mqtt";
import { FaultProxy } from "../support/fault-proxy.js";
import { type MosquittoBroker, type MosquittoOptions, startMosquitto } from "./mosquitto.js";

const DEPLOYMENT = fileURLToPath(new URL("../../docs/DEPLOYMENT.md", import.meta.url));
/** The line before the block in docs/DEPLOYMENT.md. */
const MARKER = "<!-- test/brokers/mosquitto-bridge.ts runs this block -->";

/** Options of {@link startMosquittoBridge}. */
export interface MosquittoBridgeOptions {
  /** The bridge's protocol; the docs' (MQTT 3.1.1) by default. */
  readonly bridgeProtocol?: "mqttv311" | "mqttv50";
  /** Options of the edge broker (persistence, extra lines); the bridge block is appended. */
  readonly edge?: Omit<MosquittoOptions, "port">;
  /** Options of the cloud broker. */
  readonly cloud?: Omit<MosquittoOptions, "port">;
  /**
   * Connect the bridge straight to the cloud broker, without the fault
   * proxy (for measurements: the proxy adds a hop in this process).
   */
  readonly direct?: boolean;
}

/** A running edge and cloud broker with the bridge between them. */
export interface MosquittoBridge {
  /** The gateway's broker, which holds the bridge. */
  readonly edge: MosquittoBroker;
  /** The central broker. */
  readonly cloud: MosquittoBroker;
  /** The TCP path of the bridge, from the edge broker to the cloud broker; undefined with `direct`. */
  readonly link: FaultProxy | undefined;
  /** The bridge block as the edge broker runs it. */
  readonly bridgeConfig: string;
  /** The bridge's client id on the cloud broker (`remote_clientid`). */
  readonly remoteClientId: string;
  /** Resolves once the bridge is connected (now, or when it next connects). */
  untilBridged(): Promise<void>;
  /** Resolves once the edge broker says the bridge is down. */
  untilUnbridged(): Promise<void>;
  /** Stops both brokers and the link. Idempotent. */
  stop(): Promise<void>;
}

/** The bridge block of docs/DEPLOYMENT.md, as written there. */
export function documentedBridgeConfig(): string {
  const text = readFileSync(DEPLOYMENT, "utf8");
  const at = text.indexOf(MARKER);
  if (at < 0) throw new Error(`docs/DEPLOYMENT.md has no line "${MARKER}"`);
  const block = /```[a-z]*\n([\s\S]*?)```/.exec(text.slice(at + MARKER.length));
  if (block?.[1] === undefined)
    throw new Error(`no fenced block after "${MARKER}" in docs/DEPLOYMENT.md`);
  return block[1];
}

/**
 * The documented block with `address` set to `host:port` and, if given,
 * `bridge_protocol_version` replaced.
 */
export function bridgeConfigFor(
  address: string,
  protocol?: MosquittoBridgeOptions["bridgeProtocol"],
): string {
  let config = documentedBridgeConfig();
  const replace = (key: string, value: string) => {
    const line = new RegExp(`^${key} .*$`, "m");
    if (!line.test(config)) throw new Error(`the documented bridge block has no "${key}" line`);
    config = config.replace(line, `${key} ${value}`);
  };
  replace("address", address);
  if (protocol !== undefined) replace("bridge_protocol_version", protocol);
  return config;
}

/** Starts the cloud broker, the link and the edge broker; resolves once the bridge is connected. */
export async function startMosquittoBridge(
  options: MosquittoBridgeOptions = {},
): Promise<MosquittoBridge> {
  const stops: Array<() => Promise<unknown>> = [];
  const stopAll = async () => {
    while (stops.length > 0)
      await stops
        .pop()?.()
        .catch(() => {});
  };
  try {
    const cloud = await startMosquitto(options.cloud);
    stops.push(() => cloud.stop());
    const link = options.direct === true ? undefined : await FaultProxy.start(cloud.url);
    if (link !== undefined) stops.push(() => link.close());
    const bridgeConfig = bridgeConfigFor(
      `127.0.0.1:${link?.port ?? cloud.port}`,
      options.bridgeProtocol,
    );
    const remoteClientId = /^remote_clientid (\S+)$/m.exec(bridgeConfig)?.[1];
    if (remoteClientId === undefined) {
      throw new Error("the documented bridge block has no remote_clientid line");
    }
    const extra = options.edge?.extraConfig;
    const edge = await startMosquitto({
      ...options.edge,
      // The bridge block must come last: every line after `connection`
      // belongs to the bridge.
      extraConfig: [extra ?? "", bridgeConfig].join("\n"),
    });
    stops.push(() => edge.stop());
    const state = await BridgeState.watch(edge.url, remoteClientId);
    stops.push(() => state.close());
    let stopped = false;
    const bridge: MosquittoBridge = {
      edge,
      cloud,
      link,
      bridgeConfig,
      remoteClientId,
      untilBridged: () => state.until(true),
      untilUnbridged: () => state.until(false),
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopAll();
      },
    };
    await bridge.untilBridged();
    return bridge;
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** Follows the bridge's state notification on the edge broker (reconnecting after an edge restart). */
class BridgeState {
  private connected: boolean | undefined;
  private readonly waiters = new Set<() => void>();

  private constructor(private readonly client: MqttClient) {}

  static async watch(edgeUrl: string, remoteClientId: string): Promise<BridgeState> {
    const client = await connectAsync(edgeUrl, { reconnectPeriod: 100 });
    const state = new BridgeState(client);
    const topic = `$SYS/broker/connection/${remoteClientId}/state`;
    client.on("message", (t, payload) => {
      if (t !== topic) return;
      state.connected = payload.toString() === "1";
      for (const wake of [...state.waiters]) wake();
    });
    // While the edge broker is down (a restart) its state is unknown; after
    // the restart its retained state starts over: ask again.
    client.on("close", () => {
      state.connected = undefined;
    });
    client.on("connect", (connack) => {
      if (!connack.sessionPresent) client.subscribe(topic, { qos: 1 });
    });
    await client.subscribeAsync(topic, { qos: 1 });
    return state;
  }

  until(connected: boolean): Promise<void> {
    if (this.connected === connected) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.connected !== connected) return;
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
    });
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}
