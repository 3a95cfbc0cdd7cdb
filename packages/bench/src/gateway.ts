/**
 * Row (b) of issue 13's gateway rows: an mqrpc client calling a grpc-js
 * server through MQTT and the gateway (`createGrpcGateway`), each side in a
 * process of its own: the upstream (peer.ts `grpc-server`, the same server
 * the grpc-js direct row calls), the gateway (gateway-peer.ts), the client
 * here. main.ts measures it side by side with the other unary contenders
 * (`npm run bench -- --only=gateway`).
 */
import { mqrpcCaller } from "./contenders.js";
import type { Pair } from "./measure.js";
import { startPeer } from "./peers.js";

/** (b) An mqrpc client → MQTT → gateway → grpc-js server. */
export async function gatewayPair(url: string): Promise<Pair> {
  const upstream = await startPeer("grpc-server");
  const serverId = "bench-gateway";
  const gateway = await startPeer(
    "gateway",
    { url, serverId, upstream: `http://127.0.0.1:${upstream.info.port as number}` },
    "gateway-peer.ts",
  );
  const caller = mqrpcCaller(url, serverId);
  return {
    call: caller.call,
    processes: [
      { role: "gateway", pid: gateway.pid },
      { role: "grpc-server", pid: upstream.pid },
    ],
    close: async () => {
      await caller.close();
      await gateway.stop();
      await upstream.stop();
    },
  };
}
