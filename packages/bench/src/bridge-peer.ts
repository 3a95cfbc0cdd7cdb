/**
 * The device side of the net-bridge rows (net-bridge.ts), one process:
 * a bulk sink behind `listenMqtt` (virtual port 9), an unmodified grpc-js
 * server fed the bridge's sockets (virtual port 50051), a native mqrpc
 * server of the same method (server id `<serverId>-native`), a raw MQTT.js
 * sink and a loopback TCP sink. Each sink counts what it read and answers
 * `done <bytes>` at the sender's end. Started by peers.ts's `startPeer`
 * (role `device`), configured by argv, reports `{ ready, tcpPort }` over
 * IPC and exits on "stop".
 */
import { createServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { listenMqtt } from "@mqrpc/net-bridge";
import { createMqttServer } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { grpcDefinition } from "../../net-bridge/test/support/grpc-js-test-service.js";

/** The config of the `device` role (argv[3], JSON). */
export interface BridgePeerConfig {
  /** Broker URL. */
  readonly url: string;
  /** The server id the bridge listeners and, suffixed `-native`, the mqrpc server use. */
  readonly serverId: string;
  /** Virtual port of the bulk sink. */
  readonly bulkPort: number;
  /** Virtual port of the grpc-js server. */
  readonly grpcPort: number;
  /** Topic of the raw MQTT.js sink; `<topic>/end` marks the end, answered on `<topic>/done`. */
  readonly rawTopic: string;
}

const [role = "", configJson = "{}"] = process.argv.slice(2);
const config = JSON.parse(configJson) as BridgePeerConfig;
const send = (m: unknown) => process.send?.(m);
process.on("disconnect", () => process.exit(1));
let stop: () => Promise<void> = async () => {};
process.on("message", (m) => {
  if (m === "stop") void stop().then(() => process.exit(0));
  if (m === "rss") send({ rss: process.memoryUsage().rss });
});

async function device(): Promise<void> {
  const { url, serverId, rawTopic } = config;
  const mqtt = { url, clientId: "bench-bridge-device" };
  // Bulk sink: counts, answers with the count at the caller's end.
  const bulk = await listenMqtt({ mqtt, serverId, port: config.bulkPort });
  bulk.on("connection", (socket) => {
    let n = 0;
    socket.on("data", (d: Buffer) => {
      n += d.length;
    });
    socket.on("end", () => socket.end(`done ${n}`));
    socket.on("error", () => {});
  });
  // gRPC: an ordinary grpc-js server fed the bridge's sockets.
  const server = new grpc.Server();
  server.addService(grpcDefinition(TestService), {
    unaryCall(
      call: grpc.ServerUnaryCall<{ payload?: { body: Uint8Array } }, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) {
      callback(null, { payload: { body: call.request.payload?.body ?? new Uint8Array(0) } });
    },
  });
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const grpcPort = await listenMqtt({ mqtt, serverId, port: config.grpcPort });
  grpcPort.on("connection", (socket) => injector.injectConnection(socket));
  // Native mqrpc, the same method and messages.
  const native = await createMqttServer({
    mqtt: { url, clientId: "bench-bridge-native" },
    serverId: `${serverId}-native`,
    routes: (s) =>
      s.service(TestService, {
        unaryCall: (req) => ({ payload: { body: req.payload?.body ?? new Uint8Array(0) } }),
      }),
  });
  // Raw MQTT.js sink: counts publishes' bytes, answers at the marker.
  const raw = await connectAsync(url, { clientId: "bench-bridge-raw-sink" });
  (raw.stream as unknown as { setNoDelay(b: boolean): void }).setNoDelay(true);
  let rawBytes = 0;
  raw.on("message", (topic, payload) => {
    if (topic === rawTopic) rawBytes += payload.length;
    else if (topic === `${rawTopic}/end`) {
      raw.publish(`${rawTopic}/done`, `done ${rawBytes}`, { qos: 1 });
      rawBytes = 0;
    }
  });
  await raw.subscribeAsync([rawTopic, `${rawTopic}/end`], { qos: 1 });
  // TCP sink on loopback.
  const tcp = createServer((socket) => {
    let n = 0;
    socket.on("data", (d) => {
      n += d.length;
    });
    socket.on("end", () => socket.end(`done ${n}`));
  });
  await new Promise<void>((resolve) => tcp.listen(0, "127.0.0.1", resolve));
  stop = async () => {
    injector.destroy();
    server.forceShutdown();
    await Promise.all([bulk.close(), grpcPort.close(), native.close(), raw.endAsync()]);
    await new Promise((resolve) => tcp.close(resolve));
  };
  send({ ready: true, tcpPort: (tcp.address() as { port: number }).port });
}

if (role !== "device") throw new Error(`unknown role ${role}`);
device().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
