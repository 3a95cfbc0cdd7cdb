/**
 * What `npm run demo:web` runs: the dashboard built and served on a local
 * web server, two simulated devices (the example device's DeviceService),
 * and the embedded broker with its WebSocket listener for the page, unless
 * the caller names a broker of its own. The browser test of the dashboard
 * starts the same thing.
 */
import {
  createMqttServer,
  type EmbeddedBroker,
  type MqttServer,
  startEmbeddedBroker,
} from "@mqrpc/runtime";
import type * as esbuild from "esbuild";
import { createDeviceImpl } from "../../example-device/src/device-service.js";
import { registerDeviceService } from "../../example-device/src/gen/mqrpc/example/device/v1/device_mqrpc.js";
import { buildDashboard } from "./build.js";
import { serveDashboard } from "./static-server.js";

/** The devices the demo serves. */
export const DEMO_DEVICE_IDS: readonly string[] = ["sensor-box.7", "sensor-box.8"];

/** Options of {@link startWebDemo}. */
export interface WebDemoOptions {
  /**
   * A broker of your own: `url` for the devices (Node: `mqtt://`, `ws://`…),
   * `wsUrl` for the page (`ws://` or `wss://`). Default: the embedded broker
   * with `websocket: true`.
   */
  readonly broker?: { readonly url: string; readonly wsUrl: string };
  /** Port of the web server; default 0 (a free one). */
  readonly port?: number;
  /** Where to build the dashboard; default packages/example-web/dist. */
  readonly outdir?: string;
  /** More esbuild plugins for the build. */
  readonly plugins?: readonly esbuild.Plugin[];
}

/** A running web demo. */
export interface WebDemo {
  /** The dashboard's URL, to open in a browser. */
  readonly url: string;
  /** The broker URL the page connects to. */
  readonly wsUrl: string;
  /** The broker URL the devices connect to. */
  readonly brokerUrl: string;
  /** Whether the broker is the embedded one. */
  readonly embeddedBroker: boolean;
  readonly deviceIds: readonly string[];
  /** Stops the web server, the devices and the embedded broker. */
  close(): Promise<void>;
}

/** Builds the dashboard and starts broker, devices and web server. */
export async function startWebDemo(options: WebDemoOptions = {}): Promise<WebDemo> {
  const root = await buildDashboard({
    ...(options.outdir === undefined ? {} : { outdir: options.outdir }),
    ...(options.plugins === undefined ? {} : { plugins: options.plugins }),
  });
  const stops: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const stop of stops.splice(0).reverse()) await stop();
  };
  try {
    let embedded: EmbeddedBroker | undefined;
    if (options.broker === undefined) {
      embedded = await startEmbeddedBroker({ websocket: true });
      stops.push(() => embedded!.close());
    }
    const brokerUrl = options.broker?.url ?? embedded!.url;
    const wsUrl = options.broker?.wsUrl ?? embedded!.wsUrl!;
    for (const deviceId of DEMO_DEVICE_IDS) {
      const server: MqttServer = await createMqttServer({
        mqtt: brokerUrl,
        serverId: deviceId,
        // A dashboard's telemetry stream never ends by itself: on close,
        // give calls in progress half a second, not the default 5 s.
        shutdownTimeoutMs: 500,
        routes: (s) => registerDeviceService(s, createDeviceImpl({ deviceId })),
      });
      stops.push(() => server.close());
    }
    const web = await serveDashboard({
      root,
      brokerUrl: wsUrl,
      ...(options.port === undefined ? {} : { port: options.port }),
    });
    stops.push(() => web.close());
    return {
      url: web.url,
      wsUrl,
      brokerUrl,
      embeddedBroker: embedded !== undefined,
      deviceIds: DEMO_DEVICE_IDS,
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
