/**
 * The net-bridge rows of `npm run bench` (issue 14, `--only=bridge`), on one
 * broker, side by side:
 *
 * - bulk: 64 MiB written to a bridged socket (`connectMqtt` → `listenMqtt`)
 *   until the device side has read it all, next to the raw MQTT.js publish
 *   rate of the same bytes (QoS 1 publishes of the bridge's message size,
 *   all at once, until the subscriber has them all; target: bridge ≥ 0.7 ×
 *   raw) and to direct loopback TCP (reported); medians of ROUNDS rounds
 *   after a warm-up;
 * - gRPC unary: a grpc-js server behind `listenMqtt` called by a
 *   Connect-node gRPC client through `connectMqtt`, next to a native mqrpc
 *   unary call of the same method and message, measured side by side like
 *   the other unary rows (the p50 ratio is reported; the message-level path
 *   is expected to win).
 *
 * Layout as in main.ts: the device side in a peer process (bridge-peer.ts),
 * the measuring client here.
 */
import { once } from "node:events";
import { connect as tcpConnect } from "node:net";
import type { Duplex } from "node:stream";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { connectMqtt } from "@mqrpc/net-bridge";
import { createMqttTransport } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import type { BridgePeerConfig } from "./bridge-peer.js";
import { ECHO_BYTES } from "./echo-service.js";
import {
  LATENCY_CALLS,
  type MeasuredProcess,
  measureSideBySide,
  type Pair,
  rounds,
} from "./measure.js";
import { startPeer } from "./peers.js";
import { CONTENDER, type Results } from "./report.js";

const MiB = 1024 * 1024;
/** Bytes of one bulk transfer. */
export const BULK_BYTES = 64 * MiB;
/** Bytes per raw MQTT.js publish: what one bridge message carries at the default 128 KiB publish size. */
export const RAW_PUBLISH_BYTES = 128 * 1024 - 2048;
/** Bytes per write to the bridged socket and the TCP socket. */
export const WRITE_BYTES = 64 * 1024;
const DEVICE = "bench-bridge";
const BULK_PORT = 9;
const GRPC_PORT = 50051;
const RAW_TOPIC = "bench/raw/bulk";

/** Writes BULK_BYTES in WRITE_BYTES writes with backpressure, ends, and reads the sink's answer; MiB/s. */
async function bulkOver(socket: Duplex): Promise<number> {
  const block = Buffer.alloc(WRITE_BYTES, 0x5a);
  const answer = (async () => {
    let text = "";
    for await (const chunk of socket) text += chunk.toString();
    return text;
  })();
  const started = performance.now();
  for (let sent = 0; sent < BULK_BYTES; sent += WRITE_BYTES) {
    if (!socket.write(block)) await once(socket, "drain");
  }
  socket.end();
  const text = await answer;
  const seconds = (performance.now() - started) / 1000;
  if (text !== `done ${BULK_BYTES}`) throw new Error(`the sink answered "${text}"`);
  return BULK_BYTES / MiB / seconds;
}

/** The raw MQTT.js reference: BULK_BYTES as QoS 1 publishes, all at once, until the sink has them all; MiB/s. */
async function rawBulk(url: string): Promise<number> {
  const publisher = await connectAsync(url, { clientId: "bench-bridge-raw-pub" });
  (publisher.stream as unknown as { setNoDelay(b: boolean): void }).setNoDelay(true);
  try {
    await publisher.subscribeAsync(`${RAW_TOPIC}/done`, { qos: 1 });
    const chunk = Buffer.alloc(RAW_PUBLISH_BYTES, 0x5a);
    return await rounds(async () => {
      const done = new Promise<Buffer>((resolve) =>
        publisher.once("message", (_topic, payload) => resolve(payload)),
      );
      const started = performance.now();
      let sent = 0;
      while (sent < BULK_BYTES) {
        const n = Math.min(RAW_PUBLISH_BYTES, BULK_BYTES - sent);
        publisher.publish(RAW_TOPIC, n === RAW_PUBLISH_BYTES ? chunk : chunk.subarray(0, n), {
          qos: 1,
        });
        sent += n;
      }
      publisher.publish(`${RAW_TOPIC}/end`, "", { qos: 1 });
      const payload = await done;
      const seconds = (performance.now() - started) / 1000;
      if (payload.toString() !== `done ${BULK_BYTES}`) {
        throw new Error(`the raw sink answered "${payload.toString()}"`);
      }
      return BULK_BYTES / MiB / seconds;
    });
  } finally {
    await publisher.endAsync();
  }
}

