/**
 * The peer processes of the gateway rows (gateway.ts, ingress.ts) besides
 * those of peer.ts: the gateway in front of a gRPC server (device side) and
 * the ingress (cloud side). Started by peers.ts's `startPeer`, configured by
 * argv, reports `{ ready, ... }` over IPC and exits on "stop", as peer.ts
 * does.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createGrpcGateway, createGrpcIngress } from "@mqrpc/gateway";
import { file_mqrpc_interop_v1_test } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";

const [role = "", configJson = "{}"] = process.argv.slice(2);
const config = JSON.parse(configJson) as {
  url?: string;
  upstream?: string;
  schema?: boolean;
  serverId?: string;
};
const send = (m: unknown) => process.send?.(m);
process.on("disconnect", () => process.exit(1));
let stop: () => Promise<void> = async () => {};
process.on("message", (m) => {
  if (m === "stop") void stop().then(() => process.exit(0));
  if (m === "rss") send({ rss: process.memoryUsage().rss });
});

/** The interop schema as a FileDescriptorSet (test.proto imports nothing). */
const descriptorSet = toBinary(
  FileDescriptorSetSchema,
  create(FileDescriptorSetSchema, { file: [file_mqrpc_interop_v1_test.proto] }),
);

async function main(): Promise<void> {
  switch (role) {
    case "gateway": {
      // Device side: serves the upstream grpc-js server as `serverId`.
      const gateway = await createGrpcGateway({
        mqtt: config.url as string,
        serverId: config.serverId as string,
        upstreams: [
          {
            url: config.upstream as string,
            descriptorSet,
            services: ["mqrpc.interop.v1.TestService"],
          },
        ],
      });
      stop = () => gateway.close();
      send({ ready: true });
      return;
    }
    case "ingress": {
      // Cloud side: with the schema, unary calls travel as unary (one
      // publish each way); without, as bidi streams.
      const ingress = await createGrpcIngress({
        mqtt: config.url as string,
        ...(config.schema === true ? { descriptorSet } : {}),
      });
      stop = () => ingress.close();
      send({ ready: true, url: ingress.url });
      return;
    }
    default:
      throw new Error(`unknown role ${role}`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
