/**
 * The processes a benchmark runs besides the measuring one: a broker, or
 * the server side of a contender. Started by peers.ts's `startPeer`,
 * configured by argv, reports `{ ready, ... }` over IPC and exits on "stop".
 */
import * as http2 from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createMqttServer, startEmbeddedBroker } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import MqttJsonRpc from "mqtt-json-rpc";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { INTEROP_PROTO, PROTO_ROOT, STREAM_MESSAGE_BYTES } from "./echo-service.js";

const [role = "", configJson = "{}"] = process.argv.slice(2);
const config = JSON.parse(configJson) as {
  url?: string;
  batched?: boolean;
  count?: number;
  chunk?: number;
};
const send = (m: unknown) => process.send?.(m);
// Orphaned (the measuring process died): nothing is left to serve.
process.on("disconnect", () => process.exit(1));
let stop: () => Promise<void> = async () => {};
process.on("message", (m) => {
  if (m === "stop") void stop().then(() => process.exit(0));
  if (m === "rss") send({ rss: process.memoryUsage().rss });
});

async function main(): Promise<void> {
  switch (role) {
    case "aedes": {
      const broker = await startEmbeddedBroker();
      stop = () => broker.close();
      send({ ready: true, url: broker.url });
      return;
    }
    case "mqrpc-server": {
      const server = await createMqttServer({
        mqtt: config.url as string,
        serverId: "bench",
        maxMessageBytes: 64 << 20,
      });
      const body = new Uint8Array(STREAM_MESSAGE_BYTES);
      server.service(
        TestService,
        {
          unaryCall: (req) => ({
            payload: {
              body: req.payload?.body.byteLength === 32 ? req.payload.body : new Uint8Array(0),
            },
          }),
          async *streamingOutputCall(req) {
            const n = req.responseParameters[0]?.size ?? 0;
            for (let i = 0; i < n; i++) yield { payload: { body } };
          },
        },
        { streamingOutputCall: { batchedStream: config.batched ?? false } },
      );
      stop = () => server.close();
      send({ ready: true });
      return;
    }
    case "raw-echo": {
      // The floor: a plain MQTT.js client that echoes every QoS 1 message back.
      const client = await connectAsync(config.url as string);
      (client.stream as unknown as { setNoDelay(b: boolean): void }).setNoDelay(true);
      client.on("message", (topic, payload) => {
        client.publish(`${topic}/reply`, payload, { qos: 1 });
      });
      await client.subscribeAsync("raw/echo/+", { qos: 1 });
      await client.subscribeAsync("raw/sink", { qos: 1 });
      stop = () => client.endAsync();
      send({ ready: true });
      return;
    }
    case "raw-stream": {
      // A plain MQTT.js publisher of N QoS 1 messages, on request.
      const client = await connectAsync(config.url as string);
      (client.stream as unknown as { setNoDelay(b: boolean): void }).setNoDelay(true);
      await client.subscribeAsync("raw/stream/start", { qos: 1 });
      client.on("message", async () => {
        const body = Buffer.alloc(STREAM_MESSAGE_BYTES);
        const n = config.count ?? 0;
        for (let i = 0; i < n; i++) {
          // Bound what is in flight, as any sane publisher must.
          if (i % 500 === 499) await client.publishAsync("raw/stream", body, { qos: 1 });
          else client.publish("raw/stream", body, { qos: 1 });
        }
      });
      stop = () => client.endAsync();
      send({ ready: true });
      return;
    }
    case "grpc-server": {
      const definition = protoLoader.loadSync(INTEROP_PROTO, { includeDirs: [PROTO_ROOT] });
      const pkg = grpc.loadPackageDefinition(definition) as unknown as {
        mqrpc: { interop: { v1: { TestService: grpc.ServiceClientConstructor } } };
      };
      const server = new grpc.Server();
      server.addService(pkg.mqrpc.interop.v1.TestService.service, {
        unaryCall: (
          call: grpc.ServerUnaryCall<{ payload?: { body: Buffer } }, unknown>,
          cb: grpc.sendUnaryData<unknown>,
        ) => cb(null, { payload: call.request.payload }),
      });
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
          e ? reject(e) : resolve(p),
        ),
      );
      stop = () => new Promise((resolve) => server.tryShutdown(() => resolve()));
      send({ ready: true, port });
      return;
    }
    case "connect-server": {
      // The same echo as grpc-server, served by Connect-node over HTTP/2 cleartext.
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
    case "jsonrpc-server": {
      const client = await connectAsync(config.url as string);
      const rpc = new MqttJsonRpc(client);
      await rpc.register("bench/echo", (body: string) => body);
      stop = () => client.endAsync();
      send({ ready: true });
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
