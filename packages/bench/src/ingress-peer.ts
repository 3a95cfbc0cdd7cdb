/**
 * The processes of the ingress benchmark (ingress.ts) besides those of
 * peer.ts: the gateway in front of a gRPC server (device side), the ingress
 * (cloud side), and a Connect-node gRPC server. Started with `fork`,
 * configured by argv, reports `{ ready, ... }` over IPC and exits on "stop",
 * as peer.ts does.
 */
import * as http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createGrpcGateway, createGrpcIngress } from "@mqrpc/gateway";
import {
  file_mqrpc_interop_v1_test,
  TestService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";

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
    case "connect-server": {
      const server = http2.createServer(
        connectNodeAdapter({
          routes: (router) =>
            router.service(TestService, {
              unaryCall: (req) => ({ payload: req.payload }),
            }),
        }),
      );
      const sessions = new Set<http2.ServerHttp2Session>();
      server.on("session", (s) => {
        sessions.add(s);
        s.once("close", () => sessions.delete(s));
      });
      const port = await new Promise<number>((resolve) =>
        server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
      );
      stop = () =>
        new Promise((resolve) => {
          server.close(() => resolve());
          for (const s of sessions) s.destroy();
        });
      send({ ready: true, port });
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
