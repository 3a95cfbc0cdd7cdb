/**
 * Row (c) of issue 13's gateway rows: a standard gRPC client (grpc-js)
 * reaching a grpc-js server through ingress → MQTT → gateway, each side in
 * a process of its own: the upstream (peer.ts `grpc-server`, the same
 * server the grpc-js direct row calls), the gateway and the ingress
 * (gateway-peer.ts), the client here. With the schema (a descriptor set)
 * the ingress sends a unary call as an mqrpc unary call; without, as a bidi
 * stream. main.ts measures both side by side with the other unary
 * contenders (`npm run bench -- --only=ingress`).
 */
import { grpcJsCaller } from "./contenders.js";
import type { Pair } from "./measure.js";
import { startPeer } from "./peers.js";

/** (c) grpc-js client → ingress → MQTT → gateway → grpc-js server. */
export async function ingressPair(url: string, schema: boolean): Promise<Pair> {
  const upstream = await startPeer("grpc-server");
  const serverId = schema ? "bench-ingress" : "bench-ingress-no-schema";
  const gateway = await startPeer(
    "gateway",
    { url, serverId, upstream: `http://127.0.0.1:${upstream.info.port as number}` },
    "gateway-peer.ts",
  );
  const ingress = await startPeer("ingress", { url, schema }, "gateway-peer.ts");
  const caller = grpcJsCaller(new URL(ingress.info.url as string).host, {
    "mqrpc-server-id": serverId,
  });
  return {
    call: caller.call,
    processes: [
      { role: "ingress", pid: ingress.pid },
      { role: "gateway", pid: gateway.pid },
      { role: "grpc-server", pid: upstream.pid },
    ],
    close: async () => {
      caller.close();
      await ingress.stop();
      await gateway.stop();
      await upstream.stop();
    },
  };
}