/** gRPC over the bridge: a Connect-node gRPC client whose HTTP/2 connection is `connectMqtt`. */
function bridgeGrpcPair(url: string): Pair {
  const sessions = new Http2SessionManager(
    "http://device:50051",
    {},
    {
      createConnection: () =>
        connectMqtt({
          mqtt: { url, clientId: "bench-bridge-caller" },
          serverId: DEVICE,
          port: GRPC_PORT,
        }),
    },
  );
  const client = createClient(
    TestService,
    createGrpcTransport({ baseUrl: "http://device:50051", sessionManager: sessions }),
  );
  const body = new Uint8Array(ECHO_BYTES);
  return {
    call: () => client.unaryCall({ payload: { body } }),
    close: async () => {
      sessions.abort();
    },
  };
}

/** Native mqrpc to the device process's own mqrpc server: the same method, message and process. */
function nativePair(url: string): Pair {
  const transport = createMqttTransport({
    mqtt: { url, clientId: "bench-bridge-native-caller" },
    serverId: `${DEVICE}-native`,
  });
  const client = createClient(TestService, transport);
  const body = new Uint8Array(ECHO_BYTES);
  return {
    call: () => client.unaryCall({ payload: { body } }),
    close: () => transport.close(),
  };
}

/**
 * Runs the net-bridge rows on the broker at `url` (the device side in a
 * peer process) and stores them in `entry.bridge`. `pick` selects the
 * contenders by key: `bridge`, `raw`, `tcp` (bulk), `bridge-grpc`, `mqrpc`
 * (unary). The unary rows also count the CPU time per call of `shared`
 * (the broker) and of the device process.
 */
export async function netBridgeScenarios(
  url: string,
  entry: Results["brokers"][number],
  pick: (contender: string) => boolean,
  shared: readonly MeasuredProcess[] = [],
): Promise<void> {
  const config: BridgePeerConfig = {
    url,
    serverId: DEVICE,
    bulkPort: BULK_PORT,
    grpcPort: GRPC_PORT,
    rawTopic: RAW_TOPIC,
  };
  const device = await startPeer("device", config, "bridge-peer.ts");
  const bridge: NonNullable<Results["brokers"][number]["bridge"]> = { bulk: [], unary: [] };
  entry.bridge = bridge;
  const bulk = (contender: string, mebibytesPerSecond: number) => {
    bridge.bulk.push({ contender, mebibytesPerSecond });
    console.log(`  64 MiB, ${contender}: ${mebibytesPerSecond.toFixed(1)} MiB/s`);
  };
  try {
    if (pick("bridge")) {
      // Timed from 'connect', as the TCP row and the raw publisher's connected client are.
      const caller = { url, clientId: "bench-bridge-caller" };
      bulk(
        CONTENDER.bridgeBulk,
        await rounds(async () => {
          const socket = connectMqtt({ mqtt: caller, serverId: DEVICE, port: BULK_PORT });
          await once(socket, "connect");
          return bulkOver(socket);
        }),
      );
    }
    if (pick("raw")) bulk(CONTENDER.rawBulk, await rawBulk(url));
    if (pick("tcp")) {
      bulk(
        CONTENDER.tcpBulk,
        await rounds(async () => {
          const socket = tcpConnect(device.info.tcpPort as number, "127.0.0.1");
          await once(socket, "connect");
          return bulkOver(socket);
        }),
      );
    }
    const unary = [
      { key: "bridge-grpc", name: CONTENDER.bridgeGrpc, make: async () => bridgeGrpcPair(url) },
      { key: "mqrpc", name: CONTENDER.mqrpc, make: async () => nativePair(url) },
    ];
    bridge.unary = await measureSideBySide(
      unary.filter((c) => pick(c.key)).map((c) => ({ ...c, calls: LATENCY_CALLS })),
      [...shared, { role: "device", pid: device.pid }],
    );
  } finally {
    await device.stop();
  }
}
